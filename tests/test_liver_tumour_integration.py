"""``ulseg liver-tumour`` (E²Net Sec. 2-3, issue 14 item 4): paste-back by hand, then the real chain.

Unit tests (fast): both stages as hand-made threshold rules on a hand-made volume, so the expected
label volume is known voxel for voxel: a liver box whose padded side is exactly the crop size comes
back exactly; another size comes back up to a pixel at the edges and never outside the box; a
false-positive blob in stage 1 does not move the box (largest 3D component); an empty stage 1 gives
an all-background volume, a warning and a count; the written volume keeps an oblique geometry.

Integration (``-m integration``): a generated LiTS-format sample -> ``convert-lits`` -> the real
``nnUNetv2_plan_and_preprocess`` for both datasets -> ``nnUNetv2_train`` stage 1 and stage 2
(E²Net, one short epoch, found through ``nnUNet_extTrainer``) -> ``ulseg liver-tumour`` on the test
volume: a 3D 0/1/2 label volume in the input's geometry exactly.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.conversion.lits import normalise
from nnunet_ulseg.workflow.liver_tumour import (CASES_CSV, EmptyLiverWarning, cases_csv_name, find_volumes,
                                                largest_component, output_name, part_of, run_liver_tumour, two_stage)

LIVER_HU, TUMOUR_HU, AIR_HU = 60.0, -40.0, -1000.0
# window-normalised thresholds: air -1, tumour (-40 - 70) / 170 = -0.65, liver -0.06
T_ANY, T_LIVER = -0.9, -0.35


def stage1_rule(image, spacing):
    """Hand-made stage 1: liver (with tumour) = anything denser than air."""
    return (image > T_ANY).astype(np.uint8)


def stage2_rule(image, spacing):
    """Hand-made stage 2 on the crop: 1 liver, 2 tumour (darker than the liver, denser than air)."""
    out = (image > T_ANY).astype(np.uint8)
    out[(image > T_ANY) & (image < T_LIVER)] = 2
    return out


def phantom(shape=(5, 300, 310), liver=(1, 4, 40, 226, 60, 246), tumour=(2, 3, 100, 120, 90, 130)):
    """HU volume and its 0/1/2 truth: a liver block with a tumour block inside, air elsewhere."""
    hu = np.full(shape, AIR_HU, np.float32)
    label = np.zeros(shape, np.uint8)
    z0, z1, y0, y1, x0, x1 = liver
    hu[z0:z1, y0:y1, x0:x1], label[z0:z1, y0:y1, x0:x1] = LIVER_HU, 1
    z0, z1, y0, y1, x0, x1 = tumour
    hu[z0:z1, y0:y1, x0:x1], label[z0:z1, y0:y1, x0:x1] = TUMOUR_HU, 2
    return hu, label


def test_box_of_exactly_the_crop_size_comes_back_exactly():
    hu, truth = phantom()  # liver 186 x 186 px + 2 x 35 px pad = 256: no resizing
    seen = {}

    def stage2(image, spacing):
        seen["shape"], seen["spacing"] = image.shape, tuple(spacing)
        return stage2_rule(image, spacing)

    case = two_stage(hu, (0.7, 0.8, 2.5), stage1_rule, stage2, pad=35, size=256, normalisation1="window",
                     normalisation2="window")
    assert seen == {"shape": (3, 256, 256), "spacing": (1.0, 1.0, 2.5)}  # liver slices only, nominal spacing
    assert (case.box.z0, case.box.z1, case.box.y0, case.box.y1, case.box.x0, case.box.x1) == (1, 4, 40, 226, 60, 246)
    assert case.status == "ok" and case.labels.dtype == np.uint8
    np.testing.assert_array_equal(case.labels, truth)
    assert case.liver_voxels == int((truth > 0).sum()) and case.tumour_voxels == int((truth == 2).sum())


def test_resized_box_is_within_a_pixel_and_never_outside_the_box():
    hu, truth = phantom(shape=(4, 160, 170), liver=(0, 3, 30, 110, 20, 120), tumour=(1, 2, 50, 70, 40, 70))
    case = two_stage(hu, (0.8, 0.8, 5.0), stage1_rule, stage2_rule, pad=10, size=256, normalisation1="window",
                     normalisation2="window")
    # box 80 + 20 = 100 rows, 100 + 20 = 120 columns -> upsampled to 256; nearest back: within a pixel
    for value in (1, 2):
        a, b = case.labels == value, truth == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97
        diff = a ^ b
        if diff.any():
            from scipy import ndimage

            assert ndimage.distance_transform_edt(~(b ^ ndimage.binary_erosion(b)))[diff].max() <= 1.0
    outside = np.ones(truth.shape, bool)
    outside[0:3, 20:120, 10:130] = False  # the padded box
    assert not case.labels[outside].any()


def test_false_positive_blob_does_not_move_the_box_and_is_dropped():
    hu, truth = phantom()
    hu[2, 280:284, 290:294] = LIVER_HU  # a 16-voxel blob far from the liver
    case = two_stage(hu, (1, 1, 1), stage1_rule, stage2_rule, pad=35, size=256, normalisation1="window",
                     normalisation2="window")
    assert case.stage1_voxels == int((truth > 0).sum()) + 16
    assert case.liver_component_voxels == int((truth > 0).sum())
    np.testing.assert_array_equal(case.labels, truth)


def test_ct_normalisation_is_what_each_stage_gets():
    hu, truth = phantom()
    got = []

    def stage(image, spacing):
        got.append(image.copy())
        return (image > -500).astype(np.uint8)

    two_stage(hu, (1, 1, 1), stage, stage, pad=35, size=256, normalisation1="ct", normalisation2="ct")
    np.testing.assert_array_equal(got[0], normalise(hu, "ct").astype(np.float32))
    assert got[1].shape == (3, 256, 256) and set(np.unique(got[1])) == {-1000.0, -40.0, 60.0}


def test_empty_stage1_gives_background_without_calling_stage2():
    hu, _ = phantom()

    def stage2(image, spacing):
        raise AssertionError("stage 2 must not run without a liver")

    case = two_stage(hu, (1, 1, 1), lambda im, sp: np.zeros(im.shape, np.uint8), stage2, 35, 256, "window", "window")
    assert case.status == "empty_liver" and case.box is None and not case.labels.any()
    assert case.labels.shape == hu.shape


def test_largest_component_is_26_connected():
    m = np.zeros((3, 6, 6), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True  # diagonal chain: one 26-connected object
    m[0, 5, 5] = m[0, 5, 4] = True  # two voxels apart
    np.testing.assert_array_equal(largest_component(m), m & ~(np.arange(6)[None, None, :] >= 4))
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


def test_names_and_input_folders(tmp_path):
    assert output_name("a/volume-12.nii.gz") == "segmentation-12"
    assert output_name("scan_7.nrrd") == "scan_7" and output_name("ct.mha") == "ct"
    for name in ("volume-10.nii", "volume-2.nii", "segmentation-2.nii", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_volumes(tmp_path)] == ["volume-2.nii", "volume-10.nii"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.mha").write_bytes(b"")
    (other / "a.nii.gz").write_bytes(b"")
    assert [p.name for p in find_volumes(other)] == ["a.nii.gz", "b.mha"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no volume files"):
        find_volumes(tmp_path / "empty")


def test_parts_cover_every_volume_once():
    volumes = [f"v{i}" for i in range(7)]
    parts = [part_of(volumes, 3, i) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(volumes) and parts[1] == ["v1", "v4"]
    assert cases_csv_name() == CASES_CSV and cases_csv_name(3, 1) == "liver_tumour_cases_part1of3.csv"
    with pytest.raises(ValueError, match="part_id"):
        part_of(volumes, 2, 2)


def test_command_names_the_missing_model(tmp_path, monkeypatch, capsys):
    from nnunet_ulseg.cli import main

    for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(v, str(tmp_path / v))
    (tmp_path / "nnUNet_results" / "Dataset931_BenchLiver").mkdir(parents=True)
    (tmp_path / "volume-1.nii").write_bytes(b"")
    rc = main(["liver-tumour", "-i", str(tmp_path / "volume-1.nii"), "-o", str(tmp_path / "out"), "--stage1", "931",
               "--stage2", "932"])
    err = capsys.readouterr().err
    assert rc == 2 and "Dataset931_BenchLiver/nnUNetTrainerR2UNetLiver__nnUNetPlans__2d: no dataset.json" in err


@dataclass
class RuleStage:
    """A stage with :class:`StageModel`'s interface whose prediction is a hand-made rule (not nnU-Net)."""

    predict: object
    folder: Path
    dataset_json: dict
    normalisation: str = "window"


