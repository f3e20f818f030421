"""``ulseg demo`` argument parsing."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_ulseg.cli_args import add_device, add_num_processes, add_output_folder, add_trainer, add_tta


#: the demo's defaults (DemoConfig's too), chosen from benchmarks/bench_weak.py --profile cpu64 (README):
#: 64 px crops and 40 x 30 iterations converge on 2 CPU cores; Dice+CE + RLS, then the RECIST-mark
#: GrabCut post-processing, was the best pipeline there whose worst case stayed above the ellipses'
DEFAULTS = {"trainer": "nnUNetTrainerDiceCERLS_10epochs", "rounds": 2, "crop_size": 64, "postprocess": "mark-grabcut",
            "epochs": 36, "iterations": 30}


def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo on a generated sample: convert, plan, train, predict, score",
        description="Generate a DeepLesion-format sample with true masks, convert its RECIST marks to "
                    "ellipse pseudo masks, run nnU-Net's plan/train/predict on them, and print the Dice of "
                    "(a) the pseudo masks and (b) the trained model against the true masks.",
    )
    add_output_folder(p, required=False, default=Path("ulseg_demo"), help="output folder (default: ulseg_demo)")
    p.add_argument("--lesions", type=int, default=48, help="lesions in the generated sample (default: 48)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default: 0)")
    add_trainer(p, default=DEFAULTS["trainer"], aliases=("--trainer",))
    p.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                   help=f"pseudo-mask rounds (AHRNet Sec. 2.3; default {DEFAULTS['rounds']}, the paper uses 3)")
    p.add_argument("--crop-size", type=int, default=DEFAULTS["crop_size"], metavar="PX",
                   help=f"crop side in px for the converter (default {DEFAULTS['crop_size']}: converges in minutes "
                        "on a CPU)")
    p.add_argument("--postprocess", choices=["none", "mark", "mark-ellipse", "mark-grabcut"],
                   default=DEFAULTS["postprocess"],
                   help=f"RECIST-mark post-processing of the final model's masks (default: {DEFAULTS['postprocess']})")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help=f"epochs per round (ULSEG_SHORT_EPOCHS; default {DEFAULTS['epochs']})")
    p.add_argument("--iterations", type=int, default=DEFAULTS["iterations"],
                   help=f"iterations per epoch (ULSEG_SHORT_ITERATIONS; default {DEFAULTS['iterations']})")
    add_device(p)
    add_num_processes(p, help="worker processes for conversion, preprocessing and export (default: 2)")
    add_tta(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in -o")
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
                        device=args.device, num_processes=args.num_processes, tta=args.tta,
                        overwrite=args.overwrite))
    return 0
