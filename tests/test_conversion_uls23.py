"""ULS23 VOIs -> nnU-Net weak-label dataset (convert_uls23) on a generated ULS23-format sample."""
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import pdist

from uls23_fixtures import REAL, SPACING, Lesion, ellipsoid, uls23_sample
from nnunet_ulseg.conversion.geometry import PAD_HU, CropBox, crop_hu_slice, crop_png_to_hu, crop_to_slice
from nnunet_ulseg.conversion.report import ConversionError
from nnunet_ulseg.conversion.sidecar import paste_back, read_sidecar
from nnunet_ulseg.conversion.uls23 import convert_uls23, read_uls23_report, read_volumes
from nnunet_ulseg.conversion.uls23_names import CASE_ID_BASE, VOI_ID_BASE, number_patients, parse_voi_name
from nnunet_ulseg.conversion.uls23_splits import assign_patient_splits
from nnunet_ulseg.conversion.uls23_voi import choose_key_slice, derive_recist, labelled_slices
from nnunet_ulseg.recist import Recist, ellipse_mask

NAME = "Dataset502_ULS23"
SCRIPT = Path(__file__).resolve().parents[1] / "dataset_conversion" / "Dataset502_ULS23.py"


def tree_hash(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def axis_px(points, k: int) -> float:
    p = points[4 * k: 4 * k + 4]
    return math.hypot(p[2] - p[0], p[3] - p[1])


def pixel_centre_truth(mask: np.ndarray) -> tuple[float, float]:
    """Long and short axis (px) between pixel centres, computed independently of the converter.

    Long: the largest distance between two foreground pixel centres (scipy pdist).  Short:
    the longest chord of the pixel centres' convex hull exactly perpendicular to that axis,
    sampled densely along it (a rasterised ellipse is convex).
    """
    from scipy.spatial import ConvexHull, distance

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(float)
    d = distance.squareform(pdist(pts))
    i, j = np.unravel_index(np.argmax(d), d.shape)
    u = (pts[j] - pts[i]) / d[i, j]
    n = np.array([-u[1], u[0]])
    hull = pts[ConvexHull(pts).vertices]
    edges = list(zip(hull, np.roll(hull, -1, axis=0)))
    best = 0.0
    for t in np.linspace((pts @ u).min(), (pts @ u).max(), 3001):
        cuts = [(a + (t - a @ u) / ((b - a) @ u) * (b - a)) @ n for a, b in edges
                if (a @ u - t) * (b @ u - t) <= 0 and (b - a) @ u != 0]
        if len(cuts) >= 2:
            best = max(best, max(cuts) - min(cuts))
    return float(d[i, j]), best


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The sample (with faults and the real-shape VOI) converted once: 2 workers, 1 context slice per side."""
    root = tmp_path_factory.mktemp("uls23")
    sample = uls23_sample(root / "ULS23")
    before = tree_hash(root / "ULS23")
    out = root / "raw" / NAME
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(root / "pre"))
        result = convert_uls23(sample["images"], sample["labels"], out, num_processes=2, context=1, progress=False)
    rows = {r.File_name: r for r in read_sidecar(out / "lesions.csv")}
    return {"root": root, "sample": sample, "out": out, "result": result, "before": before, "rows": rows}


def converted_lesions(converted):
    return [(converted["rows"][f], lesion) for f, lesion in converted["sample"]["lesions"].items() if not lesion.skip]


def test_every_good_voi_converted_and_every_bad_one_reported(converted):
    result, lesions = converted["result"], converted["sample"]["lesions"]
    assert set(converted["rows"]) == {f for f, l in lesions.items() if not l.skip}
    assert {i.file_name: i.reason for i in result.issues} == {f: l.skip for f, l in lesions.items() if l.skip}
    report = {r["File_name"]: r for r in read_uls23_report(converted["out"] / "conversion_report.csv")}
    assert set(report) == set(lesions)  # one row per VOI
    for f, lesion in lesions.items():
        assert report[f]["status"] == ("skipped" if lesion.skip else "converted")
        assert report[f]["reason"] == (lesion.skip or "")
    # dl_row is the VOI's line in conversion_report.csv, in the sidecar too
    lines = (converted["out"] / "conversion_report.csv").read_text().splitlines()
    for f, row in converted["rows"].items():
        assert lines[row.dl_row - 1].startswith(f"{row.dl_row},{f},")
    summary = result.summary()
    assert "converted 8 lesions" in summary and "empty_label: 1" in summary and "shape_mismatch: 1" in summary
    assert "partially annotated VOIs (converted): 1" in summary


def test_derived_axes_within_one_pixel_of_the_drawn_ellipse(converted):
    """Acceptance: the RECIST axes derived from each label are within 1 px of the label's true axes.

    True axes: the drawn cross-section's diameters where the whole ellipse lies inside the
    VOI, and, for every VOI, the label's axes between pixel centres computed independently.
    """
    checked = 0
    for row, lesion in converted_lesions(converted):
        long_px, short_px = axis_px(row.recist_slice, 0), axis_px(row.recist_slice, 1)
        true_long, true_short = pixel_centre_truth(ellipsoid(lesion)[lesion.key_slice])
        assert abs(long_px - true_long) <= 1e-6, row.File_name  # ULS23's long axis is exactly this
        assert abs(short_px - true_short) <= 1.0, row.File_name
        if lesion.analytic:
            drawn_long, drawn_short = lesion.true_axes_px()
            assert abs(long_px - drawn_long) <= 1.0, (row.File_name, long_px, drawn_long)
            assert abs(short_px - drawn_short) <= 1.0, (row.File_name, short_px, drawn_short)
            checked += 1
        # the mark is perpendicular and lies on the lesion
        p = row.recist_slice_points
        assert abs(np.dot(p[1] - p[0], p[3] - p[2])) <= 1e-6 * long_px * short_px
        assert (row.long_mm, row.short_mm) == pytest.approx((long_px * SPACING[0], short_px * SPACING[0]), rel=1e-6)
    assert checked == 7  # all but the border lesion


def test_key_slice_is_the_labelled_slice_with_the_longest_axis(converted):
    for row, lesion in converted_lesions(converted):
        assert row.key_slice == lesion.key_slice, row.File_name
    vols = {v.File_name: v for v in read_volumes(converted["out"] / "uls23_volumes.csv")}
    partial = vols["lidcidri_007_lesion_01_sample_0.nii.gz"]
    assert (partial.partial, partial.labelled_slices, partial.key_slice) == (1, 1, 11)
    assert [v.File_name for v in converted["result"].partial] == ["lidcidri_007_lesion_01_sample_0.nii.gz"]
    full = vols["000001_01_01_050_lesion_01.nii.gz"]
    assert (full.partial, full.labelled_slices, full.first_labelled, full.last_labelled) == (0, 7, 7, 13)
    real = vols["000002_01_01_020_lesion_01.nii.gz"]
    assert (real.size_x, real.size_y, real.size_z) == REAL
    assert (real.spacing_x, real.spacing_y, real.spacing_z) == pytest.approx(SPACING)
    # ULS23's own measurement of the key slice is recorded beside the mark
    assert real.uls23_long_mm == pytest.approx(real.long_mm)
    assert real.uls23_short_mm == pytest.approx(real.short_mm, abs=2 * SPACING[0])  # near-perpendicular pair
    assert vols["pancreas_00003_lesion_01.nii.gz"].status == "skipped"


def test_choose_key_slice_rule_and_ties():
    label = np.zeros((6, 40, 40), np.uint8)
    label[1, 5:25, 5:25] = 1              # large square: area 400, long axis 19 * sqrt(2) = 26.9
    label[2, 10, 2:32] = 1                # thin bar: long axis 29, area 30
    label[2, 20:22, 20:22] = 1
    label[3, 1:4, 1:4] = 1                # two components: union spans 36 px, largest only 20 long
    label[3, 30:38, 30:38] = 1
    label[3, 2:22, 30:32] = 1
    key = choose_key_slice(label, (1.0, 1.0))
    assert (key.z, key.n_components) == (2, 2) and key.long_mm == pytest.approx(29.0)
    # in mm with the in-plane spacing; the square wins when y pixels are 2x taller
    assert choose_key_slice(label, (1.0, 2.0)).z == 1
    # tie: the lowest z wins (ULS23's strict ">" scanning upwards)
    tie = np.zeros((4, 20, 20), np.uint8)
    tie[1, 5, 2:12] = 1
    tie[3, 8, 4:14] = 1
    assert choose_key_slice(tie, (1.0, 1.0)).z == 1
    assert labelled_slices(tie).indices == (1, 3) and labelled_slices(tie).partial  # gap: partial


def test_a_line_of_pixels_has_no_ellipse():
    bar = np.zeros((10, 20), np.uint8)
    bar[4, 3:15] = 1
    with pytest.raises(ValueError, match="degenerate_lesion"):
        derive_recist(bar, (1.0, 1.0))


def test_crop_geometry_matches_the_sidecar(converted):
    """Crops are cut where the sidecar says: pasted back, the ellipse crop is the ellipse drawn on the slice."""
    out, images = converted["out"], converted["sample"]["images"]
    for row, lesion in converted_lesions(converted):
        test = row.split == "test"
        crop_label = read(out / ("pseudolabelsTs" if test else "labelsTr") / f"{row.case}.mha")
        assert crop_label.shape == (row.crop_size, row.crop_size) and set(np.unique(crop_label)) == {0, 1}
        slice_ellipse = ellipse_mask(Recist.from_points(row.recist_slice), (row.image_height, row.image_width))
        pasted = paste_back(crop_label, row)
        dice = 2 * (pasted & slice_ellipse).sum() / (pasted.sum() + slice_ellipse.sum())
        assert dice > 0.9, (row.File_name, dice)
        # the ellipse covers the lesion it was derived from
        truth = ellipsoid(lesion)[row.key_slice].astype(bool)
        assert (slice_ellipse & truth).sum() / truth.sum() > 0.8
        # the image channels are the key slice and its neighbours, cut with the same box, in HU
        volume = read(images / row.File_name)
        assert row.context_slices == (row.key_slice, row.key_slice - 1, row.key_slice + 1)
        for c, z in enumerate(row.context_slices):
            crop = read(out / ("imagesTs" if test else "imagesTr") / f"{row.case}_{c:04d}.mha")
            assert crop.dtype == np.int16
            np.testing.assert_array_equal(crop, crop_hu_slice(volume[z], row.box))
        assert (row.image_width, row.image_height) == lesion.size[:2]


def test_border_lesion_is_padded_with_air(converted):
    row = converted["rows"]["bone_00005_lesion_01.nii.gz"]
    assert row.crop_x0 < 0
    crop = read(converted["out"] / ("imagesTs" if row.split == "test" else "imagesTr") / f"{row.case}_0000.mha")
    u = np.arange(row.crop_size)
    x = crop_to_slice(np.stack([u, np.zeros_like(u)], axis=1), row.box)[:, 0]
    outside = x < -1.0  # further than one pixel from the slice: pure padding
    assert outside.any() and np.all(crop[:, outside] == PAD_HU)


def test_crop_hu_slice_matches_the_png_crop_and_a_ramp():
    y, x = np.mgrid[0:50, 0:60]
    hu = (-200 + 3 * x + 2 * y).astype(np.int16)
    box = CropBox(10.3, 7.8, 23.7, 64)
    png = (hu.astype(np.int32) + 32768).astype(np.uint16)
    assert np.abs(crop_hu_slice(hu, box).astype(int) - crop_png_to_hu(png, box).astype(int)).max() <= 1
    u, v = np.meshgrid(np.arange(64), np.arange(64))
    sx, sy = crop_to_slice(np.stack([u.ravel(), v.ravel()], 1), box).T
    inside = (sx >= 0) & (sx <= 59) & (sy >= 0) & (sy <= 49)
    np.testing.assert_allclose(crop_hu_slice(hu.astype(np.float32), box).ravel()[inside],
                               (-200 + 3 * sx + 2 * sy)[inside], atol=0.51)


def test_patient_level_split_and_splits_final(converted):
    out, rows = converted["out"], list(converted["rows"].values())
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    named = {r.File_name: r for r in rows}
    assert named["000001_01_01_050_lesion_01.nii.gz"].patient == named["000001_02_01_030_lesion_01.nii.gz"].patient == 1
    assert named["bone_00002_lesion_01.nii.gz"].patient == named["bone_00002_lesion_02.nii.gz"].patient
    assert named["bone_00002_lesion_01.nii.gz"].patient >= CASE_ID_BASE
    assert named["scan17.nii.gz"].patient >= VOI_ID_BASE
    assert (named["000001_01_01_050_lesion_01.nii.gz"].study, named["000001_01_01_050_lesion_01.nii.gz"].series) == (1, 1)
    splits = json.loads((out / "splits_final.json").read_text())
    assert splits == [{"train": sorted(r.case for r in rows if r.split == "train"),
                       "val": sorted(r.case for r in rows if r.split == "val")}]
    assert splits[0]["val"] and any(r.split == "test" for r in rows)
    assert json.loads((converted["root"] / "pre" / NAME / "splits_final.json").read_text()) == splits


def test_test_vois_get_their_3d_reference(converted):
    out, labels = converted["out"], converted["sample"]["labels"]
    tests = [r for r in converted["rows"].values() if r.split == "test"]
    assert tests
    assert sorted(p.name for p in (out / "referencesTs").iterdir()) == sorted(r.File_name for r in tests)
    for r in tests:
        ref = sitk.ReadImage(str(out / "referencesTs" / r.File_name))
        source = sitk.ReadImage(str(labels / r.File_name))
        assert ref.GetDimension() == 3 and ref.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(source) > 0.5)
        assert ref.GetSpacing() == pytest.approx(source.GetSpacing()[:3])
        assert ref.GetDirection() == pytest.approx(source.GetDirection())
        assert sitk.GetArrayFromImage(ref)[r.key_slice].any()


def test_dataset_json_and_nnunet_integrity(converted):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    out, rows = converted["out"], converted["rows"].values()
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["recist_convention"] == "uls23"  # the marks are pixel-centre lengths (sidecar.recist_convention)
    assert dj["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    assert dj["channel_names"] == {"0": "CT", "1": "CT", "2": "CT"}
    assert (dj["source"], dj["converted_by"], dj["crop_size_range"]) == ("ULS23", "nnunet_ulseg convert-uls23",
                                                                         [128, 256])
    assert dj["numTraining"] == sum(r.split != "test" for r in rows) and dj["numTest"] == sum(r.split == "test"
                                                                                               for r in rows)
    assert dj["references_test"] == "referencesTs" and dj["partial_vois"] == 1
    verify_dataset_integrity(str(out), num_processes=1)


def test_input_folder_is_unchanged(converted):
    assert tree_hash(converted["root"] / "ULS23") == converted["before"]


def test_existing_output_refused_strict_raises_and_overwrite_replaces(converted, tmp_path):
    sample = converted["sample"]
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_uls23(sample["images"], sample["labels"], converted["out"], num_processes=1, progress=False)
    with pytest.raises(ConversionError, match="missing_label"):
        convert_uls23(sample["images"], sample["labels"], tmp_path / "strict", num_processes=1, strict=True,
                      progress=False)
    assert not (tmp_path / "strict" / "dataset.json").exists()
    with pytest.raises(ValueError, match="never written"):
        convert_uls23(sample["images"], sample["labels"], sample["images"] / "out", num_processes=1, progress=False)


def small_sample(root: Path) -> dict:
    lesions = [Lesion("000003_01_01_040_lesion_01"), Lesion("000004_01_01_041_lesion_01", angle_deg=-35.0),
               Lesion("bone_00020_lesion_01", a=9.0, b=6.0, angle_deg=60.0)]
    return uls23_sample(root, lesions=lesions, faults=False)


def test_cli_round_trip(tmp_path, capsys):
    from nnunet_ulseg.cli import main as ulseg

    sample = small_sample(tmp_path / "in")
    out = tmp_path / "raw" / "Dataset502_ULS23"
    assert ulseg(["convert-uls23", "-i", str(sample["images"]), "-l", str(sample["labels"]), "-o", str(out),
                  "-np", "1", "--crop-size", "64", "--test-fraction", "0.34", "--val-fraction", "0.3"]) == 0
    assert "converted 3 lesions: train 1, val 1, test 1" in capsys.readouterr().out
    rows = read_sidecar(out / "lesions.csv")
    assert {r.crop_size for r in rows} == {64}
    # a second run refuses to overwrite: one error line, exit 2
    assert ulseg(["convert-uls23", "-i", str(sample["images"]), "-l", str(sample["labels"]), "-o", str(out),
                  "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--overwrite" in err and "Traceback" not in err
    # nnU-Net style script: -d and nnUNet_raw pick the folder, long aliases work
    env = {"nnUNet_raw": str(tmp_path / "raw2"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--images", str(sample["images"]), "--labels", str(sample["labels"]),
                           "-d", "503", "--name", "ULSmini", "--np", "1", "--quiet", "--scale-policy", "physical"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    dj = json.loads((tmp_path / "raw2" / "Dataset503_ULSmini" / "dataset.json").read_text())
    assert dj["scale_policy"] == "physical" and dj["source"] == "ULS23"
    # without -o and nnUNet_raw: a clear error
    proc = subprocess.run([sys.executable, str(SCRIPT), "-i", str(sample["images"]), "-l",
                           str(sample["labels"]), "--quiet"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 2 and "nnUNet_raw is not set" in proc.stderr


def test_voi_names():
    dl = parse_voi_name("000010_02_02_100_lesion_01.nii.gz")
    assert (dl.kind, dl.patient, dl.study, dl.series, dl.deeplesion_file_name) == \
        ("deeplesion", 10, 2, 2, "000010_02_02_100.png")
    assert parse_voi_name("000001_01_01_109.nii.gz").deeplesion_file_name == "000001_01_01_109.png"
    lidc = parse_voi_name("lidcidri_100_lesion_01_sample_0.nii.gz")
    assert (lidc.kind, lidc.case_key, lidc.lesion_type, lidc.window) == ("case", "lidcidri_100", 5, (-1350.0, 150.0))
    bone = parse_voi_name("bone_00002_lesion_03.nii.gz")
    assert (bone.case_key, bone.lesion_type) == ("bone_00002", 1)
    other = parse_voi_name("mdsc_task06_017_lesion_02.nii.gz")
    assert (other.case_key, other.lesion_type, other.window) == ("mdsc_task06_017", -1, (-160.0, 240.0))
    assert parse_voi_name("scan.mha").kind == "voi"
    with pytest.raises(ValueError, match="not a VOI"):
        parse_voi_name("notes.txt")
    ids = number_patients([bone, parse_voi_name("bone_00002_lesion_01.nii.gz"), lidc, dl])
    assert ids["bone_00002_lesion_03.nii.gz"] == ids["bone_00002_lesion_01.nii.gz"] == CASE_ID_BASE
    assert ids["lidcidri_100_lesion_01_sample_0.nii.gz"] == CASE_ID_BASE + 1 and ids[dl.file_name] == 10


def test_patient_split_assignment():
    s = assign_patient_splits(range(20), 0.1, 0.2, seed=3)
    assert sorted(s) == list(range(20))
    counts = [sum(v == k for v in s.values()) for k in (1, 2, 3)]
    assert counts == [14, 2, 4]
    assert s == assign_patient_splits(reversed(range(20)), 0.1, 0.2, seed=3)  # order-independent, reproducible
    assert s != assign_patient_splits(range(20), 0.1, 0.2, seed=4)
    # small sets still get a val and a test patient while one trains; one patient only trains
    assert sorted(assign_patient_splits(range(3), 0.1, 0.2).values()) == [1, 2, 3]
    assert list(assign_patient_splits([7], 0.1, 0.2).values()) == [1]
    assert sorted(assign_patient_splits(range(2), 0.1, 0.2).values()) == [1, 2]
    with pytest.raises(ValueError):
        assign_patient_splits(range(5), 0.5, 0.5)


@pytest.mark.integration
def test_converted_uls23_dataset_trains_one_epoch_through_nnunet(tmp_path):
    """Acceptance: the weak dataset plans, preprocesses and trains 1 epoch with the real nnU-Net commands."""
    from nnunet_ulseg.nnunet_layout import NNUNetPaths
    from nnunet_ulseg.workflow.nnunet import console_script

    dataset_id, dataset = 989, "Dataset989_ULS23Integration"
    lesions = [Lesion("000003_01_01_040_lesion_01"), Lesion("000004_01_01_041_lesion_01", angle_deg=-35.0),
               Lesion("bone_00020_lesion_01", a=9.0, b=6.0, angle_deg=60.0),
               Lesion("bone_00021_lesion_01", a=10.0, b=8.0, angle_deg=100.0),
               Lesion("lidcidri_030_lesion_01_sample_0", a=7.0, b=5.0, angle_deg=15.0, labelled_dz=0),
               Lesion("000005_01_01_012_lesion_01", a=13.0, b=6.0, angle_deg=-70.0)]
    sample = uls23_sample(tmp_path / "ULS23", lesions=lesions, faults=False)
    paths = NNUNetPaths.under(tmp_path).create()
    env = paths.environ(num_processes=1)
    env.update(ULSEG_SHORT_EPOCHS="1", ULSEG_SHORT_ITERATIONS="2", ULSEG_NUM_THREADS="1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(paths.preprocessed))
        result = convert_uls23(sample["images"], sample["labels"], paths.raw / dataset, num_processes=1,
                               crop_size=64, progress=False)
    assert result.converted["val"] >= 1 and result.converted["train"] >= 1

    def run(*args):
        proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{args[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run(console_script("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", "2d", "-np", "1",
        "--verify_dataset_integrity")
    run(console_script("nnUNetv2_train"), dataset_id, "2d", "0", "-tr", "nnUNetTrainerULSeg_1epochs",
        "-device", "cpu")
    fold = paths.results / dataset / "nnUNetTrainerULSeg_1epochs__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").exists()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])
    splits = json.loads((paths.raw / dataset / "splits_final.json").read_text())
    assert sorted(p.name[:-4] for p in (fold / "validation").glob("*.mha")) == sorted(splits[0]["val"])


def test_overwrite_replaces_the_installed_split_of_an_earlier_run(tmp_path, monkeypatch):
    """Re-converting with --overwrite and another seed installs the new split in nnUNet_preprocessed
    (the earlier one names cases that may now be test cases); without it, the user's split is kept."""
    sample = uls23_sample(tmp_path / "ULS23", faults=False, real_shape=False)
    out, pre = tmp_path / "raw" / NAME, tmp_path / "pre"
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    convert_uls23(sample["images"], sample["labels"], out, num_processes=1, progress=False, seed=0)
    splits = [json.loads((out / "splits_final.json").read_text())]
    for seed in range(1, 20):
        convert_uls23(sample["images"], sample["labels"], out, num_processes=1, progress=False, seed=seed,
                      overwrite=True)
        splits.append(json.loads((out / "splits_final.json").read_text()))
        assert json.loads((pre / NAME / "splits_final.json").read_text()) == splits[-1]
        if splits[-1] != splits[0]:
            break
    assert splits[-1] != splits[0]  # some seed gave another split, and it was installed


def test_images_and_labels_in_the_same_folder_are_refused(tmp_path):
    sample = uls23_sample(tmp_path / "ULS23", faults=False, real_shape=False)
    with pytest.raises(ValueError, match="-i and -l are the same folder"):
        convert_uls23(sample["images"], sample["images"], tmp_path / "raw" / NAME, num_processes=1, progress=False)
    assert not (tmp_path / "raw" / NAME).exists()



def test_an_existing_case_file_is_never_replaced(tmp_path):
    """The worker creates every output file new: a file already at one of a VOI's paths is kept, the VOI is
    reported, and only the files this VOI created are removed."""
    from nnunet_ulseg.conversion.uls23_names import parse_voi_name
    from nnunet_ulseg.conversion.uls23_worker import VoiTask, convert_voi
    from nnunet_ulseg.conversion.worker import output_paths

    sample = uls23_sample(tmp_path / "ULS23", faults=False, real_shape=False)
    name = sorted(p.name for p in sample["images"].iterdir())[0]
    out = tmp_path / "out"
    for d in ("imagesTr", "labelsTr", "imagesTs", "referencesTs"):
        (out / d).mkdir(parents=True)
    task = VoiTask(2, parse_voi_name(name), 1, 1, "ULS23_0001", str(sample["images"] / name),
                   str(sample["labels"] / name), str(out), 0, "lesion", 32, (64, 64), (1.0, 1.0))
    images, label = output_paths(str(out), "ULS23_0001", 1, False)
    Path(label).write_bytes(b"user data")
    result = convert_voi(task)
    assert result.issue is not None and "already exists" in result.issue.detail
    assert Path(label).read_bytes() == b"user data"
    assert not any(Path(p).exists() for p in images)  # its own crop was removed again
    Path(label).unlink()
    assert convert_voi(task).issue is None and Path(label).stat().st_size > 100
