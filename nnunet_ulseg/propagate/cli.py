"""``ulseg propagate`` argument parsing (wired into ``ulseg`` by :func:`add_propagate_parser`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ulseg.cli_args import (add_checkpoint, add_configuration, add_dataset, add_device, add_folds,
                                   add_num_processes, add_parts, add_plans, add_trainer, add_tta)


def add_propagate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "propagate",
        help="WSSS self-paced propagation: train on key slices, label slices r±1..r±K with CNN trimaps + GrabCut, "
             "retrain",
        description="WSSS Algorithm 1 (Sec. 3.3) inside your nnU-Net folders (nnUNet_raw/_preprocessed/_results "
                    "must be set). Model 0 is trained on DATASET (key-slice crops from convert-deeplesion); model k "
                    "on the key slices plus slices r±1..r±k of every training lesion, labelled from model k-1's "
                    "probabilities with a trimap and GrabCut. Every model predicts the test lesions' slices "
                    "r±0..r±E into <work>/round<m>/test_predictions (with slices.csv) for the 3D evaluation. "
                    "Resumable: re-run the same command to continue.",
    )
    add_dataset(p, help="key-slice dataset id or name (made by convert-deeplesion; its source_dir must exist)")
    add_configuration(p)
    add_trainer(p, required=True, help="nnU-Net trainer class of every model")
    add_plans(p)
    add_folds(p, help="the one fold every model trains (default: 0, the converter's patient split; or all)")
    p.add_argument("-K", "--K", dest="K", type=int, default=3,
                   help="propagation rounds: the last model trains on slices r-K..r+K (default: 3)")
    p.add_argument("--eval-reach", type=int, default=None,
                   help="test slices predicted by every model: r-E..r+E (default: K)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train every model from random weights (default: model k starts from model k-1's, "
                        "Algorithm 1 line 13)")
    p.add_argument("--truth", type=Path, default=None,
                   help="a make-sample folder (masks3d.csv + Masks_png): report the per-offset Dice of every model's "
                        "training labels and test predictions against its true 3D masks (WSSS Fig. 4)")
    add_parts(p, help_num_parts="split each round's slice predictions over this many processes/machines "
                                 "(nnUNetv2_predict -num_parts; default: 1); they share nnUNet_raw and nnUNet_results",
              help_part_id="this process' part (0 = coordinator: trains and builds; others only predict)")
    p.add_argument("--follow", action="store_true", help="parts > 0: keep serving later rounds")
    add_checkpoint(p)
    add_device(p)
    add_num_processes(p, help="processes for cutting, preprocessing and prediction (default: 2)")
    add_tta(p)
    p.add_argument("--wait-timeout", type=float, default=48 * 3600.0,
                   help="seconds to wait for other parts or for a model (default: 172800)")
    p.add_argument("--poll", dest="poll_interval", type=float, default=30.0,
                   help="seconds between checks while waiting (default: 30)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from nnunet_ulseg.propagate.rounds import propagate
    from nnunet_ulseg.refine.parts import WaitTimeout

    folds = args.folds or [0]
    if len(folds) != 1:
        raise ValueError(f"-f {' '.join(map(str, folds))}: ulseg propagate trains one fold")
    options = {k: getattr(args, k) for k in (
        "configuration", "plans", "K", "eval_reach", "num_parts", "part_id", "follow", "checkpoint", "device",
        "num_processes", "tta", "wait_timeout", "poll_interval", "truth")}
    try:
        propagate(args.dataset, args.trainer, fold=folds[0], init_from_previous=not args.from_scratch, **options)
    except WaitTimeout as exc:
        print(f"ulseg propagate: {exc}", file=sys.stderr)
        return 3
    return 0
