"""Self-paced propagation (WSSS Algorithm 1) in 3D: per-offset Dice and mean 3D Dice, beside the ellipse.

Issue 13's acceptance: "the per-offset Dice curve for the key-slice-only model and after
each propagation round, and mean 3D Dice; propagation must improve 3D Dice over applying
the key-slice model to every slice".  One generated sample (``--lesions``, ``--seed``; the
demo mixes slice intervals of 1, 2.5 and 5 mm) is converted to key-slice crops with RECIST
ellipse labels and planned by nnU-Net; then, for each trainer (ours and nnU-Net's default,
the same short schedule ``--epochs`` x ``--iterations`` through ``ULSEG_SHORT_EPOCHS`` /
``ULSEG_SHORT_ITERATIONS``, like ``bench_weak.py``), the real command

    ulseg propagate -d D -tr TRAINER -c 2d -f 0 -K 3 --eval-reach 3

trains model 0 on the key slices and models 1..K on the propagated slices, and every model
predicts the test lesions' slices r-3..r+3 into
``$nnUNet_results/<dataset>/ulseg_propagate_<trainer>__nnUNetPlans__2d_fold0/round<m>/test_predictions``.
Model 0 applied to every slice is the key-slice-only baseline.

Every folder, and the ellipse of the 3D RECIST estimate on the same slices (written by
:mod:`nnunet_ulseg.evaluation.ellipse3d`), is scored by ``ulseg evaluate --3d``'s code
(:func:`nnunet_ulseg.evaluation.evaluate3d.evaluate_3d`) against the sample's true 3D masks,
on the slices key-E..key+E: one table, rows = ellipse and each trainer x round, columns =
n, mean 3D Dice ± sd, worst, VS, AVD and the Dice at offsets -E..+E.  The ellipse's slices
are those of the sample's ``Slice_range`` within the reach (the template written here), so
it stands beside every model row on the same lesions.  Every folder is scored once
per mode (``--postprocess``, default ``none mark mark-ellipse mark-grabcut``): as
predicted, and after the slice-by-slice rule of :mod:`nnunet_ulseg.postprocess3d`
(components crossed by the mark / the 3D RECIST estimate, walking out from the key slice
and stopping at the first empty slice, as ``ulseg segment --propagate`` does at inference;
``mark-ellipse`` also clips each slice to its estimate's ellipse x 1.5; ``mark-grabcut``
refines each kept slice with GrabCut on its CT crop, read from the first trainer's
``slices/test_reach<E>``: every trainer predicts the same crops); the rows are named
``<row> [<mode>]``.  The ellipse folder goes through the same modes, so ``ellipse
[mark-grabcut]`` is GrabCut from the 3D RECIST estimate alone (no model): the row a
model with ``mark-grabcut`` must beat to show that the network adds anything.  Results go to
``bench_propagate.json`` and the evaluation files to ``<work>/eval3d``.

Long: run it by hand, not in CI.  ``--stage setup`` stops after the sample, conversion,
planning and the ellipse row (no training), which is quick:

    python benchmarks/bench_propagate.py --lesions 150 --seed 29 --epochs 20 --iterations 25
    python benchmarks/bench_propagate.py --lesions 12 --stage setup --keep /tmp/bp
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _nnunet_setup import temp_root
from nnunet_ulseg.cli_args import help_text
from nnunet_ulseg.postprocess import IMAGE_MODES
from nnunet_ulseg.postprocess3d import MODES_3D

DEFAULT_TRAINERS = ["nnUNetTrainerDiceCERLS_10epochs", "nnUNetTrainerULSeg_10epochs"]
DATASET_ID, DATASET_NAME = 973, "Dataset973_BenchPropagate"


def template_slices(sample: Path, sidecar: Path, out: Path, reach: int) -> int:
    """``slices.csv`` of every test key case's slices key-reach..key+reach inside its DL_info Slice_range."""
    import csv

    from nnunet_ulseg.conversion.sidecar import read_sidecar
    from nnunet_ulseg.conversion.slices import SliceRow, slice_case_name, write_slices
    from nnunet_ulseg.recist import parse_numbers

    with open(sample / "DL_info.csv", newline="") as fh:
        info = list(csv.DictReader(fh))
    rows = []
    for r in read_sidecar(sidecar):
        if r.split != "test":
            continue
        lo, hi = (int(v) for v in parse_numbers(info[r.dl_row - 2]["Slice_range"], 2, "Slice_range"))
        for k in range(-reach, reach + 1):
            if lo <= r.key_slice + k <= hi:
                rows.append(SliceRow(slice_case_name(r.case, k), r.case, k, k * r.spacing_z, r.key_slice + k,
                                     r.split, "key" if k == 0 else "none"))
    write_slices(out, rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS,
                        help=f"trainers to propagate with (default: {' '.join(DEFAULT_TRAINERS)})")
    parser.add_argument("--lesions", type=int, default=150, help="lesions in the generated sample (default 150)")
    parser.add_argument("--seed", type=int, default=29, help="sample seed (default 29, not used for tuning)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per model (default 10)")
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25)")
    parser.add_argument("--crop-size", type=int, default=None,
                        help="converter --crop-size (fixed crop side in px, e.g. 64 as bench_weak's cpu64 profile; "
                             "default: 128..256)")
    parser.add_argument("-K", "--K", dest="K", type=int, default=3, help="propagation rounds (default 3)")
    parser.add_argument("--eval-reach", type=int, default=3, help="test slices r-E..r+E (default 3)")
    parser.add_argument("--postprocess", nargs="+", choices=MODES_3D, default=list(MODES_3D),
                        help=f"score every folder once per mode (default: {' '.join(MODES_3D)}; mark-grabcut "
                             "needs trained trainers, whose test crops it reads)")
    parser.add_argument("--stage", choices=("all", "setup"), default="all",
                        help="setup: sample, conversion, planning and the ellipse row only (no training)")
    parser.add_argument("-device", "--device", dest="device", choices=("cpu", "cuda", "mps"), default=None,
                        help="nnU-Net device (default: cuda when available)")
    parser.add_argument("-np", "--np", dest="np", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()

    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.evaluation.ellipse3d import write_ellipse_predictions
    from nnunet_ulseg.evaluation.evaluate import jsonable
    from nnunet_ulseg.evaluation.evaluate3d import evaluate_3d
    from nnunet_ulseg.workflow.experiment import Experiment
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script, default_device

    os.environ["ULSEG_SHORT_EPOCHS"] = str(args.epochs)
    os.environ["ULSEG_SHORT_ITERATIONS"] = str(args.iterations)
    root = temp_root(args.keep)
    exp = Experiment(NNUNetPaths.under(root).create(), DATASET_ID, DATASET_NAME, root / "nnunet.log",
                     device=args.device or default_device(), num_processes=args.np, echo=None)
    sample, sidecar = root / "deeplesion", exp.raw / "lesions.csv"
    done = root / "setup.done"
    if not done.exists():  # a set-up cut short is redone from nothing
        t0 = time.perf_counter()
        make_sample(sample, n_lesions=args.lesions, seed=args.seed, progress=False)
        exp.convert(sample, progress=False, crop_size=args.crop_size)
        exp.plan_and_preprocess()
        done.write_text(json.dumps({"lesions": args.lesions, "seed": args.seed, "crop_size": args.crop_size}))
        print(f"set-up: {args.lesions} lesions (seed {args.seed}) converted and planned in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    elif json.loads(done.read_text()) != {"lesions": args.lesions, "seed": args.seed, "crop_size": args.crop_size}:
        raise SystemExit(f"{root}: made with {done.read_text()}; use another --keep folder")
    template = root / "template_slices.csv"
    n_slices = template_slices(sample, sidecar, template, args.eval_reach)
    ellipse = root / "ellipse_predictions"
    write_ellipse_predictions(template, sidecar, ellipse, progress=False)

    modes = list(args.postprocess)
    if args.stage == "setup" and any(m in IMAGE_MODES for m in modes):
        modes = [m for m in modes if m not in IMAGE_MODES] or ["none"]
        print(f"--stage setup: no test crops are predicted, so only {' '.join(modes)} is scored", flush=True)
    folders, names, seconds, images = [ellipse], ["ellipse (3D RECIST estimate)"], {}, None
    if args.stage == "all":
        env = exp.paths.environ(num_processes=args.np)  # os.environ + the nnU-Net folders
        for trainer in args.trainers:
            t0 = time.perf_counter()
            cmd = [console_script("ulseg"), "propagate", "-d", str(DATASET_ID), "-tr", trainer,
                   "-c", "2d", "-f", "0", "-K", str(args.K), "--eval-reach", str(args.eval_reach),
                   "-device", exp.device, "-np", str(args.np), "--disable_tta"]
            print(f"{trainer}: ulseg {' '.join(cmd[1:])}", flush=True)
            with open(root / f"propagate_{trainer}.log", "a") as log:
                subprocess.run(cmd, env=env, check=True, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
            seconds[trainer] = time.perf_counter() - t0
            work = exp.paths.results / DATASET_NAME / f"ulseg_propagate_{trainer}__nnUNetPlans__2d_fold0"
            images = images or work / "slices" / f"test_reach{args.eval_reach}"
            for m in range(args.K + 1):
                folders.append(work / f"round{m}" / "test_predictions")
                names.append(f"{trainer} model {m}" + (" (key slices only)" if m == 0 else ""))
    result = evaluate_3d(folders, sample, sidecar, root / "eval3d", names=names, reach=args.eval_reach,
                         postprocess=modes, images_dir=images, progress=False)
    print(f"{n_slices} test slices (key +-{args.eval_reach} inside Slice_range), {args.epochs} epochs x "
          f"{args.iterations} iterations per model, device {exp.device}")
    print(result.table)
    per = result.summary["per_prediction"]
    def suffix(mode: str) -> str:
        return "" if len(modes) == 1 else f" [{mode}]"

    ellipse_dice = per[names[0] + suffix(modes[0])]["dice_3d"]["mean"]  # the ellipse as it is (first mode)
    for trainer in seconds:
        for mode in modes:
            first = per[f"{trainer} model 0 (key slices only){suffix(mode)}"]
            last = per[f"{trainer} model {args.K}{suffix(mode)}"]
            gain = last["dice_3d"]["mean"] - first["dice_3d"]["mean"]
            same = per[names[0] + suffix(mode)]["dice_3d"]["mean"]  # the ellipse through the same mode
            print(f"{trainer} [{mode}]: mean 3D Dice model 0 {100 * first['dice_3d']['mean']:.1f} % -> model "
                  f"{args.K} {100 * last['dice_3d']['mean']:.1f} % ({100 * gain:+.1f} points; "
                  f"{100 * (last['dice_3d']['mean'] - ellipse_dice):+.1f} vs the ellipse, "
                  f"{100 * (last['dice_3d']['mean'] - same):+.1f} vs the ellipse [{mode}]; {seconds[trainer]:.0f} s)")
    out = root / "bench_propagate.json"
    settings = {k: getattr(args, k) for k in ("lesions", "seed", "crop_size", "epochs", "iterations", "K",
                                              "eval_reach", "trainers")}
    out.write_text(json.dumps({"settings": settings, "postprocess": modes, "images": str(images) if images else None,
                               "device": exp.device, "seconds": seconds, "summary": jsonable(result.summary)},
                              indent=2, allow_nan=False) + "\n")
    print(f"(details: {out}, {result.out_dir})")


if __name__ == "__main__":
    main()
