"""The ``ulseg`` command.

Each sub-command lives next to the code it drives and registers itself through an
``add_*_parser(subparsers)`` function; heavy imports (torch, nnU-Net) happen inside the
handlers, so ``ulseg --help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys

from nnunet_ulseg import __version__
from nnunet_ulseg.cli_args import ArgumentParser
from nnunet_ulseg.workflow.nnunet import NNUNetCommandError


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from nnunet_ulseg.conversion.cli import add_convert_parser
    from nnunet_ulseg.conversion.uls23_cli import add_uls23_parser
    from nnunet_ulseg.conversion.lits_cli import add_lits_parser
    from nnunet_ulseg.demo.lits import add_make_lits_sample_parser
    from nnunet_ulseg.evaluation.lits_cli import add_evaluate_lits_parser
    from nnunet_ulseg.coseg.cli import add_coseg_pairs_parser, add_coseg_predict_parser
    from nnunet_ulseg.demo.cli import add_make_sample_parser
    from nnunet_ulseg.evaluation.cli import add_evaluate_parser, add_measure_parser
    from nnunet_ulseg.evaluation.response_cli import add_response_parser
    from nnunet_ulseg.refine.cli import add_refine_parser
    from nnunet_ulseg.propagate.cli import add_propagate_parser
    from nnunet_ulseg.segment.cli import add_segment_parser
    from nnunet_ulseg.demo.volume import add_sample_volumes_parser
    from nnunet_ulseg.workflow.cli import add_demo_parser
    from nnunet_ulseg.workflow.liver_tumour_cli import add_liver_tumour_parser
    from nnunet_ulseg.workflow.postprocess_cli import add_postprocess_parser
    from nnunet_ulseg.workflow.trainers_cli import add_trainers_path_parser

    # nnU-Net's dialect (nnunet_ulseg.cli_args): sub-parsers inherit the class, so no command reads
    # "-device=cpu" as "-d evice=cpu"
    parser = ArgumentParser(
        prog="ulseg",
        description="Weakly-supervised universal lesion segmentation from RECIST marks, on nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"nnunet-ulseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_make_sample_parser(sub)
    add_convert_parser(sub)
    add_uls23_parser(sub)
    add_make_lits_sample_parser(sub)
    add_lits_parser(sub)
    add_evaluate_lits_parser(sub)
    add_evaluate_parser(sub)
    add_measure_parser(sub)
    add_response_parser(sub)
    add_refine_parser(sub)
    add_coseg_pairs_parser(sub)
    add_coseg_predict_parser(sub)
    add_propagate_parser(sub)
    add_postprocess_parser(sub)
    add_demo_parser(sub)
    add_trainers_path_parser(sub)
    add_segment_parser(sub)
    add_sample_volumes_parser(sub)
    add_liver_tumour_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, ValueError, FileNotFoundError, FileExistsError, NNUNetCommandError) as exc:
        print(f"ulseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ulseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
