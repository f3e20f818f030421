"""``ulseg convert-deeplesion``: command-line front end of :func:`~.deeplesion.convert_deeplesion`.

:func:`add_convert_parser` registers the sub-command on the ``ulseg`` parser;
:func:`add_convert_arguments` is shared with ``dataset_conversion/Dataset501_DeepLesion.py``;
:func:`main` runs the command on its own (tests, ``python -m``).

Options are spelled as nnU-Net's converters (``-i`` input, ``-o`` output, ``-d`` dataset id,
``-np`` processes; nnunet_ulseg.cli_args), the earlier ``--deeplesion``/``--out``/``--np``
stay aliases.  Without ``-o`` the dataset goes to ``$nnUNet_raw/Dataset<id>_DeepLesion``.

Exit codes: 0 on success, even with skipped lesions (they are in the report); 1 when the
run finished but converted no lesion at all (every row skipped; the report says why); 2
when the conversion fails on the user's input (strict-mode problem, bad input folder,
existing output), like ``ulseg``'s other user errors and argparse's usage errors.  Errors
print one ``error:`` line on stderr, no traceback.
Heavy imports happen in :func:`run_convert`, so building the parser stays cheap.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from nnunet_ulseg.cli_args import ArgumentParser, add_input_folder, add_num_processes, add_output_folder

COMMAND = "convert-deeplesion"
DESCRIPTION = ("Convert DeepLesion (DL_info.csv + Images_png/) into an nnU-Net raw dataset of RECIST-ellipse pseudo "
               "masks: one crop per lesion around its RECIST mark, dataset.json, the lesions.csv sidecar and a "
               "patient-level splits_final.json.")
#: the name part of ``Dataset<id>_<name>`` when the output folder comes from ``-d``
DATASET_NAME = "DeepLesion"


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scale-policy``, ``--crop-size``, ``--min-crop``: the crop geometry options every converter shares."""
    parser.add_argument("--scale-policy", choices=("lesion", "physical"), default="lesion",
                        help="lesion: resample crops to 128..256 px with nominal 1 mm spacing (default); "
                             "physical: keep the pixel size and true spacing")
    parser.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="PX",
                        help="scale policy lesion: output crop side N px (one number), or the range LO HI "
                             "(default 128 256); recorded in dataset.json and lesions.csv")
    parser.add_argument("--min-crop", type=float, default=32, metavar="PX",
                        help="smallest crop side in slice pixels (default 32)")


def add_convert_arguments(parser: argparse.ArgumentParser, dataset_default: int | None = None) -> None:
    """The converter's options (shared by the ``ulseg`` sub-command and the dataset_conversion script).

    ``dataset_default``: the ``-d`` used when neither ``-o`` nor ``-d`` is given (the
    ``Dataset501_DeepLesion.py`` script's 501); None makes one of them required.
    """
    add_input_folder(parser, dest="deeplesion", aliases=("--deeplesion",), metavar="DEEPLESION_DIR",
                     help="DeepLesion folder holding DL_info.csv and Images_png/ (read only)")
    add_output_folder(parser, required=False,
                      help="nnU-Net raw dataset folder to write, e.g. $nnUNet_raw/Dataset501_DeepLesion "
                           "(default: $nnUNet_raw/Dataset<-d>_DeepLesion)")
    parser.add_argument("-d", dest="dataset_id", type=int, default=dataset_default, metavar="ID",
                        help="dataset id: without -o the dataset goes to $nnUNet_raw/Dataset<ID>_DeepLesion"
                             + (f" (default: {dataset_default})" if dataset_default is not None else ""))
    add_num_processes(parser, default=None, help="worker processes (default: min(CPU count, 8))")
    parser.add_argument("--context", type=int, default=0, metavar="K",
                        help="add slices key-K..key+K as channels; the key slice stays channel 0 (default 0)")
    parser.add_argument("--context-mm", type=float, default=None, metavar="MM",
                        help="with --context K: choose the K neighbours on each side by distance, channel key+o "
                             "being the slice nearest o*MM mm away by the row's slice interval (Spacing_mm_px_ z; "
                             "DeepLesion's vary from 0.6 to 5 mm); recorded in dataset.json")
    parser.add_argument("--exclude-noisy", action="store_true",
                        help="skip rows DeepLesion flags Possibly_noisy = 1 (reason possibly_noisy in "
                             "conversion_report.csv, counted in the summary)")
    add_pseudo_argument(parser)
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error on the first bad row or file instead of skipping it")
    add_crop_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing conversion in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary or per-lesion log lines")


