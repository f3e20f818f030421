"""``ulseg refine`` argument parsing (the lead wires :func:`add_refine_parser` into ``ulseg``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ulseg.cli_args import (CROSS_VALIDATION_FOLDS, add_checkpoint, add_configuration, add_dataset, add_device,
                                   add_folds, add_num_processes, add_parts, add_plans, add_trainer, add_tta)

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
    add_dataset(p, help="round-1 dataset id or name (e.g. 501)")
    add_configuration(p)
    add_trainer(p, required=True, help="nnU-Net trainer class of every round")
    add_plans(p)
    add_folds(p, help="fold trained and used for predictions, as nnUNetv2_train/predict: one number (default: 0, the "
                      "converter's patient split), all (nnU-Net's fold trained on every case), or 0 1 2 3 4 (the "
                      "5-fold cross-validation, same as --cross-val)")
    p.add_argument("--rounds", type=int, default=3,
                   help="trained models in all, round 1 included (default: 3, as in the paper)")
    p.add_argument("--cross-val", action="store_true",
                   help="train folds 0-4 per round on a patient-grouped 5-fold split and predict each training "
                        "case with the fold that did not train on it")
    add_parts(p, help_num_parts="split each round's predictions over this many processes/machines (nnUNetv2_predict "
                                 "-num_parts; default: 1); they must share nnUNet_raw and nnUNet_results",
              help_part_id="this process' part (0 = coordinator: trains and builds the rounds; others only predict)")
    p.add_argument("--follow", action="store_true",
                   help="parts > 0: keep serving later rounds instead of exiting after one round's share")
    p.add_argument("--truth", type=Path, default=None,
                   help="reference masks, any kind ulseg evaluate reads (a make-sample folder with masks.csv, "
                        "key-slice PNGs, NIfTI/MHA, ULS23 VOIs, <case>.mha crops): report the Dice of each round's "
                        "pseudo masks and of its model on the test split, in key-slice geometry")
    p.add_argument("--ref-format", choices=("auto", "crop", "png", "volume", "uls23", "sample"), default="auto",
                   help="kind of --truth folder (default: auto, detected from its files)")
    p.add_argument("--postprocess", choices=POSTPROCESS_CHOICES, default="none", metavar="MODE",
                   help="post-process every prediction with its RECIST mark (lesions.csv) before it is used: the "
                        "training-case predictions before the round update and the test predictions that are "
                        "scored. none (default), mark (keep the components the mark crosses, fill holes; the "
                        "ellipse when none is crossed) or mark-ellipse (also clip to the 1.5x RECIST ellipse). "
                        "Fixed for a run: a resumed run must use the same mode")
    p.add_argument("--init-from-previous", action="store_true",
                   help="start round r+1's training from round r's weights (nnUNetv2_train -pretrained_weights)")
    add_checkpoint(p)
    add_device(p)
    add_num_processes(p, help="processes for preprocessing and prediction (default: 2)")
    p.add_argument("-num_gpus", "--num-gpus", dest="num_gpus", type=int, default=1,
                   help="GPUs per training (nnUNetv2_train -num_gpus, nnU-Net's DDP; default: 1)")
    add_tta(p)
    p.add_argument("--wait-timeout", type=float, default=48 * 3600.0,
                   help="seconds to wait for other parts or for the model of a round (default: 172800)")
    p.add_argument("--poll", dest="poll_interval", type=float, default=30.0,
                   help="seconds between checks while waiting (default: 30)")
    p.set_defaults(func=_run)
    return p


def refine_folds(folds: list[int | str] | None, cross_val: bool) -> tuple[int | str | None, bool]:
    """``-f`` values (and ``--cross-val``) -> :class:`~nnunet_ulseg.refine.rounds.RefineConfig`'s ``(fold, cross_val)``.

    A refinement round predicts every training case with a model, so it can train one fold
    (a number, or ``all`` as nnUNetv2_train's fold on every case) or nnU-Net's 5-fold
    cross-validation (each case predicted by the fold that did not train on it).  Any other
    set of folds would leave cases without such a model: a ``ValueError`` says so.
    """
    if folds is None:
        return None, cross_val
    spelled = " ".join(str(f) for f in folds)
    if len(set(folds)) != len(folds):
        raise ValueError(f"-f {spelled}: a fold is given twice")
    if set(folds) == set(CROSS_VALIDATION_FOLDS):
        return None, True
    if len(folds) == 1 and not cross_val:
        return folds[0], False
    if cross_val:
        raise ValueError(f"-f {spelled} with --cross-val: --cross-val trains folds 0-4 (-f 0 1 2 3 4); give one or "
                         "the other")
    raise ValueError(f"-f {spelled}: ulseg refine trains one fold (-f 0, -f all, ...) or the 5-fold cross-validation "
                     "(-f 0 1 2 3 4, same as --cross-val); other sets of folds would leave training cases without a "
                     "model to predict them")


def _run(args: argparse.Namespace) -> int:
    from nnunet_ulseg.refine.parts import WaitTimeout
    from nnunet_ulseg.refine.rounds import refine

    args.fold, args.cross_val = refine_folds(args.folds, args.cross_val)
    options = {k: getattr(args, k) for k in (
        "configuration", "plans", "fold", "rounds", "cross_val", "num_parts", "part_id", "follow", "truth",
        "ref_format", "init_from_previous", "checkpoint", "device", "num_processes", "num_gpus", "tta", "wait_timeout",
        "poll_interval", "postprocess")}
    try:
        refine(args.dataset, args.trainer, **options)
    except WaitTimeout as exc:
        print(f"ulseg refine: {exc}", file=sys.stderr)
        return 3
    return 0
