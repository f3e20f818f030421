"""``ulseg convert-deeplesion``: command-line front end of :func:`~.deeplesion.convert_deeplesion`.

:func:`add_convert_parser` registers the sub-command on the ``ulseg`` parser;
:func:`add_convert_arguments` is shared with ``dataset_conversion/Dataset501_DeepLesion.py``;
:func:`main` runs the command on its own (tests, ``python -m``).

Exit codes: 0 on success, even with skipped lesions (they are in the report); 2 when the
conversion fails on the user's input (strict-mode problem, bad input folder, existing
output), like ``ulseg``'s other user errors and argparse's usage errors.  Errors print
one ``error:`` line on stderr, no traceback.
Heavy imports happen in :func:`run_convert`, so building the parser stays cheap.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Iterator, Sequence

COMMAND = "convert-deeplesion"


def add_convert_arguments(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    """The converter's options (shared by the ``ulseg`` sub-command and the dataset_conversion script)."""
    parser.add_argument("--deeplesion", required=True, metavar="DIR",
                        help="DeepLesion folder holding DL_info.csv and Images_png/ (read only)")
    parser.add_argument("--out", required=out_required, metavar="RAW_DATASET_DIR",
                        help="nnU-Net raw dataset folder to write, e.g. $nnUNet_raw/Dataset501_DeepLesion")
    parser.add_argument("--np", type=int, default=None, metavar="N", dest="num_processes",
                        help="worker processes (default: min(CPU count, 8))")
    parser.add_argument("--context", type=int, default=0, metavar="K",
                        help="add slices key-K..key+K as channels; the key slice stays channel 0 (default 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error on the first bad row or file instead of skipping it")
    parser.add_argument("--scale-policy", choices=("lesion", "physical"), default="lesion",
                        help="lesion: resample crops to 128..256 px with nominal 1 mm spacing (default); "
                             "physical: keep the pixel size and true spacing")
    parser.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="PX",
                        help="scale policy lesion: output crop side N px (one number), or the range LO HI "
                             "(default 128 256); recorded in dataset.json and lesions.csv")
    parser.add_argument("--min-crop", type=float, default=32, metavar="PX",
                        help="smallest crop side in slice pixels (default 32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing conversion in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary or per-lesion log lines")


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert-deeplesion`` on an ``argparse`` sub-parsers object; its handler is ``args.func``."""
    p = subparsers.add_parser(COMMAND, help="convert DeepLesion (DL_info.csv + Images_png) to an nnU-Net raw dataset",
                              description=__doc__.split("\n\n")[0])
    add_convert_arguments(p)
    p.set_defaults(func=run_convert)
    return p


@contextlib.contextmanager
def _log_to_stderr(quiet: bool) -> Iterator[None]:
    """Print the converter's log records as ``LEVEL: message`` on stderr for the duration of a command.

    The handler, level and propagation are restored afterwards, so calling the command
    from Python (tests, notebooks) leaves logging as it was.
    """
    log = logging.getLogger("nnunet_ulseg.conversion")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.ERROR if quiet else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def run_convert(args: argparse.Namespace) -> int:
    """Run the conversion for parsed ``args``; returns the exit code."""
    from .deeplesion import convert_deeplesion

    with _log_to_stderr(args.quiet):
        try:
            convert_deeplesion(args.deeplesion, args.out, num_processes=args.num_processes, context=args.context,
                               strict=args.strict, scale_policy=args.scale_policy, min_crop=args.min_crop,
                               overwrite=args.overwrite, progress=not args.quiet, crop_size=args.crop_size)
        except (ValueError, OSError) as e:  # ConversionError, bad input, existing output: user errors
            print(f"ulseg {COMMAND}: error: {e}", file=sys.stderr)
            return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``ulseg convert-deeplesion`` as a stand-alone command; returns the exit code."""
    parser = argparse.ArgumentParser(prog=f"ulseg {COMMAND}", description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