def add_pseudo_argument(parser: argparse.ArgumentParser) -> None:
    """``--pseudo NAME``: the pseudo-mask maker (:mod:`nnunet_ulseg.pseudo_masks.registry`), shared by both converters."""
    from nnunet_ulseg.pseudo_masks.registry import DEFAULT_PSEUDO, PSEUDO_NAMES

    parser.add_argument("--pseudo", choices=PSEUDO_NAMES, default=DEFAULT_PSEUDO,
                        help="pseudo mask of each crop: ellipse (RECIST ellipse, default), grabcut (GrabCut-R, WSSS "
                             "Sec. 3.1: trimap from the RECIST axes, GrabCut in the row's DICOM window, the ellipse "
                             "when it collapses or explodes), or a WSSS Table 1 baseline (dilated_recist, "
                             "grabcut_box, grabcut_i); recorded in dataset.json, each case's status in lesions.csv "
                             "(pseudo_status)")


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert-deeplesion`` on an ``argparse`` sub-parsers object; its handler is ``args.func``."""
    p = subparsers.add_parser(COMMAND, help="convert DeepLesion (DL_info.csv + Images_png) to an nnU-Net raw dataset",
                              description=DESCRIPTION)
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


def output_folder(out: str | os.PathLike | None, dataset_id: int | None, name: str = DATASET_NAME,
                  environ: dict[str, str] | None = None) -> Path:
    """``-o``, else ``$nnUNet_raw/Dataset<-d>_<name>``; a ``ValueError`` saying what to give otherwise.

    Shared by every converter's command (``name``: DeepLesion, ULS23, ...).
    """
    from nnunet_ulseg.nnunet_layout import dataset_folder_name

    if out is not None:
        return Path(out)
    if dataset_id is None:
        raise ValueError("give the output folder (-o RAW_DATASET_DIR), or a dataset id (-d ID) to write "
                         f"$nnUNet_raw/Dataset<ID>_{name}")
    folder = dataset_folder_name(dataset_id, name)
    raw = (os.environ if environ is None else environ).get("nnUNet_raw")
    if not raw:
        raise ValueError(f"-d {dataset_id} writes $nnUNet_raw/{folder}, but nnUNet_raw is not set: set it, "
                         "or give the output folder with -o")
    return Path(raw) / folder


def run_convert(args: argparse.Namespace) -> int:
    """Run the conversion for parsed ``args``; returns the exit code."""
    from .deeplesion import convert_deeplesion

    with _log_to_stderr(args.quiet):
        try:
            out = output_folder(args.out, args.dataset_id)
            result = convert_deeplesion(args.deeplesion, out, num_processes=args.num_processes, context=args.context,
                                        strict=args.strict, scale_policy=args.scale_policy,
                                        min_crop=args.min_crop, overwrite=args.overwrite, progress=not args.quiet,
                                        crop_size=args.crop_size, context_mm=args.context_mm,
                                        exclude_noisy=args.exclude_noisy, pseudo=args.pseudo)
        except (ValueError, OSError) as e:  # ConversionError, bad input, existing output: user errors
            print(f"ulseg {COMMAND}: error: {e}", file=sys.stderr)
            return 2
    return exit_status(COMMAND, result, "lesion")


def exit_status(command: str, result, unit: str) -> int:
    """0, or 1 with an error line when ``result`` (a converter's result) converted nothing (issue 12 case 8).

    A run that converted nothing is a failure, not a success; its report is written all the same.
    ``unit`` names what is converted (``lesion``, ``VOI``).
    """
    if result.rows:
        return 0
    print(f"ulseg {command}: error: no {unit} was converted ({len(result.issues)} skipped; the reasons are in "
          f"{result.out_dir / 'conversion_report.csv'})", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``ulseg convert-deeplesion`` as a stand-alone command; returns the exit code."""
    parser = ArgumentParser(prog=f"ulseg {COMMAND}", description=DESCRIPTION)
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
