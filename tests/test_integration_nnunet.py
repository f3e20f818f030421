"""Integration: the real nnUNetv2_* commands, as subprocesses, on a tiny converted sample.

One generated DeepLesion-format sample is converted once; nnU-Net plans and
preprocesses it; each of our short-schedule trainers is found through
``nnUNet_extTrainer``, trains one epoch (a few iterations), writes a checkpoint and
runs nnU-Net's final validation; ``nnUNetv2_predict`` then segments the test split
with a trained checkpoint.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script
from nnunet_ulseg.workflow.slice_scores import read_crop_mask

pytestmark = pytest.mark.integration

DATASET_ID = 987
DATASET = f"Dataset{DATASET_ID}_ULSegIntegration"


def _run(args, env, timeout=900):
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("nnunet_it")
    sample = make_sample(root / "deeplesion", n_lesions=14, seed=3, progress=False)
    paths = NNUNetPaths.under(root).create()
    raw = paths.raw / DATASET
    convert_deeplesion(sample, raw, num_processes=2, progress=False)
    (paths.preprocessed / DATASET).mkdir(parents=True)
    shutil.copy2(raw / "splits_final.json", paths.preprocessed / DATASET / "splits_final.json")
    env = paths.environ(num_processes=2)
    _run([console_script("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", "2d", "-np", "2",
          "--verify_dataset_integrity"], env)
    return {"root": root, "paths": paths, "env": env, "raw": raw, "sample": sample}


def _results(planned, trainer) -> Path:
    return planned["paths"].results / DATASET / f"{trainer}__nnUNetPlans__2d" / "fold_0"


@pytest.mark.parametrize("trainer", ["nnUNetTrainerULSeg_1epochs", "nnUNetTrainerBCEIoU_1epochs",
                                     "nnUNetTrainerLS_1epochs", "nnUNetTrainerRLS_1epochs",
                                     "nnUNetTrainerAHRNetRLS_1epochs"])
def test_train_one_epoch_writes_checkpoint_and_validation(planned, trainer):
    _run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", trainer, "-device", "cpu"],
         planned["env"])
    fold = _results(planned, trainer)
    assert (fold / "checkpoint_final.pth").exists()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])
    # nnU-Net used our patient-level split (fold 0 = the sample's Train_Val_Test 1/2)
    splits = json.loads((planned["raw"] / "splits_final.json").read_text())
    assert sorted(p.name.replace(".mha", "") for p in (fold / "validation").glob("*.mha")) == \
        sorted(splits[0]["val"])
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    if trainer != "nnUNetTrainerULSeg_1epochs":
        assert "train components: bce" in log
    if "RLS" in trainer or "LS_" in trainer:
        assert "regional level set loss switched on" in log
        rls = float(log.split("train components:")[1].split("rls")[1].split()[0])
        assert rls > 0
    if "AHRNet" in trainer:
        assert "network: AHRNet +DE+DA+SA (row 4), HRNet w32" in log
        assert "training from scratch" in log


@pytest.mark.parametrize("trainer", ["nnUNetTrainerRLS_1epochs", "nnUNetTrainerAHRNetRLS_1epochs"])
def test_predict_test_split(planned, trainer):
    if not (_results(planned, trainer) / "checkpoint_final.pth").exists():
        _run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", trainer, "-device", "cpu"],
             planned["env"])
    out = planned["root"] / f"pred_{trainer}"
    images = planned["raw"] / "imagesTs"
    _run([console_script("nnUNetv2_predict"), "-i", images, "-o", out, "-d", DATASET_ID, "-c", "2d", "-f", "0",
          "-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], planned["env"])
    cases = sorted(p.name[: -len("_0000.mha")] for p in images.glob("*_0000.mha"))
    assert cases, "the sample has no test cases"
    for case in cases:
        pred = read_crop_mask(out / f"{case}.mha")
        image = read_crop_mask(images / f"{case}_0000.mha")
        assert pred.shape == image.shape
        assert set(np.unique(pred)) <= {0, 1}


def test_ulseg_demo_cli_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "nnunet_ulseg.cli", "demo", "--out", str(out), "--lesions", "12", "--seed", "5",
         "--trainer", "nnUNetTrainerULSeg_1epochs", "--rounds", "1", "--device", "cpu", "--epochs", "1",
         "--iterations", "2", "--postprocess", "mark"],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(a) RECIST ellipse pseudo masks" in proc.stdout
    assert "nnU-Net model, round 1" in proc.stdout
    assert "(b) round 1 + RECIST-mark post-processing (mark)" in proc.stdout
    assert "Dice points" in proc.stdout and "the RECIST ellipses it learned from" in proc.stdout
    assert "Dice by type" in proc.stdout and "gallery.png" in proc.stdout
    summary = json.loads((out / "demo_summary.json").read_text())
    assert 0.3 < summary["ellipse_pseudo_masks"]["mean"] <= 1.0
    assert 0.0 <= summary["model"]["mean"] <= 1.0
    assert summary["postprocess"] == "mark" and summary["crop_size"] == 64
    # a second run into the same folder is refused without --overwrite
    again = subprocess.run([sys.executable, "-m", "nnunet_ulseg.cli", "demo", "--out", str(out)],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert again.returncode == 2 and "--overwrite" in again.stderr
