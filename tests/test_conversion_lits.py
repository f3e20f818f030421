"""Tests of the LiTS converter (``nnunet_ulseg.conversion.lits``, E²Net Sec. 2-3 two stages).

A generated 4-case LiTS-format sample is converted once per module (window
normalisation) and the two datasets are checked: nnU-Net's own integrity check, the
region labels nnU-Net reads, the stage-1 geometry and labels, the crop box around the
whole liver with its recorded pad, the paste-back round trip, the window values; then the
crop geometry on hand-made arrays, CT normalisation, bad cases, strict mode, the output
guard and the command.  One integration test runs ``nnUNetv2_plan_and_preprocess`` on both.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.conversion.lits import (
    CROP_SIZE,
    TEST_PAD,
    TRAIN_PAD,
    LiverBox,
    assign_splits,
    convert_lits,
    crop_label,
    liver_box,
    nearest_index,
    normalise,
    paste_back,
    read_cases,
    stage_folders,
)
from nnunet_ulseg.conversion.report import ConversionError
from nnunet_ulseg.demo.lits import make_lits_sample

N_CASES = 4


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_lits_sample(tmp_path_factory.mktemp("lits_src") / "LiTS", N_CASES, seed=1, progress=False)


@pytest.fixture(scope="module")
def converted(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("lits_raw")
    out1, out2 = stage_folders(root, 611)
    result = convert_lits(sample, out1, out2, val_fraction=0.25, test_fraction=0.25, seed=3, progress=False)
    return result, out1, out2


def test_split_and_files(converted):
    result, out1, out2 = converted
    assert out1.name == "Dataset611_LiTSLiver" and out2.name == "Dataset612_LiTSTumour"
    assert len(result.rows) == N_CASES and not result.issues
    splits = {r.case: r.split for r in result.rows}
    assert sorted(splits.values()) == ["test", "train", "train", "val"]
    for out in (out1, out2):
        fold = json.loads((out / "splits_final.json").read_text())
        assert fold == [{"train": sorted(c for c, s in splits.items() if s == "train"),
                         "val": [c for c, s in splits.items() if s == "val"]}]
    test_case = next(c for c, s in splits.items() if s == "test")
    assert (out1 / "imagesTs" / f"{test_case}_0000.mha").is_file()
    assert (out1 / "referencesTs" / f"{test_case}.mha").is_file()
    assert (out2 / "labelsTs" / f"{test_case}.mha").is_file()
    assert not (out1 / "labelsTr" / f"{test_case}.mha").exists()


def test_nnunet_accepts_both_datasets(converted, monkeypatch):
    from nnunetv2.experiment_planning import verify_dataset_integrity as verify
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_inprocess import ThreadPools

    monkeypatch.setattr(verify, "multiprocessing", ThreadPools)  # nnU-Net's label check in a thread, not a spawn
    _, out1, out2 = converted
    for out in (out1, out2):
        verify.verify_dataset_integrity(str(out), num_processes=1)  # raises on any problem
    d2 = json.loads((out2 / "dataset.json").read_text())
    assert d2["labels"] == {"background": 0, "liver": [1, 2], "tumour": 2} and d2["regions_class_order"] == [1, 2]
    lm = LabelManager(d2["labels"], d2["regions_class_order"])
    assert lm.has_regions and lm.foreground_regions == [(1, 2), 2]
    d1 = json.loads((out1 / "dataset.json").read_text())
    assert d1["labels"] == {"background": 0, "liver": [1, 2]} and d1["regions_class_order"] == [1] and d1["channel_names"] == {"0": "noNorm"}
    assert d2["channel_names"] == {"0": "noNorm"}
    for d in (d1, d2):
        assert d["file_ending"] == ".mha" and d["numTraining"] == 3 and d["numTest"] == 1


def test_stage1_keeps_geometry_and_merges_tumour(sample, converted):
    result, out1, _ = converted
    for r in result.rows:
        vol = sitk.ReadImage(r.volume)
        folder = "imagesTs" if r.split == "test" else "imagesTr"
        img = sitk.ReadImage(str(out1 / folder / f"{r.case}_0000.mha"))
        assert img.GetSize() == vol.GetSize() and img.GetSpacing() == vol.GetSpacing()
        assert np.allclose(img.GetOrigin(), vol.GetOrigin())
        hu = sitk.GetArrayFromImage(vol)
        assert np.array_equal(sitk.GetArrayFromImage(img), normalise(hu, "window"))
        seg = _arr(r.segmentation)
        if r.split == "test":  # the LiTS reference itself, for evaluate-lits
            assert np.array_equal(_arr(out1 / "referencesTs" / f"{r.case}.mha"), seg)
        else:
            assert np.array_equal(_arr(out1 / "labelsTr" / f"{r.case}.mha"), (seg > 0).astype(np.uint8))


def test_window_values():
    hu = np.array([-3000, -100, -15, 70, 155, 240, 3000], dtype=np.int16)
    assert np.allclose(normalise(hu, "window"), [-1, -1, -0.5, 0, 0.5, 1, 1])
    assert normalise(hu, "window").dtype == np.float32
    assert np.array_equal(normalise(np.array([-0.6, 12.4, 40000.0]), "ct"), np.array([-1, 12, 32767], np.int16))
    with pytest.raises(ValueError, match="normalisation"):
        normalise(hu, "zscore")


def test_crop_box_holds_the_whole_liver_with_recorded_pad(converted):
    result, _, out2 = converted
    rows = read_cases(out2 / "lits_cases.csv")
    assert set(rows) == {r.case for r in result.rows}
    for case, r in rows.items():
        seg = _arr(r.segmentation)
        liver = seg > 0
        b = r.box
        inside = np.zeros_like(liver)
        inside[b.z0:b.z1, b.y0:b.y1, b.x0:b.x1] = True
        assert not (liver & ~inside).any()  # the whole liver is in the box
        for axis in range(3):  # and the box is tight: the liver touches each of its faces
            profile = liver.any(axis=tuple(a for a in range(3) if a != axis))
            lo, hi = (b.z0, b.z1) if axis == 0 else (b.y0, b.y1) if axis == 1 else (b.x0, b.x1)
            assert profile[lo] and profile[hi - 1]
        if r.split == "test":
            assert r.pad == TEST_PAD
        else:
            assert TRAIN_PAD[0] <= r.pad <= TRAIN_PAD[1]
            assert r.pad == int(np.random.default_rng([3, r.number]).integers(TRAIN_PAD[0], TRAIN_PAD[1] + 1))
        assert np.isclose(r.scale_x, CROP_SIZE / (b.x1 - b.x0 + 2 * r.pad))
        folder = "imagesTs" if r.split == "test" else "imagesTr"
        img = _arr(out2 / folder / f"{case}_0000.mha")
        assert img.shape == (b.z1 - b.z0, CROP_SIZE, CROP_SIZE) and img.min() >= -1 and img.max() <= 1
        spacing = sitk.ReadImage(str(out2 / folder / f"{case}_0000.mha")).GetSpacing()
        assert spacing[:2] == (1.0, 1.0) and np.isclose(spacing[2], r.spacing_z)  # nominal in-plane spacing


def test_paste_back_round_trip(converted):
    result, _, out2 = converted
    rows = read_cases(out2 / "lits_cases.csv")
    for case, r in rows.items():
        seg = _arr(r.segmentation)
        crop = _arr(out2 / ("labelsTs" if r.split == "test" else "labelsTr") / f"{case}.mha")
        assert set(np.unique(crop).tolist()) <= {0, 1, 2}
        back = paste_back(crop, r.box, r.shape)
        b = r.box
        outside = np.ones(seg.shape, dtype=bool)
        outside[b.z0:b.z1, max(b.crop_y[0], 0):b.crop_y[1], max(b.crop_x[0], 0):b.crop_x[1]] = False
        assert not back[outside].any()
        for value in (1, 2):  # nearest down- and up-sampling moves edges by at most a pixel
            ref, got = seg >= value, back >= value
            if ref.sum() > 200:
                dice = 2 * (ref & got).sum() / (ref.sum() + got.sum())
                assert dice > 0.93, (case, value, dice)


def test_paste_back_exact_without_resizing():
    rng = np.random.default_rng(0)
    label = np.zeros((5, 300, 310), dtype=np.uint8)
    label[1:4, 30:266, 40:276] = 1  # 236 x 236 box + 2 x 10 pad = 256: no resizing
    label[1:4, 30:266, 40:276][rng.random((3, 236, 236)) < 0.3] = 2
    box = liver_box(label > 0, pad=10)
    assert (box.z0, box.z1, box.y0, box.y1, box.x0, box.x1) == (1, 4, 30, 266, 40, 276)
    assert box.scale == (1.0, 1.0)
    crop = crop_label(label, box)
    assert crop.shape == (3, 256, 256)
    assert np.array_equal(paste_back(crop, box, label.shape), label)


def test_crop_outside_the_volume_and_nearest_index():
    assert nearest_index(4, 2).tolist() == [0, 0, 1, 1]
    assert nearest_index(2, 4).tolist() == [1, 3]  # pixel centres: output 0 covers input [0, 2), centre 1
    assert nearest_index(3, 3).tolist() == [0, 1, 2]
    label = np.zeros((1, 8, 8), dtype=np.uint8)
    label[0, 0:2, 0:4] = 1  # liver at the corner: the padded box reaches outside
    box = liver_box(label > 0, pad=2, size=8)
    assert box.crop_y == (-2, 4) and box.crop_x == (-2, 6)
    crop = crop_label(label, box)
    assert crop.shape == (1, 8, 8)
    assert np.array_equal(paste_back(crop, box, label.shape), label)
    with pytest.raises(ValueError, match="no liver"):
        liver_box(np.zeros((2, 3, 3), bool), 5)
    with pytest.raises(ValueError, match="does not match"):
        paste_back(np.zeros((1, 4, 4), np.uint8), box, label.shape)


def test_assign_splits():
    s = assign_splits(list(range(20)), 0.15, 0.2, seed=0)
    assert sorted(s) == list(range(20))
    assert list(s.values()).count("test") == 4 and list(s.values()).count("val") == 3
    assert s == assign_splits(list(range(20)), 0.15, 0.2, seed=0)
    assert s != assign_splits(list(range(20)), 0.15, 0.2, seed=1)
    assert list(assign_splits([1, 2, 3], 0.01, 0.0, 0).values()).count("val") == 1  # fold 0 needs a val case
    with pytest.raises(ValueError, match="< 1"):
        assign_splits([1, 2], 0.5, 0.5, 0)


def test_ct_normalisation(sample, tmp_path):
    out1, out2 = stage_folders(tmp_path, 700)
    result = convert_lits(sample, out1, out2, normalisation="ct", test_fraction=0.0, val_fraction=0.25,
                          progress=False)
    r = result.rows[0]
    d1, d2 = (json.loads((o / "dataset.json").read_text()) for o in (out1, out2))
    assert d1["channel_names"] == d2["channel_names"] == {"0": "CT"}
    img = _arr(out1 / "imagesTr" / f"{r.case}_0000.mha")
    assert img.dtype == np.int16 and np.array_equal(img, _arr(r.volume))
    crop = _arr(out2 / "imagesTr" / f"{r.case}_0000.mha")
    assert crop.dtype == np.int16 and crop.min() >= -1024


def _write(path, array, spacing=(0.8, 0.8, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_bad_cases_skipped_counted_and_strict(sample, tmp_path):
    src = tmp_path / "LiTS"
    shutil.copytree(sample, src)
    batch = src / "Training Batch 2"  # LiTS's own sub-folders are searched
    batch.mkdir()
    hu = np.zeros((3, 16, 16), np.int16)
    seg = np.zeros((3, 16, 16), np.uint8)
    seg[1, 4:8, 4:8] = 1
    _write(batch / "volume-7.nii", hu)  # no segmentation-7
    _write(batch / "volume-8.nii", hu)
    _write(batch / "segmentation-8.nii", (seg * 5).astype(np.uint8))  # label 5
    _write(batch / "volume-9.nii", hu)
    _write(batch / "segmentation-9.nii", seg[:2])  # other size
    _write(batch / "volume-10.nii", hu)
    _write(batch / "segmentation-10.nii", seg, spacing=(0.8, 0.8, 3.0))  # other spacing
    _write(batch / "volume-11.nii", hu)
    _write(batch / "segmentation-11.nii", np.zeros_like(seg))  # no liver
    (batch / "volume-12.nii").write_bytes(b"not a nifti")
    _write(batch / "segmentation-12.nii", seg)
    _write(batch / "segmentation-13.nii", seg)  # no volume-13
    out1, out2 = stage_folders(tmp_path / "raw", 711)
    result = convert_lits(src, out1, out2, test_fraction=0.2, progress=False)
    assert len(result.rows) == N_CASES
    assert result.skipped == {"missing_segmentation": 1, "bad_label_values": 1, "size_mismatch": 1,
                              "geometry_mismatch": 1, "no_liver": 1, "unreadable_volume": 1, "missing_volume": 1}
    with open(out1 / "conversion_report.csv", newline="") as f:
        report = {int(r["number"]): r for r in csv.DictReader(f)}
    assert report[8]["status"] == "skipped" and report[8]["reason"] == "bad_label_values"
    assert "segmentation-8.nii" in report[8]["file"] and report[0]["status"] == "converted"
    for n in range(7, 14):  # a skipped case leaves no file behind
        assert not list(out1.rglob(f"LiTS_{n:04d}*")) and not list(out2.rglob(f"LiTS_{n:04d}*"))
    assert "skipped 7 cases" in result.summary()
    s1, s2 = stage_folders(tmp_path / "strict", 711)
    with pytest.raises(ConversionError, match="LiTS case 7"):
        convert_lits(src, s1, s2, strict=True, progress=False)


def test_output_guard(sample, tmp_path):
    out1, out2 = stage_folders(tmp_path, 720)
    convert_lits(sample, out1, out2, progress=False)
    before = (out2 / "dataset.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_lits(sample, out1, out2, progress=False)
    assert (out2 / "dataset.json").read_bytes() == before
    convert_lits(sample, out1, out2, overwrite=True, seed=5, progress=False)
    with pytest.raises(ValueError, match="inside the LiTS folder"):
        convert_lits(sample, sample / "x1", sample / "x2", progress=False)
    assert sorted(p.name for p in sample.iterdir() if p.name.startswith("x")) == []


def test_command(sample, tmp_path, capsys, monkeypatch):
    from nnunet_ulseg.cli import main

    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert main(["convert-lits", "-i", str(sample), "-o", str(tmp_path), "--quiet", "--pad", "2", "4",
                 "--test-pad", "3"]) == 0
    rows = read_cases(tmp_path / "Dataset511_LiTSLiver" / "lits_cases.csv")
    assert all((2 <= r.pad <= 4) if r.split != "test" else r.pad == 3 for r in rows.values())
    assert (tmp_path / "Dataset512_LiTSTumour" / "dataset.json").is_file()
    assert main(["convert-lits", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.integration
def test_nnunet_plan_and_preprocess_stage2(sample, tmp_path):
    """The region-labelled stage-2 dataset through nnU-Net's plan and preprocess, 2d (2 training cases).

    Stage 1 is a plain nnU-Net dataset (checked by verify_dataset_integrity above); the
    stage-2 regions and nominal spacing are what nnU-Net could refuse or resample.  The steps
    of ``nnUNetv2_plan_and_preprocess -d 614 -c 2d -np 1`` run through nnU-Net's API in this
    process with thread pools (``tests/nnunet_inprocess.py``): the same planner and
    preprocessor, without three interpreter start-ups (about 50 s of this test's 57 s).
    """
    from nnunet_inprocess import plan_and_preprocess
    from nnunet_ulseg.nnunet_layout import NNUNetPaths

    paths = NNUNetPaths.under(tmp_path).create()
    out1, out2 = stage_folders(paths.raw, 613)
    convert_lits(sample, out1, out2, val_fraction=0.25, test_fraction=0.5, progress=False, train_pad=(3, 6),
                 test_pad=4)
    shutil.copy2(out2 / "splits_final.json", (paths.preprocessed / out2.name).mkdir() or
                 paths.preprocessed / out2.name / "splits_final.json")
    assert plan_and_preprocess(paths, [614], configurations=("2d",)) == "nnUNetPlans"
    pre2 = paths.preprocessed / out2.name
    plans = json.loads((pre2 / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"]["spacing"] == [1.0, 1.0]  # nominal crop spacing: no resampling
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["NoNormalization"]
    assert len(list((pre2 / "nnUNetPlans_2d").glob("*_seg.b2nd"))) == 2


def test_crop_size_128_changes_only_the_stage2_crop_size(sample, converted, tmp_path, monkeypatch):
    """``convert-lits --crop-size 128`` (a CPU budget choice): the same split, boxes and pads and the
    same stage 1 as the default 256 px run; only the stage-2 crops are 128 x 128, recorded in the
    sidecar and in dataset.json, and they paste back into the volume's grid."""
    from nnunet_ulseg.cli import main

    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert main(["convert-lits", "-i", str(sample), "-o", str(tmp_path), "-d", "621", "--val-fraction", "0.25",
                 "--test-fraction", "0.25", "--seed", "3", "--crop-size", "128", "--quiet"]) == 0
    result256, out1_256, out2_256 = converted
    out1, out2 = stage_folders(tmp_path, 621)
    d2 = json.loads((out2 / "dataset.json").read_text())
    assert d2["crop_size"] == 128 and "resized in-plane to 128x128" in d2["description"]
    assert json.loads((out2_256 / "dataset.json").read_text())["crop_size"] == CROP_SIZE == 256
    assert "crop_size" not in json.loads((out1 / "dataset.json").read_text())
    rows, rows256 = read_cases(out2 / "lits_cases.csv"), read_cases(out2_256 / "lits_cases.csv")
    assert read_cases(out1 / "lits_cases.csv") == rows and set(rows) == set(rows256)
    for case, r in rows.items():
        r256 = rows256[case]
        assert r.crop_size == 128 and r256.crop_size == 256
        assert (r.split, r.pad, r.box.crop_y, r.box.crop_x, r.box.z0, r.box.z1) == \
            (r256.split, r256.pad, r256.box.crop_y, r256.box.crop_x, r256.box.z0, r256.box.z1)
        b = r.box
        assert np.isclose(r.scale_x, 128 / (b.x1 - b.x0 + 2 * r.pad)) and np.isclose(r.scale_x, r256.scale_x / 2)
        assert np.isclose(r.scale_y, 128 / (b.y1 - b.y0 + 2 * r.pad))
        test = r.split == "test"
        img = _arr(out2 / ("imagesTs" if test else "imagesTr") / f"{case}_0000.mha")
        crop = _arr(out2 / ("labelsTs" if test else "labelsTr") / f"{case}.mha")
        assert img.shape == crop.shape == (b.z1 - b.z0, 128, 128) and img.min() >= -1 and img.max() <= 1
        stage1 = ("imagesTs" if test else "imagesTr", f"{case}_0000.mha"), \
            ("referencesTs" if test else "labelsTr", f"{case}.mha")
        for folder, name in stage1:  # stage 1 does not depend on the crop size
            assert np.array_equal(_arr(out1 / folder / name), _arr(out1_256 / folder / name))
        seg = _arr(r.segmentation)
        back = paste_back(crop, b, r.shape)
        outside = np.ones(seg.shape, dtype=bool)
        outside[b.z0:b.z1, max(b.crop_y[0], 0):b.crop_y[1], max(b.crop_x[0], 0):b.crop_x[1]] = False
        assert not back[outside].any()
        if max(r.scale_x, r.scale_y) <= 1:
            # the box is larger than 128 px (most of the sample's): paste-back upsamples by nearest
            # pixel centres and re-cropping hits each crop pixel's own centre, so the crop returns exactly
            assert np.array_equal(crop_label(back, b), crop), case
        for value in (1, 2):  # downsampled boxes (scale 0.7-0.9 here) lose a pixel row here and there
            ref, got = seg >= value, back >= value
            if ref.sum() > 200:
                assert 2 * (ref & got).sum() / (ref.sum() + got.sum()) > 0.93, (case, value)


def test_crop_size_must_be_a_multiple_of_32(sample, tmp_path, capsys):
    from nnunet_ulseg.conversion.lits import CROP_DIVISOR, check_crop_size
    from nnunet_ulseg.networks.r2unet import SIZE_DIVISOR

    assert CROP_DIVISOR == SIZE_DIVISOR == 32  # the crop is the stage-2 network's whole 2d patch
    assert (check_crop_size(32), check_crop_size(128), check_crop_size(256.0)) == (32, 128, 256)
    for bad in (100, 0, -32, 64.5, "abc", None):
        with pytest.raises(ValueError, match="multiple of 32|whole number"):
            check_crop_size(bad)
    out1, out2 = stage_folders(tmp_path / "raw", 631)
    with pytest.raises(ValueError, match="multiple of 32"):
        convert_lits(sample, out1, out2, crop_size=100, progress=False)
    assert not (tmp_path / "raw").exists()  # refused before anything is written
    from nnunet_ulseg.cli import main

    assert main(["convert-lits", "-i", str(sample), "-o", str(tmp_path / "cli"), "--crop-size", "120", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ulseg convert-lits: error: crop size must be a positive multiple of 32 px" in err and "got 120" in err
    assert not (tmp_path / "cli").exists()
