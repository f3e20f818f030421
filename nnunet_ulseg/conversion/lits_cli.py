"""``ulseg convert-lits``: command-line front end of :func:`~.lits.convert_lits`.

:func:`add_lits_parser` registers the sub-command on the ``ulseg`` parser;
:func:`add_lits_arguments` is shared with ``dataset_conversion/Dataset511_LiTS.py``.

Options are spelled as nnU-Net's converters (``-i`` input, ``-o`` output, ``-d`` dataset
id, ``-np`` processes).  The converter writes two datasets, so ``-o`` is the nnU-Net raw
*root* that receives both, ``Dataset<-d>_<--name>Liver`` (stage 1) and
``Dataset<-d + 1>_<--name>Tumour`` (stage 2, or ``--stage2-id``); without ``-o`` it is
``$nnUNet_raw``.  Exit codes as the other converters: 0 on success, even with skipped
cases (they are in ``conversion_report.csv``); 1 when no case was converted; 2 for a user
error, printed as one ``error:`` line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from nnunet_ulseg.cli_args import ArgumentParser, add_input_folder, add_num_processes, add_output_folder

COMMAND = "convert-lits"
DESCRIPTION = ("Convert LiTS (volume-N.nii + segmentation-N.nii: 0 background, 1 liver, 2 tumour) into the two "
               "nnU-Net raw datasets of E2Net's two stages: stage 1, whole slices with liver labels (tumour merged); "
               "stage 2, the liver's bounding box padded (random 10-60 px for training, 35 px for test) and resized "
               "in-plane to 256x256 (the paper's; --crop-size), with region labels liver = {1, 2}, tumour = 2. Both "
               "have lits_cases.csv (box, pad, resize factors, original geometry), a patient-level splits_final.json "
               "and conversion_report.csv.")
DATASET_ID = 511
DATASET_NAME = "LiTS"


def add_lits_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options (shared by the ``ulseg`` sub-command and the dataset_conversion script)."""
    from .lits import CROP_DIVISOR, CROP_SIZE, DEFAULT_NORMALISATION, NORMALISATIONS, TEST_PAD, TRAIN_PAD

    add_input_folder(parser, dest="lits", aliases=("--lits",), metavar="LITS_DIR",
                     help="folder holding volume-N.nii and segmentation-N.nii (searched recursively; read only)")
    add_output_folder(parser, required=False,
                      help="nnU-Net raw root receiving both datasets (default: $nnUNet_raw)")
    parser.add_argument("-d", "--dataset-id", dest="dataset_id", type=int, default=DATASET_ID, metavar="ID",
                        help=f"stage-1 dataset id; stage 2 gets ID + 1 (default: {DATASET_ID})")
    parser.add_argument("--stage2-id", type=int, default=None, metavar="ID",
                        help="stage-2 dataset id (default: -d + 1)")
    parser.add_argument("--name", default=DATASET_NAME,
                        help=f"dataset name stem: Dataset<ID>_<NAME>Liver and ..._<NAME>Tumour (default: {DATASET_NAME})")
    parser.add_argument("--normalisation", choices=sorted(NORMALISATIONS), default=DEFAULT_NORMALISATION,
                        help="window: the paper's HU window [-100, 240] -> [-1, 1], channel noNorm; ct: HU with "
                             f"nnU-Net's CT normalisation (default: {DEFAULT_NORMALISATION})")
    parser.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                        help="share of cases in fold 0's validation set (default 0.15; the paper: 20 of 131)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                        help="share of cases held out as test cases (imagesTs; default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the training pads (default 0)")
    parser.add_argument("--pad", type=int, nargs=2, default=list(TRAIN_PAD), metavar=("LO", "HI"),
                        help=f"stage-2 pad range (px) of training cases, drawn per case (default: {TRAIN_PAD[0]} "
                             f"{TRAIN_PAD[1]}, the paper's, for 512 px slices)")
    parser.add_argument("--test-pad", type=int, default=TEST_PAD, metavar="PX",
                        help=f"stage-2 pad (px) of test cases (default: {TEST_PAD})")
    parser.add_argument("--crop-size", type=int, default=CROP_SIZE, metavar="PX",
                        help=f"stage-2 crop side (px), a multiple of {CROP_DIVISOR} (the E2Net/R2UNet input divisor); "
                             f"default {CROP_SIZE}, the paper's; a smaller one (e.g. 128) is a CPU budget choice")
    add_num_processes(parser, default=1, help="worker processes (default: 1)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error on the first bad case instead of skipping it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier convert-lits run in the output folders")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary or per-case log lines")


def add_lits_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert-lits`` on an ``argparse`` sub-parsers object; its handler is ``args.func``."""
    p = subparsers.add_parser(COMMAND, help="convert LiTS volumes to the two E2Net nnU-Net raw datasets",
                              description=DESCRIPTION)
    add_lits_arguments(p)
    p.set_defaults(func=run_lits)
    return p


def _raw_root(out: Path | None) -> Path:
    if out is not None:
        return Path(out)
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise ValueError("give the nnU-Net raw root (-o RAW_DIR), or set nnUNet_raw")
    return Path(raw)


def run_lits(args: argparse.Namespace) -> int:
    """Run the conversion for parsed ``args``; returns the exit code."""
    from .cli import _log_to_stderr, exit_status
    from .lits import convert_lits, stage_folders

    with _log_to_stderr(args.quiet):
        try:
            out1, out2 = stage_folders(_raw_root(args.out), args.dataset_id, args.name, args.stage2_id)
            result = convert_lits(args.lits, out1, out2, normalisation=args.normalisation,
                                  val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                                  strict=args.strict, overwrite=args.overwrite, num_processes=args.num_processes,
                                  progress=not args.quiet, train_pad=tuple(args.pad), test_pad=args.test_pad,
                                  crop_size=args.crop_size)
        except (ValueError, OSError) as e:  # ConversionError, bad input, existing output: user errors
            print(f"ulseg {COMMAND}: error: {e}", file=sys.stderr)
            return 2
    return exit_status(COMMAND, result, "case")


def main(argv: Sequence[str] | None = None) -> int:
    """``ulseg convert-lits`` as a stand-alone command; returns the exit code."""
    parser = ArgumentParser(prog=f"ulseg {COMMAND}", description=DESCRIPTION)
    add_lits_arguments(parser)
    return run_lits(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
