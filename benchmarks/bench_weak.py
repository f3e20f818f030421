"""Weak supervision quality: Dice against true masks, trainers at an equal budget.

One generated sample (with true masks) is converted to RECIST-ellipse pseudo masks and
planned by nnU-Net; each trainer then trains fold 0 with the same short schedule
(``--epochs`` x ``--iterations``, applied through ``ULSEG_SHORT_EPOCHS`` /
``ULSEG_SHORT_ITERATIONS``), predicts the test split with ``nnUNetv2_predict``, and is
scored on the key slice, in the original geometry, against the true masks.  The first
row is the ellipse pseudo masks themselves.  Long: run it by hand, not in CI.

    python benchmarks/bench_weak.py --lesions 80 --epochs 20 --iterations 25
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _nnunet_setup import temp_root

DEFAULT_TRAINERS = ["nnUNetTrainerULSeg_10epochs", "nnUNetTrainerBCEIoU_10epochs", "nnUNetTrainerRLS_10epochs",
                    "nnUNetTrainerLS_10epochs", "nnUNetTrainerHRNet_10epochs", "nnUNetTrainerHRNetRLS_10epochs",
                    "nnUNetTrainerAHRNet_10epochs", "nnUNetTrainerAHRNetRLS_10epochs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS,
                        help="short-schedule trainer classes (their schedule is overridden by --epochs/--iterations)")
    parser.add_argument("--lesions", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--refine-rounds", type=int, default=0,
                        help="also run ulseg refine with this many rounds for the best trainer (rows per round)")
    parser.add_argument("--device", default=None)
    parser.add_argument("-np", type=int, default=2)
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()

    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.workflow.experiment import Experiment
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths, default_device
    from nnunet_ulseg.workflow.slice_scores import score_folder

    os.environ["ULSEG_SHORT_EPOCHS"] = str(args.epochs)
    os.environ["ULSEG_SHORT_ITERATIONS"] = str(args.iterations)
    root = temp_root(args.keep)
    exp = Experiment(NNUNetPaths.under(root).create(), 972, "Dataset972_BenchWeak", root / "nnunet.log",
                     device=args.device or default_device(), num_processes=args.np, echo=None)
    sample = make_sample(root / "deeplesion", n_lesions=args.lesions, seed=args.seed, progress=False)
    exp.convert(sample, progress=False)
    exp.plan_and_preprocess()
    sidecar = exp.raw / "lesions.csv"
    rows = {"RECIST ellipse pseudo masks": score_folder(exp.raw / "pseudolabelsTs", sidecar, sample)["summary"]}
    seconds = {}
    for trainer in args.trainers:
        t = time.perf_counter()
        exp.train(trainer)
        pred = root / "predictions" / trainer
        exp.predict(trainer, exp.raw / "imagesTs", pred)
        seconds[trainer] = time.perf_counter() - t
        rows[trainer] = score_folder(pred, sidecar, sample)["summary"]
        print(f"  done {trainer} in {seconds[trainer]:.0f} s", file=sys.stderr)

    if args.refine_rounds > 1:
        from nnunet_ulseg.refine import refine

        best = max(args.trainers, key=lambda name: rows[name]["mean"])
        t = time.perf_counter()
        # round 1 is the model trained above; with truth, refine predicts the test split every round
        result = refine(exp.dataset_id, best, paths=exp.paths, echo=None, rounds=args.refine_rounds, fold=0,
                        truth=sample, device=exp.device, num_processes=args.np)
        seconds[f"refine {best}"] = time.perf_counter() - t
        for r in range(1, args.refine_rounds + 1):
            pred = result.work_dir / f"round{r}" / "test_predictions"
            rows[f"{best}, round {r}"] = score_folder(pred, sidecar, sample)["summary"]

    print(f"{args.lesions} lesions (seed {args.seed}), {args.epochs} epochs x {args.iterations} iterations, "
          f"device {exp.device}; Dice on the test split vs true masks (key slice, original geometry)")
    print(f"{'method':40s} {'n':>4s} {'mean':>7s} {'std':>7s} {'median':>7s} {'worst':>7s}")
    for name, s in rows.items():
        print(f"{name:40s} {s['n']:4d} {s['mean']:7.4f} {s['std']:7.4f} {s['median']:7.4f} {s['min']:7.4f}")
    (root / "bench_weak.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "args": vars(args)}, indent=2))
    print(f"(details: {root / 'bench_weak.json'})")


if __name__ == "__main__":
    main()