def _write(path, array, spacing, origin, direction):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def test_run_writes_label_volumes_in_the_input_geometry_and_counts_empty_livers(tmp_path):
    hu, truth = phantom()
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0)  # oblique in-plane, flipped z
    geometry = ((0.7, 0.8, 2.5), (-120.5, 33.25, 610.0), direction)
    _write(tmp_path / "volume-3.nii.gz", hu.astype(np.int16), *geometry)
    _write(tmp_path / "volume-4.nii.gz", np.full(hu.shape, -1000, np.int16), *geometry)  # no liver
    stage1 = RuleStage(stage1_rule, tmp_path, {})
    stage2 = RuleStage(stage2_rule, tmp_path, {"test_pad": 35, "crop_size": 256})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_liver_tumour(find_volumes(tmp_path), tmp_path / "out", stage1, stage2, save_stage1=True,
                                  progress=False)
    assert [str(w.message) for w in caught if issubclass(w.category, EmptyLiverWarning)] == \
        [f"{tmp_path / 'volume-4.nii.gz'}: stage 1 found no liver; segmentation-4.nii.gz is all background"]
    assert result.empty_liver == 1 and [r["status"] for r in result.rows] == ["ok", "empty_liver"]
    source = sitk.ReadImage(str(tmp_path / "volume-3.nii.gz"))
    for name, expected in (("segmentation-3", truth), ("segmentation-4", np.zeros_like(truth)),
                           ("stage1/segmentation-3", (truth > 0).astype(np.uint8))):
        out = sitk.ReadImage(str(tmp_path / "out" / f"{name}.nii.gz"))
        assert out.GetSize() == source.GetSize() and out.GetSpacing() == source.GetSpacing()
        assert out.GetOrigin() == source.GetOrigin() and out.GetDirection() == source.GetDirection()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected)
    with open(tmp_path / "out" / CASES_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["status"], r["box_y0"], r["pad"]) for r in rows] == \
        [("segmentation-3", "ok", "40", "35"), ("segmentation-4", "empty_liver", "", "")]
    assert int(rows[0]["tumour_voxels"]) == int((truth == 2).sum())


