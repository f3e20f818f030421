"""Weak supervision quality: Dice against true masks, trainers at an equal budget.

One generated sample (with true masks) is converted to RECIST-ellipse pseudo masks and
planned by nnU-Net; each trainer then trains fold 0 with the same short schedule
(``--epochs`` x ``--iterations``, applied through ``ULSEG_SHORT_EPOCHS`` /
``ULSEG_SHORT_ITERATIONS``), predicts the test split with ``nnUNetv2_predict``, and is
scored on the key slice, in the original geometry, against the true masks.  The first
row is the ellipse pseudo masks themselves.  Each row is printed (with its train+predict
seconds) and saved to ``bench_weak.json`` as soon as it is scored; re-running with the same
``--keep`` folder continues where a stopped run ended.  Long: run it by hand, not in CI.

    python benchmarks/bench_weak.py --lesions 80 --epochs 20 --iterations 25

Predictions run without test-time mirroring (``nnUNetv2_predict --disable_tta``, passed
explicitly since TTA became the default everywhere else), so rows stay comparable with the
earlier runs and the budget stays the training's.

``--profile cpu64`` is the equal-budget profile that converges on 2 CPU cores (issue 10):
240 lesions converted to fixed 64 x 64 px crops (``--crop-size 64``), every trainer
trained 40 epochs x 30 iterations (about 9 minutes per model on 2 cores).  Any explicit option overrides the profile's value.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from _nnunet_setup import temp_root
from nnunet_ulseg.cli_args import help_text

DEFAULT_TRAINERS = ["nnUNetTrainerULSeg_10epochs", "nnUNetTrainerBCEIoU_10epochs", "nnUNetTrainerRLS_10epochs",
                    "nnUNetTrainerLS_10epochs", "nnUNetTrainerHRNet_10epochs", "nnUNetTrainerHRNetRLS_10epochs",
                    "nnUNetTrainerAHRNet_10epochs", "nnUNetTrainerAHRNetRLS_10epochs"]


#: equal-budget profiles: option -> value (explicit command-line options win)
PROFILES = {
    "cpu64": {"lesions": 240, "crop_size": 64, "epochs": 40, "iterations": 30},
}
DEFAULTS = {"lesions": 80, "crop_size": None, "epochs": 10, "iterations": 25}


def main() -> None:
    parser = argparse.ArgumentParser(description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS,
                        help="short-schedule trainer classes (their schedule is overridden by --epochs/--iterations)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="preset corpus size, crop size and budget (see the module docstring)")
    parser.add_argument("--lesions", type=int, default=None, help=f"default {DEFAULTS['lesions']}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=None,
                        help="converter --crop-size (fixed crop side in px; default: 128..256)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULTS['epochs']}")
    parser.add_argument("--iterations", type=int, default=None, help=f"default {DEFAULTS['iterations']}")
    parser.add_argument("--refine-rounds", type=int, default=0,
                        help="also run ulseg refine with this many rounds for the best trainer (rows per round)")
    parser.add_argument("--refine-trainer", default=None,
                        help="the trainer to refine (default: the best of --trainers by mean Dice)")
    parser.add_argument("--refine-postprocess", default="none",
                        help="ulseg refine --postprocess mode for the round updates (none, mark, mark-ellipse)")
    parser.add_argument("--postprocess", nargs="*", default=["mark"],
                        help="also score every model (and the ellipses) with these post-processing modes using "
                             "its RECIST mark (rows '<model> + <mode>'; default: mark)")
    parser.add_argument("-device", "--device", dest="device", choices=("cpu", "cuda", "mps"), default=None,
                        help="torch device (default: cuda if available, else cpu); predictions always run with "
                             "--disable_tta (no mirroring), as every earlier row")
    parser.add_argument("-np", "--np", dest="np", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()
    preset = {**DEFAULTS, **PROFILES.get(args.profile, {})}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.nnunet_layout import RawDataset
    from nnunet_ulseg.workflow.experiment import Experiment
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths, default_device
    from nnunet_ulseg.workflow.slice_scores import score_folder

    os.environ["ULSEG_SHORT_EPOCHS"] = str(args.epochs)
    os.environ["ULSEG_SHORT_ITERATIONS"] = str(args.iterations)
    root = temp_root(args.keep)
    exp = Experiment(NNUNetPaths.under(root).create(), 972, "Dataset972_BenchWeak", root / "nnunet.log",
                     device=args.device or default_device(), num_processes=args.np, echo=None)
    results = Results(root / "bench_weak.json", {**{k: getattr(args, k) for k in SETTINGS}, "device": exp.device})
    sample = root / "deeplesion"
    if "RECIST ellipse pseudo masks" not in results.rows:
        # a set-up cut short is redone from nothing (these folders are this benchmark's own output)
        for folder in (sample, exp.raw, exp.paths.preprocessed / exp.dataset_name):
            shutil.rmtree(folder, ignore_errors=True)
        make_sample(sample, n_lesions=args.lesions, seed=args.seed, progress=False)
        exp.convert(sample, progress=False, crop_size=args.crop_size)
        exp.plan_and_preprocess()
    sidecar = exp.raw / "lesions.csv"
    crops = f"{args.crop_size} px crops" if args.crop_size else "128-256 px crops"
    print(f"{args.lesions} lesions (seed {args.seed}), {crops}, {args.epochs} epochs x {args.iterations} iterations, "
          f"device {exp.device}; Dice on the test split vs true masks (key slice, original geometry)")
    print(HEADER, flush=True)
    results.add("RECIST ellipse pseudo masks", lambda: score_folder(exp.raw / "pseudolabelsTs", sidecar, sample))

    def postprocessed(name: str, pred: Path) -> None:
        """Rows of ``name``'s predictions with each --postprocess mode (no training: the same files)."""
        for mode in args.postprocess:
            if mode != "none":
                results.add(f"{name} + {mode}", lambda: score_folder(pred, sidecar, sample, postprocess=mode),
                            seconds=results.seconds.get(name))

    n_test = len(RawDataset(exp.raw).cases(test=True))

    def train_and_score(trainer: str) -> dict:
        """Train and predict unless done already (a row saved by an older version is only re-scored)."""
        if not (exp.results(trainer) / "checkpoint_final.pth").exists():
            exp.train(trainer)
        if len(list(predictions(trainer).glob("*.mha"))) != n_test:
            exp.predict(trainer, exp.raw / "imagesTs", predictions(trainer), tta=False)  # comparable rows
        return score_folder(predictions(trainer), sidecar, sample)

    def predictions(trainer: str) -> Path:
        return root / "predictions" / trainer

    # the post-processing alone, on the ellipses (what each mode adds without any model)
    postprocessed("RECIST ellipse pseudo masks", exp.raw / "pseudolabelsTs")
    for trainer in args.trainers:
        results.add(trainer, lambda: train_and_score(trainer))
        postprocessed(trainer, predictions(trainer))

    if args.refine_rounds > 1:
        from nnunet_ulseg.refine import refine

        best = args.refine_trainer or max(args.trainers, key=lambda name: results.rows[name]["mean"])
        if best not in results.rows:
            results.add(best, lambda: train_and_score(best))
        # round 1 is the model trained above; with truth, refine predicts the test split every round
        options = {} if args.refine_postprocess == "none" else {"postprocess": args.refine_postprocess}
        result = refine(exp.dataset_id, best, paths=exp.paths, echo=None, rounds=args.refine_rounds, fold=0,
                        truth=sample, device=exp.device, num_processes=args.np, tta=False, **options)
        label = best if args.refine_postprocess == "none" else f"{best} (rounds: {args.refine_postprocess})"
        for r in range(1, args.refine_rounds + 1):
            pred = result.work_dir / f"round{r}" / "test_predictions"
            # a round's seconds are refine's for its steps; round 1's training is the trainer's own row
            results.add(f"{label}, round {r}", lambda: score_folder(pred, sidecar, sample),
                        seconds=result.report["rounds"][r - 1]["seconds"])
            postprocessed(f"{label}, round {r}", pred)
        from nnunet_ulseg.refine.report import format_report

        print(format_report(result.report))
    print("long% / short%: ULS23's symmetric axis error |p - t| / (|p| + |t|) of the RECIST long / short axis "
          "(boundary pixel centres, ULS23's evaluator), mean over lesions, in %; an empty prediction counts 100 %")
    print(f"(details: {results.path})")


