"""``ulseg refine`` argument parsing (the lead wires :func:`add_refine_parser` into ``ulseg``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: :data:`nnunet_ulseg.postprocess.MODES`, spelled out so that building the parser stays cheap
#: (no numpy/scipy import; a test checks that both agree).
POSTPROCESS_CHOICES = ("none", "mark", "mark-ellipse", "mark-grabcut")


def add_refine_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "refine",
        help="pseudo-mask refinement rounds: train, predict the training cases, update the masks, retrain",
        description="Rounds of AHRNet's pseudo-mask update (Sec. 2.3) inside your nnU-Net folders "
                    "(nnUNet_raw/_preprocessed/_results must be set). Round 1 is DATASET (RECIST-ellipse labels); "
                    "each later round is a new nnU-Net dataset whose labels are lesion = p AND e, "
                    "ignore = (p OR e) - (p AND e), with p round r's prediction and e the ellipse. Resumable: "
                    "re-run the same command to continue; a finished run only prints its report.",
    )
    p.add_argument("-d", dest="dataset", required=True, help="round-1 dataset id or name (e.g. 501)")
    p.add_argument("-c", dest="configuration", default="2d", help="nnU-Net configuration (default: 2d)")
    p.add_argument("-tr", dest="trainer", required=True, help="nnU-Net trainer class of every round")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", dest="fold", type=int, default=None,
                   help="fold trained and used for predictions (default: 0, the converter's patient split)")
    p.add_argument("--rounds", type=int, default=3,
                   help="trained models in all, round 1 included (default: 3, as in the paper)")
    p.add_argument("--cross-val", action="store_true",
                   help="train folds 0-4 per round on a patient-grouped 5-fold split and predict each training "
                        "case with the fold that did not train on it")
    p.add_argument("--num-parts", type=int, default=1,
                   help="split each round's predictions over this many processes/machines (nnUNetv2_predict "
                        "-num_parts); they must share nnUNet_raw and nnUNet_results")
    p.add_argument("--part-id", type=int, default=0,
                   help="this process' part (0 = coordinator: trains and builds the rounds; others only predict)")
    p.add_argument("--follow", action="store_true",
                   help="parts > 0: keep serving later rounds instead of exiting after one round's share")
    p.add_argument("--truth", type=Path, default=None,
                   help="generated sample folder (with masks.csv): report the Dice of each round's pseudo masks "
                        "and of its model on the test split")
    p.add_argument("--postprocess", choices=POSTPROCESS_CHOICES, default="none", metavar="MODE",
                   help="post-process every prediction with its RECIST mark (lesions.csv) before it is used: the "
                        "training-case predictions before the round update and the test predictions that are "
                        "scored. none (default), mark (keep the components the mark crosses, fill holes; the "
                        "ellipse when none is crossed) or mark-ellipse (also clip to the 1.5x RECIST ellipse). "
                        "Fixed for a run: a resumed run must use the same mode")
    p.add_argument("--init-from-previous", action="store_true",
                   help="start round r+1's training from round r's weights (nnUNetv2_train -pretrained_weights)")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint used for predictions (default: checkpoint_final.pth)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("-np", "--np", dest="num_processes", type=int, default=2,
                   help="processes for preprocessing and prediction (default: 2)")
    p.add_argument("-num_gpus", "--num-gpus", dest="num_gpus", type=int, default=1,
                   help="GPUs per training (nnUNetv2_train -num_gpus, nnU-Net's DDP; default: 1)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None,
                     help="mirroring test-time augmentation in predictions (default: on CUDA only)")
    tta.add_argument("--disable-tta", dest="tta", action="store_false", help="no test-time augmentation")
    p.add_argument("--wait-timeout", type=float, default=48 * 3600.0,
                   help="seconds to wait for other parts or for the model of a round (default: 172800)")
    p.add_argument("--poll", dest="poll_interval", type=float, default=30.0,
                   help="seconds between checks while waiting (default: 30)")
    p.set_defaults(func=_run, tta=None)
    return p


def _run(args: argparse.Namespace) -> int:
    from nnunet_ulseg.refine.parts import WaitTimeout
    from nnunet_ulseg.refine.rounds import refine

    options = {k: getattr(args, k) for k in (
        "configuration", "plans", "fold", "rounds", "cross_val", "num_parts", "part_id", "follow", "truth",
        "init_from_previous", "checkpoint", "device", "num_processes", "num_gpus", "tta", "wait_timeout",
        "poll_interval", "postprocess")}
    try:
        refine(args.dataset, args.trainer, **options)
    except WaitTimeout as exc:
        print(f"ulseg refine: {exc}", file=sys.stderr)
        return 3
    return 0