def test_a_128_px_converted_dataset_is_cut_and_pasted_back_as_convert_lits_cut_it(tmp_path):
    """``convert-lits --crop-size 128 --test-pad 14`` writes ``crop_size``/``test_pad`` into the stage-2
    dataset.json; liver-tumour reads them and cuts the test volume into exactly the converter's
    ``imagesTs`` crop (same box, pad, size, values), then pastes the label back within a pixel."""
    from nnunet_ulseg.conversion.lits import convert_lits, read_cases, stage_folders
    from nnunet_ulseg.workflow.liver_tumour import stage2_crop_settings

    hu, truth = phantom(shape=(4, 160, 170), liver=(0, 3, 30, 110, 20, 120), tumour=(1, 2, 50, 70, 40, 70))
    lits = tmp_path / "lits"
    lits.mkdir()
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    _write(lits / "volume-0.nii", hu.astype(np.int16), (0.8, 0.8, 5.0), (0.0, 0.0, 0.0), identity)
    _write(lits / "segmentation-0.nii", truth, (0.8, 0.8, 5.0), (0.0, 0.0, 0.0), identity)
    out1, out2 = stage_folders(tmp_path / "raw", 641)
    convert_lits(lits, out1, out2, val_fraction=0.0, test_fraction=0.9, test_pad=14, crop_size=128, progress=False)
    dataset_json = json.loads((out2 / "dataset.json").read_text())
    assert stage2_crop_settings(dataset_json, "dataset.json") == (14, 128)
    (ref,) = read_cases(out2 / "lits_cases.csv").values()
    assert ref.split == "test" and ref.crop_size == 128
    seen = []

    def stage2(image, spacing):
        seen.append(image.copy())
        return stage2_rule(image, spacing)

    run_liver_tumour([lits / "volume-0.nii"], tmp_path / "out", RuleStage(stage1_rule, out1, {}),
                     RuleStage(stage2, out2, dataset_json), progress=False)
    converted = sitk.GetArrayFromImage(sitk.ReadImage(str(out2 / "imagesTs" / "LiTS_0000_0000.mha")))
    assert seen[0].shape == converted.shape == (3, 128, 128)
    np.testing.assert_array_equal(seen[0], converted)  # the converter's own test crop
    with open(tmp_path / "out" / CASES_CSV, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert tuple(int(row[f"box_{k}"]) for k in ("z0", "z1", "y0", "y1", "x0", "x1")) == \
        (ref.box_z0, ref.box_z1, ref.box_y0, ref.box_y1, ref.box_x0, ref.box_x1) == (0, 3, 30, 110, 20, 120)
    assert row["pad"] == "14"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "segmentation-0.nii.gz")))
    # box 80 + 28 = 108 rows -> 128 (nearest back: within a pixel), 100 + 28 = 128 columns (no resizing)
    from scipy import ndimage

    for value in (1, 2):
        a, b = labels == value, truth == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97
        diff = a ^ b
        if diff.any():
            assert ndimage.distance_transform_edt(~(b ^ ndimage.binary_erosion(b)))[diff].max() <= 1.0
    outside = np.ones(truth.shape, bool)
    outside[0:3, 16:124, 6:134] = False  # the padded box
    assert not labels[outside].any()


