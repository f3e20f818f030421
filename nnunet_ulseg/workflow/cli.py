"""``ulseg demo`` argument parsing."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo on a generated sample: convert, plan, train, predict, score",
        description="Generate a DeepLesion-format sample with true masks, convert its RECIST marks to "
                    "ellipse pseudo masks, run nnU-Net's plan/train/predict on them, and print the Dice of "
                    "(a) the pseudo masks and (b) the trained model against the true masks.",
    )
    p.add_argument("--out", type=Path, default=Path("ulseg_demo"), help="output folder (default: ulseg_demo)")
    p.add_argument("--lesions", type=int, default=48, help="lesions in the generated sample (default: 48)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default: 0)")
    p.add_argument("--trainer", default="nnUNetTrainerAHRNetW18RLS_5epochs",
                   help="nnU-Net trainer class (default: nnUNetTrainerAHRNetW18RLS_5epochs)")
    p.add_argument("--rounds", type=int, default=2,
                   help="pseudo-mask rounds (AHRNet Sec. 2.3; default 2, the paper uses 3)")
    p.add_argument("--crop-size", type=int, default=64, metavar="PX",
                   help="crop side in px for the converter (default 64: converges in minutes on a CPU)")
    p.add_argument("--postprocess", choices=["none", "mark", "mark-ellipse"], default="mark",
                   help="RECIST-mark post-processing of the final model's masks (default: mark)")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the short schedule's epochs per round (ULSEG_SHORT_EPOCHS)")
    p.add_argument("--iterations", type=int, default=None,
                   help="override the short schedule's iterations per epoch (ULSEG_SHORT_ITERATIONS)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("-np", "--np", dest="num_processes", type=int, default=2,
                   help="worker processes for conversion, preprocessing and export (default: 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from nnunet_ulseg.workflow.demo import DemoConfig, run_demo

    if args.lesions < 12:
        raise ValueError("--lesions must be at least 12 so that train, val and test all get patients")
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    run_demo(DemoConfig(out=args.out, lesions=args.lesions, seed=args.seed, trainer=args.trainer,
                        rounds=args.rounds, epochs=args.epochs, iterations=args.iterations,
                        crop_size=args.crop_size, postprocess=args.postprocess,
                        device=args.device, num_processes=args.num_processes, overwrite=args.overwrite))
    return 0
