"""``ulseg liver-tumour``: E²Net's two stages on CT volumes, 3D liver/tumour label volumes out (E²Net Sec. 2, 3).

``ulseg liver-tumour -i IN -o OUT --stage1 D1 --stage2 D2 [-tr1 nnUNetTrainerR2UNetLiver]
[-tr2 nnUNetTrainerE2Net] [-c 2d] [-p nnUNetPlans] [-f F ...] [-chk CHK] [-device D] [--disable_tta]
[-num_parts N -part_id I]``

``-i`` is a CT volume file or a folder of them (LiTS ``volume-N.nii[.gz]``, or any NIfTI/NRRD/MHA);
``--stage1``/``--stage2`` are the two datasets ``convert-lits`` wrote (ids or names), whose models
``-tr1``/``-tr2`` are found under ``nnUNet_results`` as ``nnUNetv2_predict`` finds them.  ``-f`` and
``-chk`` apply to both stages; ``-num_parts N -part_id I`` split the volumes over machines as
``nnUNetv2_predict`` does (each part writes its own ``liver_tumour_cases_part<I>of<N>.csv``).
What the command does: :mod:`.liver_tumour`.
"""
from __future__ import annotations

import argparse
import sys

from nnunet_ulseg.cli_args import (add_checkpoint, add_configuration, add_device, add_folds, add_output_folder,
                                   add_parts, add_plans, add_tta, check_output_folder)

COMMAND = "liver-tumour"


def add_liver_tumour_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``liver-tumour`` on the ``ulseg`` sub-parsers; its handler is ``args.func``."""
    from .liver_tumour import STAGE1_TRAINER, STAGE2_TRAINER

    p = subparsers.add_parser(
        COMMAND, help="two-stage liver and tumour segmentation of CT volumes (E2Net: coarse liver, then E2Net on the "
                      "liver box)",
        description="Stage 1 segments the liver on whole slices; its largest 3D component's bounding box, padded "
                    "and resized to 256x256 as convert-lits does for test cases, goes to stage 2 (liver and "
                    "tumour); the result is pasted back into a 3D label volume (0 background, 1 liver, 2 tumour) "
                    "in the input's exact geometry.")
    p.add_argument("-i", dest="input", required=True, metavar="IN",
                   help="CT volume file, or a folder of them (volume-N.nii[.gz] or any NIfTI/NRRD/MHA)")
    add_output_folder(p, help="output folder for the label volumes and liver_tumour_cases.csv (created)")
    p.add_argument("--stage1", required=True, metavar="D1", help="stage-1 (liver) dataset name or id")
    p.add_argument("--stage2", required=True, metavar="D2", help="stage-2 (liver + tumour) dataset name or id")
    p.add_argument("-tr1", dest="trainer1", default=STAGE1_TRAINER, metavar="TRAINER",
                   help=f"stage-1 trainer (default: {STAGE1_TRAINER})")
    p.add_argument("-tr2", dest="trainer2", default=STAGE2_TRAINER, metavar="TRAINER",
                   help=f"stage-2 trainer (default: {STAGE2_TRAINER})")
    add_configuration(p)
    add_plans(p)
    add_folds(p, help="folds to ensemble, both stages (default: every fold present)")
    add_checkpoint(p)
    add_device(p)
    add_tta(p)
    add_parts(p, help_num_parts="split the volumes over this many processes/machines, as nnUNetv2_predict "
                                "(default: 1)")
    p.add_argument("--format", dest="ending", choices=(".nii.gz", ".nii"), default=".nii.gz",
                   help="label volume file ending (default: .nii.gz)")
    p.add_argument("--save-stage1", action="store_true",
                   help="also write the stage-1 liver (largest component, 0/1) under OUT/stage1/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_liver_tumour_command)
    return p


def run_liver_tumour_command(args: argparse.Namespace) -> int:
    """Load both models, segment every input, print the summary; 0 on success (empty livers included)."""
    from .liver_tumour import StageModel, cases_csv_name, find_model, find_volumes, part_of, run_liver_tumour

    out = check_output_folder(args.out)
    volumes = part_of(find_volumes(args.input), args.num_parts, args.part_id)
    folders = [find_model(d, t, args.plans, args.configuration)
               for d, t in ((args.stage1, args.trainer1), (args.stage2, args.trainer2))]
    stage1, stage2 = (StageModel.load(f, args.folds, args.checkpoint, args.device, args.tta) for f in folders)
    result = run_liver_tumour(volumes, out, stage1, stage2, args.ending, args.save_stage1, progress=not args.quiet,
                              csv_name=cases_csv_name(args.num_parts, args.part_id))
    print(result.summary())
    return 0


def main(argv=None) -> int:
    from nnunet_ulseg.cli import main as ulseg_main

    return ulseg_main([COMMAND, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
