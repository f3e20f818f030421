"""End to end: ``ulseg segment`` through the CLI with a 1-epoch nnU-Net model on CT volumes built from a generated sample.

Every test reuses the session's one tiny model (``tiny_model``, ``tests/tiny_model.py``: a
DeepLesion-format sample of 8 lesions with 32 px crops, planned and trained one epoch (two
iterations) with ``nnUNetTrainerULSeg_1epochs`` by nnU-Net's API in-process); a module fixture
stacks the sample's sub-volumes into NIfTI volumes with a marks manifest (``ulseg
sample-volumes``), once as the baseline and once with every lesion shrunk to 60 % (the
follow-up).  How the model was trained is not what these tests check (nnU-Net's console
scripts are ``tests/test_integration_nnunet.py``'s); ``ulseg segment`` loads it like any
``nnUNetv2_train`` result folder:

* ``-m FOLDER`` on one volume with a marks CSV: label volume in the CT's geometry, one
  measurement row per mark; the Dice against the true mask is printed (the model is far
  from trained: reported, not asserted beyond being a number);
* ``-d/-tr/-c/-f`` finds the same folder under ``nnUNet_results`` and gives the same
  bytes; a wrong trainer is an error naming the folder;
* ``--recist``/``--box`` with ``--space world`` on an oblique copy of the volume give the
  voxel-for-voxel result of the voxel marks on the original (the crop is cut from the
  same stored slice at the same place);
* ``--manifest`` over every volume, with one bad mark row that is skipped and counted;
* ``ulseg response`` on the baseline's and follow-up's ``measurements.csv``: the marks
  shrank by 40 %, a partial response.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg import cli
from nnunet_ulseg.evaluation.response import CATEGORIES, SOURCES
from nnunet_ulseg.segment.measurements import COLUMNS
from tiny_model import DATASET_ID, TRAINER

pytestmark = pytest.mark.integration

SHRINK = 0.6
FAST = ["-f", "0", "-device", "cpu", "--disable_tta"]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """``(root, paths, model folder, baseline volumes folder, follow-up volumes folder)``."""
    root = tmp_path_factory.mktemp("segment_e2e")
    for name, factor in (("t0", 1.0), ("t1", SHRINK)):
        assert cli.main(["sample-volumes", "-i", str(tiny_model.sample), "-o", str(root / name), "--shrink",
                         str(factor), "--no-progress"]) == 0
    return root, tiny_model.paths, tiny_model.model_dir, root / "t0", root / "t1"


def _manifest(folder: Path) -> list[dict]:
    return list(csv.DictReader(open(folder / "manifest.csv", newline="")))


def _first_volume(folder: Path) -> tuple[Path, list[dict]]:
    rows = _manifest(folder)
    return folder / rows[0]["ct"], [r for r in rows if r["name"] == rows[0]["name"]]


def _records(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "measurements.csv", newline="")))


def _labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _segment(*args) -> int:
    return cli.main(["segment", *[str(a) for a in args]])


def test_segment_cli_with_a_trained_model(trained, tmp_path):
    _, _, model, t0, _ = trained
    ct, rows = _first_volume(t0)
    marks = tmp_path / "marks.csv"
    with open(marks, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["lesion_id", "recist", "slice", "space"])
        w.writeheader()
        w.writerows({k: r[k] for k in w.fieldnames} for r in rows)
    out = tmp_path / "out"
    assert _segment("-i", ct, "--marks", marks, "-o", out, "-m", model, *FAST) == 0
    name = rows[0]["name"]
    image, ref = sitk.ReadImage(str(out / f"{name}.nii.gz")), sitk.ReadImage(str(ct))
    assert image.GetSize() == ref.GetSize() and image.GetSpacing() == ref.GetSpacing()
    assert image.GetOrigin() == ref.GetOrigin() and image.GetDirection() == ref.GetDirection()
    records = _records(out)
    assert [r["lesion_id"] for r in records] == [r["lesion_id"] for r in rows]
    assert set(COLUMNS) <= set(records[0])
    labels, truth = sitk.GetArrayFromImage(image), _labels(t0 / f"{name}_truth.nii.gz")
    for n, (row, rec) in enumerate(zip(rows, records), start=1):
        k = int(row["slice"])
        pred, true = labels[k] == int(rec["label"]), truth[k] == n
        dice = 2 * (pred & true).sum() / max(1, pred.sum() + true.sum())
        assert 0.0 <= dice <= 1.0 and rec["qa_flag"] in ("0", "1")
        print(f"segment e2e {rec['lesion_id']}: Dice {dice:.3f} long {rec['long_mm']} mm "
              f"(RECIST {float(rec['recist_long_mm']):.1f} mm) qa {rec['qa_flag']} {rec['status']}")


def test_model_lookup_by_dataset_and_trainer_matches_the_folder(trained, tmp_path, monkeypatch):
    _, paths, model, t0, _ = trained
    ct, rows = _first_volume(t0)
    mark = ["--recist", rows[0]["recist"], "--slice", rows[0]["slice"], "--lesion-id", "a"]
    assert _segment("-i", ct, *mark, "-o", tmp_path / "by_folder", "-m", model, *FAST) == 0
    for variable, value in paths.environ().items():
        if variable.startswith("nnUNet_"):
            monkeypatch.setenv(variable, value)
    lookup = ["-d", DATASET_ID, "-tr", TRAINER, "-c", "2d"]
    assert _segment("-i", ct, *mark, "-o", tmp_path / "by_name", *lookup, *FAST) == 0
    name = rows[0]["name"]
    a, b = _labels(tmp_path / "by_folder" / f"{name}.nii.gz"), _labels(tmp_path / "by_name" / f"{name}.nii.gz")
    assert np.array_equal(a, b)
    assert (tmp_path / "by_folder" / "measurements.csv").read_text() == \
        (tmp_path / "by_name" / "measurements.csv").read_text()
    assert _segment("-i", ct, *mark, "-o", tmp_path / "wrong", "-d", DATASET_ID, "-tr", "nnUNetTrainerNoSuch",
                    "-c", "2d", *FAST) == 2


def _oblique_copy(ct: Path, out: Path) -> Path:
    """The same voxels under a rotated, flipped direction and a shifted origin."""
    image = sitk.ReadImage(str(ct))
    axis, angle = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5]), math.radians(25)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    direction = rotation @ np.diag([-1.0, 1.0, 1.0])
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((-120.5, 35.25, 880.0))
    sitk.WriteImage(image, str(out))
    return out


def test_world_marks_and_boxes_on_the_command_line(trained, tmp_path):
    _, _, model, t0, _ = trained
    ct, rows = _first_volume(t0)
    oblique = _oblique_copy(ct, tmp_path / "oblique.nii.gz")
    image = sitk.ReadImage(str(oblique))
    k = int(rows[0]["slice"])
    pts = np.array([float(v) for v in rows[0]["recist"].split(",")]).reshape(4, 2)

    def world(points):
        return ",".join(f"{c:.6f}" for p in points for c in image.TransformContinuousIndexToPhysicalPoint(
            [float(p[0]), float(p[1]), float(k)]))

    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box = ",".join(f"{v:.4f}" for v in (*lo, *hi))
    runs = {
        "recist_voxel": ("-i", ct, "--recist", rows[0]["recist"], "--slice", k),
        "recist_world": ("-i", oblique, "--recist", world(pts), "--space", "world"),
        "box_voxel": ("-i", ct, "--box", box, "--slice", k),
        "box_world": ("-i", oblique, "--box", world([lo, hi]), "--space", "world"),
    }
    for name, args in runs.items():
        assert _segment(*args, "--name", "ct", "-o", tmp_path / name, "-m", model, *FAST) == 0, name
    for kind in ("recist", "box"):
        voxel, wld = (_records(tmp_path / f"{kind}_{s}")[0] for s in ("voxel", "world"))
        assert voxel["mark"] == wld["mark"] == kind and voxel["slice"] == wld["slice"] == str(k)
        for column in ("recist_long_mm", "recist_short_mm", "long_mm", "short_mm", "area_mm2"):
            assert float(voxel[column] or 0) == pytest.approx(float(wld[column] or 0), abs=1e-3), (kind, column)
        a, b = _labels(tmp_path / f"{kind}_voxel" / "ct.nii.gz"), _labels(tmp_path / f"{kind}_world" / "ct.nii.gz")
        assert np.array_equal(a, b), kind
        out = sitk.ReadImage(str(tmp_path / f"{kind}_world" / "ct.nii.gz"))
        assert np.allclose(out.GetDirection(), image.GetDirection()) and out.GetOrigin() == image.GetOrigin()
    sx, sy, _ = image.GetSpacing()
    box = _records(tmp_path / "box_voxel")[0]
    sides = sorted(((hi[0] - lo[0]) * sx, (hi[1] - lo[1]) * sy), reverse=True)
    assert [float(box["recist_long_mm"]), float(box["recist_short_mm"])] == pytest.approx(sides, abs=1e-3)


def test_manifest_batch_skips_and_counts_a_bad_row(trained, tmp_path, capsys):
    _, _, model, t0, _ = trained
    rows = [dict(r, ct=str(t0 / r["ct"])) for r in _manifest(t0)]
    bad = dict(rows[0], lesion_id="bad", slice="999")
    manifest = tmp_path / "manifest_with_bad_row.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([rows[0], bad, *rows[1:]])
    names = list(dict.fromkeys(r["name"] for r in rows))
    assert len(names) >= 2
    capsys.readouterr()
    assert _segment("--manifest", manifest, "-o", tmp_path / "out", "-m", model, *FAST) == 0
    printed = capsys.readouterr().out
    assert f"{len(rows)} lesions in {len(names)} scans (1 mark rows skipped" in printed
    assert "line 3: slice 999 outside" in printed
    records = _records(tmp_path / "out")
    assert [(r["scan"], r["lesion_id"]) for r in records] == [(r["name"], r["lesion_id"]) for r in rows]
    for name in names:
        labels = _labels(tmp_path / "out" / f"{name}.nii.gz")
        assert labels.shape == _labels(t0 / f"{name}.nii.gz").shape
    assert _segment("--manifest", manifest, "-o", tmp_path / "strict", "-m", model, "--strict", *FAST) == 2


def test_response_from_two_segmented_time_points(trained, tmp_path, capsys):
    _, _, model, t0, t1 = trained
    for name, folder in (("base", t0), ("follow", t1)):
        assert _segment("--manifest", folder / "manifest.csv", "-o", tmp_path / name, "-m", model, *FAST) == 0
    base, follow = tmp_path / "base" / "measurements.csv", tmp_path / "follow" / "measurements.csv"
    header = next(csv.reader(open(base)))
    for long_col, short_col in SOURCES.values():
        assert {long_col, short_col, "lesion_id", "lymph_node"} <= set(header)
    assert cli.main(["response", str(base), str(follow), "-o", str(tmp_path / "response.csv")]) == 0
    table = {r["source"]: r for r in csv.DictReader(open(tmp_path / "response.csv"))}
    assert set(table) == {"marks", "masks"}
    before = sum(float(r["recist_long_mm"]) for r in _records(tmp_path / "base"))
    after = sum(float(r["recist_long_mm"]) for r in _records(tmp_path / "follow"))
    assert float(table["marks"]["sum_mm"]) == pytest.approx(after, abs=0.01)
    assert float(table["marks"]["change_from_baseline_pct"]) == pytest.approx(100 * (SHRINK - 1), abs=0.01)
    assert after == pytest.approx(SHRINK * before, rel=1e-4)
    assert table["marks"]["category"] == "PR"
    assert table["masks"]["category"] in CATEGORIES
    print(f"response e2e: marks {table['marks']['category']} ({table['marks']['reason']}), "
          f"masks {table['masks']['category']} ({table['masks']['reason']})")
