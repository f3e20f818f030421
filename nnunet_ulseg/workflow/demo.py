"""``ulseg demo``: the whole weak-supervision pipeline on a generated sample, end to end.

Steps (each with real nnU-Net commands, as a user would run them):

1. write a DeepLesion-format sample with true masks (:func:`nnunet_ulseg.demo.make_sample`);
2. convert it to an nnU-Net raw dataset of RECIST-ellipse pseudo masks;
3. ``nnUNetv2_plan_and_preprocess -c 2d``;
4. ``nnUNetv2_train`` with a short-schedule trainer (fold 0 = the sample's own patient split);
5. ``nnUNetv2_predict`` on the test split;
6. paste every crop back into its key slice and score it against the true mask:
   (a) the ellipse pseudo masks themselves, (b) the trained model.

All of it lives under one folder (its own nnUNet_raw/_preprocessed/_results), so the
demo never touches a user's nnU-Net folders.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    trainer: str = "nnUNetTrainerULSeg_10epochs"
    dataset_id: int = 501
    device: str | None = None
    num_processes: int = 2
    overwrite: bool = False
    echo: bool = True

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_DeepLesionDemo"


@dataclass
class DemoResult:
    out: Path
    ellipse: dict
    model: dict
    timings: dict[str, float] = field(default_factory=dict)


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

    say = print if cfg.echo else (lambda *a, **k: None)
    out = Path(cfg.out).resolve()
    prepare_out_dir(out, cfg.overwrite)
    exp = Experiment(NNUNetPaths.under(out).create(), cfg.dataset_id, cfg.dataset_name, out / "nnunet.log",
                     device=cfg.device or default_device(), num_processes=cfg.num_processes,
                     echo=say if cfg.echo else None)
    timings: dict[str, float] = {}

    def step(name: str, n: int) -> float:
        say(f"[{n}/7] {name}")
        return time.perf_counter()

    t = step(f"writing a DeepLesion-format sample of {cfg.lesions} lesions (seed {cfg.seed})", 1)
    sample = make_sample(out / "deeplesion", n_lesions=cfg.lesions, seed=cfg.seed, progress=cfg.echo)
    timings["sample"] = time.perf_counter() - t

    t = step("converting RECIST marks to an nnU-Net dataset of ellipse pseudo masks", 2)
    conversion = exp.convert(sample, progress=cfg.echo)
    timings["convert"] = time.perf_counter() - t
    say("      " + conversion.summary().replace("\n", "\n      "))

    t = step("nnUNetv2_plan_and_preprocess (2d)", 3)
    exp.plan_and_preprocess()
    timings["plan_preprocess"] = time.perf_counter() - t

    t = step(f"nnUNetv2_train {cfg.dataset_id} 2d 0 -tr {cfg.trainer} -device {exp.device}", 4)
    exp.train(cfg.trainer)
    timings["train"] = time.perf_counter() - t

    t = step("nnUNetv2_predict on the test split" + ("" if exp.device == "cuda" else " (no mirroring TTA on CPU)"), 5)
    pred_dir = out / "predictions" / cfg.trainer
    exp.predict(cfg.trainer, exp.raw / "imagesTs", pred_dir)
    timings["predict"] = time.perf_counter() - t

    t = step("scoring in slice geometry against the true masks", 6)
    sidecar = exp.raw / "lesions.csv"
    ellipse = score_folder(exp.raw / "pseudolabelsTs", sidecar, sample, split="test")
    model = score_folder(pred_dir, sidecar, sample, split="test")
    timings["score"] = time.perf_counter() - t

    t = step("ulseg evaluate: per-lesion metrics, RECIST axes in mm, plots", 7)
    evaluation = evaluate_demo(exp, sample, pred_dir, out / "evaluation", cfg.trainer)
    timings["evaluate"] = time.perf_counter() - t

    result = DemoResult(out, ellipse, model, timings)
    (out / "demo_summary.json").write_text(json.dumps(
        {"ellipse_pseudo_masks": ellipse["summary"], "model": model["summary"], "trainer": cfg.trainer,
         "device": exp.device, "timings_s": timings}, indent=2))
    say(evaluation.table)
    say("  plots and tables: " + ", ".join(str(p) for p in evaluation.files.values()))
    say(format_result(result, cfg.trainer))
    return result


def evaluate_demo(exp: Experiment, sample: Path, pred_dir: Path, out_dir: Path, trainer: str):
    """``ulseg evaluate`` on the model and on the ellipse pseudo masks, with the true masks as reference."""
    from nnunet_ulseg.evaluation.evaluate import evaluate_folders
    from nnunet_ulseg.evaluation.references import write_reference_crops

    sidecar = exp.raw / "lesions.csv"
    truth = out_dir.parent / "truthTs"
    write_reference_crops(sample, sidecar, truth, split="test")
    return evaluate_folders([pred_dir, exp.raw / "pseudolabelsTs"], truth, sidecar, out_dir,
                            names=[trainer, "ellipse"], split="test", images_dir=exp.raw / "imagesTs")


def format_result(result: DemoResult, trainer: str) -> str:
    rows = [("(a) RECIST ellipse pseudo masks", result.ellipse["summary"]),
            (f"(b) nnU-Net model ({trainer})", result.model["summary"])]
    width = max(len(name) for name, _ in rows)
    lines = ["", "Dice on the test split, key slice, original geometry, vs. true masks:",
             f"  {'':{width}s} {'n':>4s} {'mean':>7s} {'std':>7s} {'median':>7s} {'worst':>7s}"]
    for name, s in rows:
        lines.append(f"  {name:{width}s} {s['n']:4d} {s['mean']:7.4f} {s['std']:7.4f} {s['median']:7.4f} {s['min']:7.4f}")
    total = sum(result.timings.values())
    lines.append(f"  time: {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()) + ")")
    lines.append(f"  outputs: {result.out}")
    return "\n".join(lines)
