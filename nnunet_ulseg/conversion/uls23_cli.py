"""``ulseg convert-uls23``: command-line front end of :func:`~.uls23.convert_uls23`.

:func:`add_uls23_parser` registers the sub-command on the ``ulseg`` parser;
:func:`add_uls23_arguments` is shared with ``dataset_conversion/Dataset502_ULS23.py``;
:func:`main` runs the command on its own.

Options are spelled as nnU-Net's converters (``-i`` images, ``-o`` output, ``-d`` dataset
id, ``-np`` processes; :mod:`nnunet_ulseg.cli_args`) with long aliases; ``-l`` is the
labels folder.  Without ``-o`` the dataset goes to ``$nnUNet_raw/Dataset<-d>_<--name>``
(default ``Dataset502_ULS23``).  Exit codes as ``convert-deeplesion``: 0 on success, even
with skipped VOIs (they are in ``conversion_report.csv``); 1 when no VOI was converted; 2
for a user error, printed as one ``error:`` line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from nnunet_ulseg.cli_args import ArgumentParser, add_input_folder, add_num_processes, add_output_folder

COMMAND = "convert-uls23"
DESCRIPTION = ("Convert ULS23-format VOIs (images/ + labels/ of the same file names, .nii.gz) into an nnU-Net raw "
               "dataset of RECIST-ellipse pseudo masks: the key slice and RECIST axes are derived from each label "
               "(ULS23's rule), one crop per VOI as for DeepLesion, the lesions.csv sidecar, a patient-level "
               "splits_final.json and the test VOIs' 3D labels in referencesTs/.")
DATASET_ID = 502
DATASET_NAME = "ULS23"


def add_uls23_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options (shared by the ``ulseg`` sub-command and the dataset_conversion script)."""
    from .cli import add_crop_arguments, add_pseudo_argument

    add_input_folder(parser, dest="images", aliases=("--images",), metavar="IMAGES_DIR",
                     help="folder of the VOI images, e.g. .../ULS23_DeepLesion3D/images (read only)")
    parser.add_argument("-l", "--labels", dest="labels", required=True, metavar="LABELS_DIR",
                        help="folder of the VOI labels, same file names as the images (read only)")
    add_output_folder(parser, required=False,
                      help="nnU-Net raw dataset folder to write (default: $nnUNet_raw/Dataset<-d>_<--name>)")
    parser.add_argument("-d", "--dataset-id", dest="dataset_id", type=int, default=DATASET_ID, metavar="ID",
                        help=f"dataset id used without -o (default: {DATASET_ID})")
    parser.add_argument("--name", default=DATASET_NAME,
                        help=f"dataset name used without -o: Dataset<ID>_<NAME> (default: {DATASET_NAME})")
    add_num_processes(parser, default=None, help="worker processes (default: min(CPU count, 8))")
    parser.add_argument("--context", type=int, default=0, metavar="K",
                        help="add VOI slices key-K..key+K as channels; the key slice stays channel 0 (default 0)")
    add_crop_arguments(parser)
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="share of patients in the validation split (fold 0's val; default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                        help="share of patients in the test split (imagesTs, referencesTs; default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    add_pseudo_argument(parser)
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error on the first bad VOI instead of skipping it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing conversion in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary or per-VOI log lines")


def add_uls23_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert-uls23`` on an ``argparse`` sub-parsers object; its handler is ``args.func``."""
    p = subparsers.add_parser(COMMAND, help="convert ULS23 VOIs (images + labels) to an nnU-Net raw dataset",
                              description=DESCRIPTION)
    add_uls23_arguments(p)
    p.set_defaults(func=run_uls23)
    return p


def run_uls23(args: argparse.Namespace) -> int:
    """Run the conversion for parsed ``args``; returns the exit code."""
    from .cli import _log_to_stderr, exit_status, output_folder
    from .uls23 import convert_uls23

    with _log_to_stderr(args.quiet):
        try:
            out = output_folder(args.out, args.dataset_id, args.name)
            result = convert_uls23(args.images, args.labels, out, num_processes=args.num_processes,
                                   context=args.context, strict=args.strict, scale_policy=args.scale_policy,
                                   min_crop=args.min_crop, overwrite=args.overwrite, progress=not args.quiet,
                                   crop_size=args.crop_size, val_fraction=args.val_fraction,
                                   test_fraction=args.test_fraction, seed=args.seed, pseudo=args.pseudo)
        except (ValueError, OSError) as e:  # ConversionError, bad input, existing output: user errors
            print(f"ulseg {COMMAND}: error: {e}", file=sys.stderr)
            return 2
    return exit_status(COMMAND, result, "VOI")


def main(argv: Sequence[str] | None = None) -> int:
    """``ulseg convert-uls23`` as a stand-alone command; returns the exit code."""
    parser = ArgumentParser(prog=f"ulseg {COMMAND}", description=DESCRIPTION)
    add_uls23_arguments(parser)
    return run_uls23(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
