"""``ulseg evaluate-lits -i PRED_DIR -r REF_DIR``: LiTS protocol metrics of a prediction folder (E²Net Sec. 3).

Front end of :func:`~.lits.evaluate_lits_folder`: writes ``lits_metrics.csv`` (one row per
case) and ``lits_summary.json`` into ``-o`` (default: the prediction folder) and prints the
table (liver and tumour Dice per case and global, tumour burden RMSE).  Heavy imports
happen in the handler, so building the parser stays cheap.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nnunet_ulseg.cli_args import ArgumentParser, add_chill, add_input_folder

COMMAND = "evaluate-lits"
DESCRIPTION = ("Score 3D liver/tumour label volumes (0 background, 1 liver, 2 tumour) against LiTS references: "
               "Dice per case and global Dice for the liver (labels 1+2) and the tumour (label 2), tumour burden "
               "(tumour/liver volume) RMSE. Files are matched by case (same stem, else the same case number); each "
               "pair must share its voxel grid.")


def add_evaluate_lits_arguments(parser: argparse.ArgumentParser) -> None:
    from .lits import EMPTY_RULES

    add_input_folder(parser, dest="predictions", aliases=("--predictions",), metavar="PRED_DIR",
                     help="folder of predicted label volumes")
    parser.add_argument("-r", "--references", dest="references", required=True, metavar="REF_DIR",
                        help="folder of reference label volumes (e.g. segmentation-N.nii, or a converted stage-1 "
                             "dataset's referencesTs/)")
    parser.add_argument("-o", "--out", dest="out", type=Path, default=None, metavar="OUT_DIR",
                        help="where lits_metrics.csv and lits_summary.json go (default: PRED_DIR)")
    parser.add_argument("--empty", choices=EMPTY_RULES, default="one",
                        help="per-case Dice of a case whose reference lacks the structure: one = 1 if the "
                             "prediction is empty too, else 0 (default; medpy's dc); zero = 0; skip = left out of "
                             "the per-case mean")
    add_chill(parser, help="score references without a prediction as empty predictions instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_evaluate_lits_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate-lits``; its handler is ``args.func``."""
    p = subparsers.add_parser(COMMAND, help="LiTS metrics (Dice per case/global, tumour burden RMSE)",
                              description=DESCRIPTION)
    add_evaluate_lits_arguments(p)
    p.set_defaults(func=run_evaluate_lits)
    return p


def run_evaluate_lits(args: argparse.Namespace) -> int:
    from .lits import METRICS_CSV, SUMMARY_JSON, evaluate_lits_folder, format_table

    try:
        scores, summary = evaluate_lits_folder(args.predictions, args.references, args.out, empty=args.empty,
                                               allow_missing=args.allow_missing, progress=not args.quiet)
    except (ValueError, OSError) as e:
        print(f"ulseg {COMMAND}: error: {e}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else Path(args.predictions)
    print(format_table(summary))
    if summary["missing_predictions"]:
        print(f"{summary['missing_predictions']} reference(s) had no prediction (scored as empty)")
    if summary["unmatched_predictions"]:
        print(f"{len(summary['unmatched_predictions'])} prediction file(s) have no reference (not scored)")
    print(f"written: {out / METRICS_CSV}, {out / SUMMARY_JSON}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog=f"ulseg {COMMAND}", description=DESCRIPTION)
    add_evaluate_lits_arguments(parser)
    return run_evaluate_lits(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