SETTINGS = ("lesions", "seed", "crop_size", "epochs", "iterations")
#: the axis convention of the saved long_err/short_err (score_folder's: ULS23's pixel-centre rule); rows
#: saved under another one are re-scored, so one table never mixes conventions
AXES = "uls23"
HEADER = (f"{'method':48s} {'n':>4s} {'mean':>7s} {'std':>7s} {'median':>7s} {'worst':>7s} {'>=0.8':>6s} "
          f"{'long%':>6s} {'short%':>6s}")


class Results:
    """The rows scored so far, saved after each one so that a stopped run loses nothing.

    Running again with the same ``--keep`` folder and settings prints the saved rows and
    goes on with the rest; other settings in the same folder are an error (the rows would
    not be comparable).
    """

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        self.rows: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}
        self.per_lesion: dict[str, list] = {}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") != settings:
                raise SystemExit(f"{path} holds a run with settings {saved.get('settings')}, not {settings}; "
                                 f"use another --keep folder")
            self.rows, self.seconds = saved["rows"], saved["seconds"]
            self.per_lesion = saved.get("per_lesion", {})

    def add(self, name: str, score, seconds: float | None = None) -> None:
        """Score ``name`` unless it is saved already; print its row either way.

        ``seconds`` defaults to the time ``score()`` took (training and prediction for a trainer).
        """
        saved = self.rows.get(name, {})
        if saved.get("axes") != AXES:  # new, or saved by an older version (no or other axis errors): (re)score
            # score() reuses a trained model's predictions, so an old row costs only its scoring
            t = time.perf_counter()
            scores = score()
            dice = [r["dice"] for r in scores["per_lesion"]]
            self.rows[name] = {**scores["summary"], "share_0.8": sum(d >= 0.8 for d in dice) / len(dice),
                               "long_err": scores["long_err"]["mean"], "short_err": scores["short_err"]["mean"],
                               "axes": AXES}
            self.per_lesion[name] = scores["per_lesion"]
            if name not in self.seconds:
                self.seconds[name] = time.perf_counter() - t if seconds is None else seconds
            self.save()
        s, nan = self.rows[name], float("nan")
        seconds = f"{self.seconds[name]:6.0f} s" if name in self.seconds else ""
        print(f"{name:48s} {s['n']:4d} {s['mean']:7.4f} {s['std']:7.4f} {s['median']:7.4f} {s['min']:7.4f} "
              f"{s.get('share_0.8', nan):6.2f} {100 * s.get('long_err', nan):6.2f} {100 * s.get('short_err', nan):6.2f}  "
              f"{seconds}", flush=True)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "rows": self.rows, "seconds": self.seconds,
                                   "per_lesion": self.per_lesion}, indent=2))
        tmp.replace(self.path)


if __name__ == "__main__":
    main()
