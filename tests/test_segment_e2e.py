"""End to end: ``ulseg segment`` through the CLI with a 1-epoch nnU-Net model on a CT volume built from a generated sample.

A tiny DeepLesion-format sample is converted with 32 px crops, planned and trained one
epoch (two iterations) with ``nnUNetTrainerULSeg_1epochs``; one series' PNGs are stacked
into a NIfTI volume with the row's spacing, its DL_info rows become a marks CSV (1-based
DeepLesion coordinates shifted to 0-based voxels, slice index = PNG number - first PNG),
and ``ulseg segment`` writes the label volume and measurements.  The Dice against the
sample's true key-slice mask is printed (the model is far from trained; it is reported,
not asserted beyond being a number).
"""
from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg import cli
from nnunet_ulseg.evaluation.references.sample import TrueMasks
from nnunet_ulseg.recist import Recist, parse_numbers
from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script

pytestmark = pytest.mark.integration

DATASET_ID = 986
DATASET = f"Dataset{DATASET_ID}_ULSegSegmentE2E"
TRAINER = "nnUNetTrainerULSeg_1epochs"


def _run(args, env):
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _series_volume(sample: Path, out: Path):
    """The NIfTI of the first series with a key slice, and its DL_info rows (line number, row)."""
    rows = list(csv.DictReader(open(sample / "DL_info.csv", newline="")))
    first = rows[0]
    folder = first["File_name"].rsplit("_", 1)[0]
    lo, hi = (int(v) for v in parse_numbers(first["Slice_range"], 2, "Slice_range"))
    pngs = [cv2.imread(str(sample / "Images_png" / folder / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED) for i in
            range(lo, hi + 1)]
    hu = np.stack(pngs).astype(np.int32) - 32768
    sx, sy, sz = parse_numbers(first["Spacing_mm_px_"], 3, "Spacing_mm_px_")
    img = sitk.GetImageFromArray(hu.astype(np.int16))
    img.SetSpacing((float(sx), float(sy), float(sz)))
    sitk.WriteImage(img, str(out))
    mine = [(n, r) for n, r in enumerate(rows, start=2) if r["File_name"].rsplit("_", 1)[0] == folder
            and lo <= int(r["Key_slice_index"]) <= hi]
    return lo, mine


def test_segment_cli_with_a_trained_model(tmp_path, capsys):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    sample = make_sample(tmp_path / "sample", n_lesions=8, seed=2, image_size=128, progress=False)
    paths = NNUNetPaths.under(tmp_path).create()
    raw = paths.raw / DATASET
    convert_deeplesion(sample, raw, num_processes=1, progress=False, crop_size=32)
    (paths.preprocessed / DATASET).mkdir(parents=True)
    shutil.copy2(raw / "splits_final.json", paths.preprocessed / DATASET / "splits_final.json")
    env = paths.environ(num_processes=1)
    _run([console_script("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", "2d", "-np", "1"], env)
    _run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", TRAINER, "-device", "cpu"], env)

    ct = tmp_path / "ct.nii.gz"
    first, rows = _series_volume(sample, ct)
    with open(tmp_path / "marks.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "recist", "slice", "space"])
        for n, r in rows:
            pts = Recist.from_deeplesion(r["Measurement_coordinates"]).points.ravel()
            w.writerow([f"dl{n}", ",".join(f"{v:.4f}" for v in pts), int(r["Key_slice_index"]) - first, "voxel"])
    model = paths.model_dir(DATASET, TRAINER)
    rc = cli.main(["segment", "-i", str(ct), "--marks", str(tmp_path / "marks.csv"), "-o", str(tmp_path / "out"),
                   "-m", str(model), "-f", "0", "-device", "cpu", "--disable_tta"])
    assert rc == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "ct.nii.gz")))
    ref = sitk.ReadImage(str(ct))
    assert labels.shape == sitk.GetArrayFromImage(ref).shape
    records = list(csv.DictReader(open(tmp_path / "out" / "measurements.csv")))
    assert [r["lesion_id"] for r in records] == [f"dl{n}" for n, _ in rows]
    truth = TrueMasks(sample)
    for (n, r), rec in zip(rows, records):
        k = int(r["Key_slice_index"]) - first
        pred = labels[k] == int(rec["label"])
        true = truth.mask(n, r["File_name"])
        dice = 2 * (pred & true).sum() / max(1, pred.sum() + true.sum())
        assert 0.0 <= dice <= 1.0 and rec["qa_flag"] in ("0", "1")
        print(f"segment e2e {rec['lesion_id']}: Dice {dice:.3f} long {rec['long_mm']} mm "
              f"(RECIST {float(rec['recist_long_mm']):.1f} mm) qa {rec['qa_flag']} {rec['status']}")
