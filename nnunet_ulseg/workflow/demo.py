"""``ulseg demo``: the whole weak-supervision pipeline on a generated sample, end to end.

Steps (each with real nnU-Net commands, as a user would run them):

1. write a DeepLesion-format sample with true masks (:func:`nnunet_ulseg.demo.make_sample`);
2. convert it to an nnU-Net raw dataset of RECIST-ellipse pseudo masks;
3. ``nnUNetv2_plan_and_preprocess -c 2d``;
4. ``ulseg refine``: round 1 trains a short-schedule trainer on the ellipses
   (``nnUNetv2_train``, fold 0 = the sample's own patient split); each later round
   predicts the training cases, rebuilds the labels as p∩e / ignore / background
   (AHRNet Sec. 2.3) and retrains; every round's model predicts the test split
   (``nnUNetv2_predict``) and the per-round table is printed;
5. paste every crop back into its key slice and score it against the true mask:
   (a) the ellipse pseudo masks themselves, (b) the trained model of each round;
6. ``ulseg evaluate`` on the same folders: metrics table, Dice histogram, gallery.

All of it lives under one folder (its own nnUNet_raw/_preprocessed/_results), so the
demo never touches a user's nnU-Net folders.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_ulseg.nnunet_layout import dataset_folder_name
from nnunet_ulseg.workflow.cli import DEFAULTS
from nnunet_ulseg.workflow.experiment import Experiment
from nnunet_ulseg.workflow.nnunet import NNUNetPaths, default_device
from nnunet_ulseg.workflow.slice_scores import score_folder

#: Written into the demo folder so ``--overwrite`` only ever deletes a folder the demo made.
MARKER = ".ulseg_demo"


@dataclass
class DemoConfig:
    out: Path = Path("ulseg_demo")
    lesions: int = 48
    seed: int = 0
    trainer: str = DEFAULTS["trainer"]
    rounds: int = DEFAULTS["rounds"]
    #: converter --crop-size (fixed crop side in px; None = 128..256)
    crop_size: int | None = DEFAULTS["crop_size"]
    #: RECIST-mark post-processing of the model's masks (nnunet_ulseg.postprocess.MODES)
    postprocess: str = DEFAULTS["postprocess"]
    #: schedule per round (ULSEG_SHORT_EPOCHS / _ITERATIONS; None = the trainer's own)
    epochs: int | None = DEFAULTS["epochs"]
    iterations: int | None = DEFAULTS["iterations"]
    dataset_id: int = 501
    device: str | None = None
    num_processes: int = 2
    #: mirroring TTA in the predictions (nnUNetv2_predict's default; ulseg demo --disable_tta)
    tta: bool = True
    overwrite: bool = False
    echo: bool = True

    @property
    def dataset_name(self) -> str:
        return dataset_folder_name(self.dataset_id, "DeepLesionDemo")


@dataclass
class DemoResult:
    out: Path
    ellipse: dict
    model: dict
    timings: dict[str, float] = field(default_factory=dict)
    per_round: dict[int, dict] = field(default_factory=dict)
    #: post-processing behind ``model`` ("none": the last round's raw masks)
    postprocess: str = "none"


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create ``out``; an existing non-empty folder is an error unless it is an old demo and ``overwrite``."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise FileExistsError(f"{out} exists, is not empty and was not made by ulseg demo; choose another --out")
        if not overwrite:
            raise FileExistsError(f"{out} holds an earlier demo; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by ulseg demo\n")


def run_demo(cfg: DemoConfig) -> DemoResult:
    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.refine import refine

    say = print if cfg.echo else (lambda *a, **k: None)
    out = Path(cfg.out).resolve()
    prepare_out_dir(out, cfg.overwrite)
    exp = Experiment(NNUNetPaths.under(out).create(), cfg.dataset_id, cfg.dataset_name, out / "nnunet.log",
                     device=cfg.device or default_device(), num_processes=cfg.num_processes,
                     echo=say if cfg.echo else None)
    timings: dict[str, float] = {}

    def step(name: str, n: int) -> float:
        say(f"[{n}/6] {name}")
        return time.perf_counter()

    t = step(f"writing a DeepLesion-format sample of {cfg.lesions} lesions (seed {cfg.seed})", 1)
    sample = make_sample(out / "deeplesion", n_lesions=cfg.lesions, seed=cfg.seed, progress=cfg.echo)
    timings["sample"] = time.perf_counter() - t

    t = step("converting RECIST marks to an nnU-Net dataset of ellipse pseudo masks", 2)
    conversion = exp.convert(sample, progress=cfg.echo, crop_size=cfg.crop_size)
    timings["convert"] = time.perf_counter() - t
    say("      " + conversion.summary().replace("\n", "\n      "))

    t = step("nnUNetv2_plan_and_preprocess (2d)", 3)
    exp.plan_and_preprocess()
    timings["plan_preprocess"] = time.perf_counter() - t

    t = step(f"ulseg refine: {cfg.rounds} round(s) of nnUNetv2_train -tr {cfg.trainer} on {exp.device}; "
             "round 1 learns from the ellipses, each later round from p∩e with (p∪e)−(p∩e) ignored", 4)
    with _short_schedule(cfg.epochs, cfg.iterations):
        result = refine(exp.dataset_id, cfg.trainer, paths=exp.paths, echo=exp.echo, rounds=cfg.rounds,
                        truth=sample, device=exp.device, num_processes=cfg.num_processes, fold=0, tta=cfg.tta)
    timings["train_refine"] = time.perf_counter() - t
    predictions = {r: result.work_dir / f"round{r}" / "test_predictions" for r in range(1, cfg.rounds + 1)}

    t = step("scoring the test split in slice geometry against the true masks", 5)
    sidecar = exp.raw / "lesions.csv"
    ellipse = score_folder(exp.raw / "pseudolabelsTs", sidecar, sample, split="test")
    rounds = {r: score_folder(p, sidecar, sample, split="test") for r, p in predictions.items()}
    marked = (score_folder(predictions[cfg.rounds], sidecar, sample, split="test", postprocess=cfg.postprocess)
              if cfg.postprocess != "none" else None)
    timings["score"] = time.perf_counter() - t

    t = step("ulseg evaluate: per-lesion metrics, RECIST axes in mm, plots", 6)
    evaluation = evaluate_demo(exp, sample, predictions, out / "evaluation")
    timings["evaluate"] = time.perf_counter() - t

    final = marked or rounds[cfg.rounds]
    demo = DemoResult(out, ellipse, final, timings, {r: v["summary"] for r, v in rounds.items()},
                      postprocess=cfg.postprocess if marked else "none")
    (out / "demo_summary.json").write_text(json.dumps(
        {"ellipse_pseudo_masks": ellipse["summary"], "model": final["summary"], "postprocess": demo.postprocess,
         "model_per_round": {str(r): v["summary"] for r, v in rounds.items()}, "trainer": cfg.trainer,
         "crop_size": cfg.crop_size, "device": exp.device, "timings_s": timings}, indent=2))
    say(evaluation.table)
    say("  plots and tables: " + ", ".join(str(p) for p in evaluation.files.values()))
    say(format_result(demo, cfg.trainer))
    return demo


@contextmanager
def _short_schedule(epochs: int | None, iterations: int | None):
    """Set ``ULSEG_SHORT_EPOCHS``/``_ITERATIONS`` for the nnU-Net subprocesses, then restore them."""
    names = {"ULSEG_SHORT_EPOCHS": epochs, "ULSEG_SHORT_ITERATIONS": iterations}
    old = {k: os.environ.get(k) for k in names}
    try:
        for k, v in names.items():
            if v is not None:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate_demo(exp: Experiment, sample: Path, predictions: dict[int, Path], out_dir: Path):
    """``ulseg evaluate`` on each round's model and on the ellipse pseudo masks, the sample's true masks as
    reference, read in key-slice geometry (no crop round trip)."""
    from nnunet_ulseg.evaluation.evaluate import evaluate_folders

    sidecar = exp.raw / "lesions.csv"
    return evaluate_folders([*predictions.values(), exp.raw / "pseudolabelsTs"], sample, sidecar, out_dir,
                            names=[f"round {r}" for r in predictions] + ["ellipse"], split="test",
                            images_dir=exp.raw / "imagesTs", ref_format="sample")


def format_result(result: DemoResult, trainer: str) -> str:
    rows = [("(a) RECIST ellipse pseudo masks", result.ellipse["summary"])]
    last = max(result.per_round) if result.per_round else None
    for r, summary in sorted(result.per_round.items()):
        tag = "(b) " if r == last and result.postprocess == "none" else "    "
        rows.append((f"{tag}nnU-Net model, round {r} ({trainer})", summary))
    if result.postprocess != "none":
        rows.append((f"(b) round {last} + RECIST-mark post-processing ({result.postprocess})", result.model["summary"]))
    width = max(len(name) for name, _ in rows)
    lines = ["", "Dice on the test split, key slice, original geometry, vs. true masks:",
             f"  {'':{width}s} {'n':>4s} {'mean':>7s} {'std':>7s} {'median':>7s} {'worst':>7s}"]
    for name, s in rows:
        lines.append(f"  {name:{width}s} {s['n']:4d} {s['mean']:7.4f} {s['std']:7.4f} {s['median']:7.4f} {s['min']:7.4f}")
    gain = 100 * (result.model["summary"]["mean"] - result.ellipse["summary"]["mean"])
    verdict = "better than" if gain > 0 else "worse than" if gain < 0 else "equal to"
    lines.append(f"  (b) is {abs(gain):.1f} Dice points {verdict} the RECIST ellipses it learned from "
                 f"(worst case {result.model['summary']['min']:.3f} vs {result.ellipse['summary']['min']:.3f}).")
    total = sum(result.timings.values())
    lines.append(f"  time: {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()) + ")")
    lines.append(f"  outputs: {result.out}")
    return "\n".join(lines)