# ---------------------------------------------------------------------------------------------- integration
STAGE1_ID = 971
STAGE1_TRAINER = "nnUNetTrainerR2UNetLiverLite_1epochs"
STAGE2_TRAINER = "nnUNetTrainerE2Net_1epochs"


def _run(args, env, timeout=600):
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


@pytest.mark.integration
def test_two_stage_command_end_to_end(tmp_path):
    from nnunet_ulseg.conversion.lits import stage_folders
    from nnunet_ulseg.demo.lits import make_lits_sample
    from nnunet_ulseg.nnunet_layout import NNUNetPaths
    from nnunet_ulseg.workflow.nnunet import console_script

    sample = make_lits_sample(tmp_path / "lits", n_cases=3, seed=2, image_size=96, progress=False)
    paths = NNUNetPaths.under(tmp_path).create()
    env = paths.environ(num_processes=1)
    env.update(ULSEG_NUM_THREADS="1", OMP_NUM_THREADS="1")
    ulseg = [sys.executable, "-m", "nnunet_ulseg.cli"]
    _run([*ulseg, "convert-lits", "-i", sample, "-o", paths.raw, "-d", STAGE1_ID, "--pad", "4", "12",
          "--test-pad", "8", "--quiet"], env)
    d1, d2 = stage_folders(paths.raw, STAGE1_ID)
    _run([console_script("nnUNetv2_plan_and_preprocess"), "-d", STAGE1_ID, STAGE1_ID + 1, "-c", "2d", "-np", "1",
          "--verify_dataset_integrity"], env)
    for dataset, trainer in ((STAGE1_ID, STAGE1_TRAINER), (STAGE1_ID + 1, STAGE2_TRAINER)):
        _run([console_script("nnUNetv2_train"), dataset, "2d", "0", "-tr", trainer, "-device", "cpu"], env)
        assert (paths.results / (d1 if dataset == STAGE1_ID else d2).name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
                / "checkpoint_final.pth").is_file()
    test_case = next((d1 / "imagesTs").glob("*_0000.mha")).name[: -len("_0000.mha")]
    number = int(test_case.split("_")[1])
    volume = sample / f"volume-{number}.nii"
    out = tmp_path / "pred"
    log = _run([*ulseg, "liver-tumour", "-i", volume, "-o", out, "--stage1", STAGE1_ID, "--stage2", STAGE1_ID + 1,
                "-tr1", STAGE1_TRAINER, "-tr2", STAGE2_TRAINER, "-f", "0", "-device", "cpu", "--disable_tta",
                "--quiet"], env)
    assert "liver-tumour: 1 volumes" in log
    source = sitk.ReadImage(str(volume))
    pred = sitk.ReadImage(str(out / f"segmentation-{number}.nii.gz"))
    assert pred.GetSize() == source.GetSize() and pred.GetSpacing() == source.GetSpacing()
    assert pred.GetOrigin() == source.GetOrigin() and pred.GetDirection() == source.GetDirection()
    assert set(np.unique(sitk.GetArrayFromImage(pred)).tolist()) <= {0, 1, 2}
    with open(out / CASES_CSV, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] in ("ok", "empty_liver") and row["input"] == str(volume)
    if row["status"] == "ok":
        assert row["pad"] == "8"  # the stage-2 dataset's test pad, read from the model's dataset.json
