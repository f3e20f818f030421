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

Co-segmentation rows (co-segmentation paper, Sec. 2.2-3.1; issue 16).  A trainer whose name starts
with ``nnUNetTrainerCoSeg`` runs the paper's pipeline instead of train + ``nnUNetv2_predict``:

1. ``ulseg coseg-pairs -d 972 -tr EMBEDDING`` clusters the training lesions by the encoder of a
   trained model (``--coseg-embedding``; default: the first non-CoSeg trainer of ``--trainers``,
   else nnU-Net's U-Net ``nnUNetTrainerULSeg_10epochs``).  That model is trained first if it has
   not been, and gets its own row; the footnote under the table names it.  The converter's split
   stays installed, so the co-seg model trains on the same fold 0 as every other row.
2. ``nnUNetv2_train`` of the co-seg trainer (same-cluster pairs, same ``--epochs`` x ``--iterations``).
3. ``ulseg coseg-predict --partners P --disable_tta`` (``--coseg-partners``, default 1): each test
   lesion paired with its P nearest training lesions in the embedding space, logits averaged.
4. ``score_folder`` as every other row, and the ``--postprocess`` rows on the same files.

The row is named ``<trainer>, P partner(s)``; its seconds are pairing + training + prediction (the
pairs are made once, in the first co-seg row, and shared by the others; the embedding model's
training is its own row).  Another ``--coseg-partners`` in the same ``--keep``
folder adds a row that reuses the trained model (its seconds are then the prediction's only).
The equal-budget row beside AHRNet+RLS and nnU-Net on the same corpus:

    python benchmarks/bench_weak.py --profile cpu64 --trainers nnUNetTrainerULSeg_10epochs \\
        nnUNetTrainerDiceCERLS_10epochs nnUNetTrainerAHRNetRLS_10epochs nnUNetTrainerCoSeg_10epochs

``--table3`` adds the paper's Table 3 attention variants (:data:`TABLE3_TRAINERS`: CSA = SE + mean
spatial, SE + ASPP, ECA + MSA, ECA + ASPP, DANet; all on the trainers' ``resnet26`` DRN-MG encoder
with decoder D2: the paper's ResNet-101 is several times its compute, beyond a CPU budget; one
smoke epoch of 128 px crops took 9 s for 2 iterations on a loaded 2-core machine) after ``--trainers`` (alone, without
``--trainers``: nnU-Net's U-Net as the embedding model and baseline, then the five variants).
After the main table a block in the paper's Table 3 layout (model, CA / SA / CSA, Rec., Prec.,
Dice, AVD, VS, mean +- std) lists every model row, scored on the same prediction folders by
``ulseg evaluate``'s code (:func:`nnunet_ulseg.evaluation.evaluate.evaluate_folders`: recall,
precision and VS are not in ``score_folder``'s summary, AVD is Taha & Hanbury's in mm).
"""
from __future__ import annotations

import argparse
import functools
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
#: co-segmentation trainers (``trainers/nnUNetTrainerCoSeg.py``) run the pipeline of the module docstring
COSEG_PREFIX = "nnUNetTrainerCoSeg"
#: the embedding model when --trainers has no other trainer: nnU-Net's own U-Net
FALLBACK_EMBEDDING = "nnUNetTrainerULSeg_10epochs"
#: co-segmentation paper Table 3's rows, in its order (CSA first, the paper's default and best)
TABLE3_TRAINERS = ["nnUNetTrainerCoSeg_10epochs", "nnUNetTrainerCoSegSEASPP_10epochs",
                   "nnUNetTrainerCoSegECA_10epochs", "nnUNetTrainerCoSegECAASPP_10epochs",
                   "nnUNetTrainerCoSegDANet_10epochs"]
#: CoSegNet ``attention`` -> Table 3's columns (CA, SA, CSA); "none" is the no-co-attention ablation
TABLE3_COLUMNS = {"csa": ("SE", "MSA", ""), "aspp": ("SE", "ASPP", ""), "eca": ("ECA", "MSA", ""),
                  "eca_aspp": ("ECA", "ASPP", ""), "danet": ("", "", "DANet"), "none": ("-", "-", "-")}
#: Table 3's metric columns: header -> ``ulseg evaluate`` metric (mean +- std over lesions)
TABLE3_METRICS = {"Rec.": "recall", "Prec.": "precision", "Dice": "dice", "AVD": "avd_mm", "VS": "vs"}


#: equal-budget profiles: option -> value (explicit command-line options win)
PROFILES = {
    "cpu64": {"lesions": 240, "crop_size": 64, "epochs": 40, "iterations": 30},
}
DEFAULTS = {"lesions": 80, "crop_size": None, "epochs": 10, "iterations": 25}


def main() -> None:
    parser = argparse.ArgumentParser(description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=None,
                        help="short-schedule trainer classes (their schedule is overridden by --epochs/--iterations); "
                             "nnUNetTrainerCoSeg* run the co-segmentation pipeline (module docstring)")
    parser.add_argument("--table3", action="store_true",
                        help="also run the co-segmentation paper's Table 3 attention variants and print its layout "
                             "(without --trainers: nnU-Net's U-Net, then the variants)")
    parser.add_argument("--coseg-embedding", default=None, metavar="TRAINER",
                        help="model whose encoder clusters the lesions for ulseg coseg-pairs (default: the first "
                             f"non-CoSeg trainer of --trainers, else {FALLBACK_EMBEDDING}); trained if needed")
    parser.add_argument("--coseg-partners", type=int, default=1, metavar="P",
                        help="ulseg coseg-predict --partners: nearest training lesions each test lesion is paired "
                             "with, logits averaged (default: 1)")
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
    args.trainers = trainer_list(args.trainers, args.table3)
    if args.coseg_partners < 1:
        parser.error(f"--coseg-partners must be >= 1, got {args.coseg_partners}")
    preset = {**DEFAULTS, **PROFILES.get(args.profile, {})}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.nnunet_layout import RawDataset
    from nnunet_ulseg.workflow.experiment import Experiment
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script, default_device, run_command
    from nnunet_ulseg.workflow.slice_scores import score_folder

    os.environ["ULSEG_SHORT_EPOCHS"] = str(args.epochs)
    os.environ["ULSEG_SHORT_ITERATIONS"] = str(args.iterations)
    root = temp_root(args.keep)
    exp = Experiment(NNUNetPaths.under(root).create(), 972, "Dataset972_BenchWeak", root / "nnunet.log",
                     device=args.device or default_device(), num_processes=args.np, echo=None)
    # this process looks trainer classes up (their Table 3 attention) as nnU-Net's commands do
    os.environ.update({k: v for k, v in exp.paths.environ().items() if k.startswith("nnUNet_")})
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

    embedding = args.coseg_embedding or default_embedding(args.trainers)
    partners = args.coseg_partners

    def coseg_predictions(trainer: str) -> Path:
        return root / "predictions" / f"{trainer}_partners{partners}"

    def coseg_train_and_score(trainer: str) -> dict:
        """Pairs (unless made by this embedding), training, coseg-predict, scoring (module docstring)."""
        env = exp.paths.environ(num_processes=args.np)
        pairs = exp.paths.preprocessed / exp.dataset_name / "pairs.json"
        trained = (exp.results(trainer) / "checkpoint_final.pth").exists()
        made_by = json.loads(pairs.read_text())["embedding"]["trainer"] if pairs.exists() else None
        if made_by != embedding:
            if trained:
                raise SystemExit(f"{exp.results(trainer)} was trained on pairs clustered by {made_by}, not by "
                                 f"--coseg-embedding {embedding}; use another --keep folder")
            run_command([console_script("ulseg"), "coseg-pairs", "-d", str(exp.dataset_id), "-tr", embedding,
                         "-device", exp.device], env, exp.log, echo=None)
        if not trained:
            exp.train(trainer)
        out = coseg_predictions(trainer)
        if len(list(out.glob("*.mha"))) != n_test:
            run_command([console_script("ulseg"), "coseg-predict", "-i", str(exp.raw / "imagesTs"), "-o", str(out),
                         "-d", str(exp.dataset_id), "-tr", trainer, "-f", "0", "-device", exp.device,
                         "--disable_tta", "--partners", str(partners)], env, exp.log, echo=None)
        return score_folder(out, sidecar, sample)

    # the post-processing alone, on the ellipses (what each mode adds without any model)
    postprocessed("RECIST ellipse pseudo masks", exp.raw / "pseudolabelsTs")
    models: dict[str, Path] = {}  # model row -> its prediction folder (the Table 3 block)
    for trainer in args.trainers:
        if is_coseg(trainer):
            if embedding not in models:  # the embedding model, trained first (its own row)
                results.add(embedding, lambda: train_and_score(embedding))
                postprocessed(embedding, predictions(embedding))
                models[embedding] = predictions(embedding)
                if not (exp.results(embedding) / "checkpoint_final.pth").exists():  # a saved row, model gone
                    exp.train(embedding)
            name = coseg_row_name(trainer, partners)
            results.add(name, lambda: coseg_train_and_score(trainer))
            postprocessed(name, coseg_predictions(trainer))
            models[name] = coseg_predictions(trainer)
        elif trainer not in models:
            results.add(trainer, lambda: train_and_score(trainer))
            postprocessed(trainer, predictions(trainer))
            models[trainer] = predictions(trainer)
    if any(is_coseg(t) for t in args.trainers):
        print(f"co-seg rows: pairs and test partners from the encoder of {embedding} (ulseg coseg-pairs, "
              f"k-means); predicted by ulseg coseg-predict; seconds = pairing (in the first co-seg row only: the "
              f"pairs are shared) + training + prediction (prediction only where the model was trained for a "
              f"row with other partners)")

    if args.refine_rounds > 1:
        from nnunet_ulseg.refine import refine

        # ulseg refine predicts with nnUNetv2_predict, which would pair a co-seg model's lesions with themselves
        plain = [t for t in args.trainers if not is_coseg(t)]
        if not plain and not args.refine_trainer:
            raise SystemExit("--refine-rounds: no non-CoSeg trainer to refine; name one with --refine-trainer")
        best = args.refine_trainer or max(plain, key=lambda name: results.rows[name]["mean"])
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
    print_table3(results, models, sample, sidecar, root / "evaluation")
    print("long% / short%: ULS23's symmetric axis error |p - t| / (|p| + |t|) of the RECIST long / short axis "
          "(boundary pixel centres, ULS23's evaluator), mean over lesions, in %; an empty prediction counts 100 %")
    print(f"(details: {results.path})")


def is_coseg(trainer: str) -> bool:
    """A co-segmentation trainer (``trainers/nnUNetTrainerCoSeg.py``), run through coseg-pairs/-predict."""
    return trainer.startswith(COSEG_PREFIX)


def trainer_list(trainers: list[str] | None, table3: bool) -> list[str]:
    """The trainers to run: ``--trainers`` (default :data:`DEFAULT_TRAINERS`), then the Table 3 variants.

    With ``table3`` and no ``--trainers``: nnU-Net's U-Net (the embedding model and the
    baseline row) and :data:`TABLE3_TRAINERS`.  Duplicates are dropped, the order kept.
    """
    if trainers is None:
        trainers = [FALLBACK_EMBEDDING] if table3 else DEFAULT_TRAINERS
    return list(dict.fromkeys([*trainers, *(TABLE3_TRAINERS if table3 else [])]))


def default_embedding(trainers: list[str]) -> str:
    """The first non-CoSeg trainer (the paper embeds with a separately trained network), else :data:`FALLBACK_EMBEDDING`."""
    return next((t for t in trainers if not is_coseg(t)), FALLBACK_EMBEDDING)


def coseg_row_name(trainer: str, partners: int) -> str:
    """``<trainer>, P partner(s)``: the test-time partners change the row, not the model."""
    return f"{trainer}, {partners} partner{'s' if partners != 1 else ''}"


@functools.lru_cache(maxsize=None)
def trainer_attention(trainer: str) -> str | None:
    """CoSegNet ``coseg_attention`` of ``trainer`` (found as nnU-Net finds it); None for other trainers."""
    if not is_coseg(trainer):
        return None
    import contextlib
    import io
    import warnings

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the lookup's search log
        warnings.simplefilter("ignore")
        return recursive_find_trainer_class_by_name(trainer).coseg_attention


def table3_row(stats: dict) -> dict:
    """``{metric: (mean, std)}`` of :data:`TABLE3_METRICS` from one ``evaluate_folders`` ``per_prediction`` entry."""
    return {m: (stats["metrics"][m]["mean"], stats["metrics"][m]["std"]) for m in TABLE3_METRICS.values()}


def format_table3(rows: list[tuple[str, str | None, dict]]) -> str:
    """The co-segmentation paper's Table 3 layout: model, CA / SA / CSA, then mean +- std per metric.

    ``rows``: ``(name, attention or None, {metric: (mean, std)})``; a model without
    co-attention columns (not a co-seg trainer) shows blanks there, as the paper's
    non-attention rows of Table 1.
    """
    head = f"{'model':48s} {'CA':>4s} {'SA':>5s} {'CSA':>6s}" + "".join(f" {h:>13s}" for h in TABLE3_METRICS)
    lines = [head]
    for name, attention, values in rows:
        ca, sa, csa = TABLE3_COLUMNS[attention] if attention is not None else ("", "", "")
        cells = "".join(f" {values[m][0]:6.3f}±{values[m][1]:<6.3f}" for m in TABLE3_METRICS.values())
        lines.append(f"{name:48s} {ca:>4s} {sa:>5s} {csa:>6s}{cells}")
    return "\n".join(lines)


def print_table3(results: "Results", models: dict[str, Path], sample: Path, sidecar: Path, folder: Path) -> None:
    """Score each model row's prediction folder with ``ulseg evaluate``'s code (once, saved) and print Table 3."""
    from nnunet_ulseg.evaluation.evaluate import evaluate_folders

    rows = []
    for name, pred in models.items():
        if name not in results.table3:
            out = folder / pred.name
            result = evaluate_folders([pred], sample, sidecar, out, names=[name], split="test", plots=False)
            results.table3[name] = table3_row(result.summary["per_prediction"][name])
            results.save()
        rows.append((name, trainer_attention(name.split(",")[0]), results.table3[name]))
    if not rows:
        return
    print("\nco-segmentation paper Table 3 layout (test split, key slice; mean±std over lesions; ulseg evaluate's "
          "metrics: AVD = Taha & Hanbury, mm; VS = 1 - |FN - FP| / (2TP + FP + FN))")
    print(format_table3(rows), flush=True)


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
        #: row -> {metric: (mean, std)} of the Table 3 block (ulseg evaluate's metrics)
        self.table3: dict[str, dict] = {}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") != settings:
                raise SystemExit(f"{path} holds a run with settings {saved.get('settings')}, not {settings}; "
                                 f"use another --keep folder")
            self.rows, self.seconds = saved["rows"], saved["seconds"]
            self.per_lesion = saved.get("per_lesion", {})
            self.table3 = saved.get("table3", {})

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
                                   "per_lesion": self.per_lesion, "table3": self.table3}, indent=2))
        tmp.replace(self.path)


if __name__ == "__main__":
    main()
