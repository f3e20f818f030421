"""End-to-end DeepLesion -> nnU-Net raw conversion on a synthetic fault corpus (convert_deeplesion)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from dl_fixtures import dl_row, fault_corpus, ramp, recist_text, write_dl_info, write_png
from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
from nnunet_ulseg.conversion.geometry import PAD_HU, crop_to_slice, slice_to_crop
from nnunet_ulseg.conversion.report import ConversionError, read_report
from nnunet_ulseg.conversion.sidecar import paste_back, read_sidecar
from nnunet_ulseg.conversion.worker import SeriesTask
from nnunet_ulseg.recist import Recist, ellipse_mask

NAME = "Dataset501_DeepLesion"


def tree_hash(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The fault corpus converted once with 2 workers and 2 context slices on each side."""
    root = tmp_path_factory.mktemp("conv")
    dl = root / "DeepLesion"
    expected = fault_corpus(dl)
    before = tree_hash(dl)
    out = root / "raw" / NAME
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(root / "pre"))
        result = convert_deeplesion(dl, out, num_processes=2, context=2, progress=False)
    return {"root": root, "dl": dl, "out": out, "expected": expected, "before": before, "result": result}


def test_every_good_lesion_converted_and_every_fault_reported(converted):
    result, expected, out = converted["result"], converted["expected"], converted["out"]
    assert {r.case: r.split for r in result.rows} == expected["good"]
    assert {i.dl_row: i.reason for i in result.issues} == expected["bad"]
    assert {i.dl_row: i.reason for i in read_report(out / "conversion_report.csv")} == expected["bad"]
    assert result.converted == {"train": 2, "val": 2, "test": 3}
    assert sum(result.skipped.values()) == len(expected["bad"])
    png_issue = next(i for i in result.issues if i.reason == "missing_png")
    assert png_issue.file.endswith("Images_png/000005_01_01/011.png")
    assert "missing_png: 1" in result.summary()


def test_input_folder_is_unchanged(converted):
    assert tree_hash(converted["dl"]) == converted["before"]


def test_layout_dataset_json_and_nnunet_integrity(converted):
    out = converted["out"]
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["channel_names"] == {str(c): "CT" for c in range(5)}
    assert dj["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    assert dj["numTraining"] == 4 and dj["file_ending"] == ".mha" and dj["numTest"] == 3
    assert (dj["scale_policy"], dj["context"], dj["source"]) == ("lesion", 2, "DeepLesion")
    assert dj["channel_slices"] == ["key", "key-2", "key-1", "key+1", "key+2"]
    test_cases = sorted(c for c, s in converted["expected"]["good"].items() if s == "test")
    assert sorted(p.name[:-4] for p in (out / "pseudolabelsTs").iterdir()) == test_cases
    assert sorted({p.name[:-9] for p in (out / "imagesTs").iterdir()}) == test_cases
    assert not (out / "labelsTs").exists()
    verify_dataset_integrity(str(out), num_processes=1)


def test_no_patient_in_two_splits(converted):
    out = converted["out"]
    rows = read_sidecar(out / "lesions.csv")
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert by_patient[4] == {"test"}  # rows with Train_Val_Test 1 and 3
    assert [m.patient for m in converted["result"].split_moves] == [4]
    splits = json.loads((out / "splits_final.json").read_text())
    copied = json.loads((converted["root"] / "pre" / NAME / "splits_final.json").read_text())
    assert splits == copied and len(splits) == 1
    patient_of = {r.case: r.patient for r in rows}
    train_p = {patient_of[c] for c in splits[0]["train"]}
    val_p = {patient_of[c] for c in splits[0]["val"]}
    assert train_p == {1} and val_p == {2, 9}
    assert set(splits[0]["train"]) | set(splits[0]["val"]) == {r.case for r in rows if r.split != "test"}


def test_simpleitkio_reads_crops_with_nominal_spacing(converted):
    out = converted["out"]
    case = "DL_000001_01_01_010_0"
    files = [str(out / "imagesTr" / f"{case}_{c:04d}.mha") for c in range(5)]
    data, props = SimpleITKIO().read_images(files)
    assert data.shape == (5, 1, 128, 128)
    assert props["spacing"][1:] == [1.0, 1.0]
    seg, _ = SimpleITKIO().read_seg(str(out / "labelsTr" / f"{case}.mha"))
    assert set(np.unique(seg)) == {0, 1}


def test_context_channels_ordered_key_first(converted):
    out = converted["out"]
    img = np.stack([read(out / "imagesTr" / f"DL_000001_01_01_010_1_{c:04d}.mha") for c in range(5)]).astype(int)
    inner = img[:, 40:90, 40:90]  # inside the slice: slice s carries the ramp + 10 * (s - 10)
    for c, offset in enumerate([0, -20, -10, 10, 20]):
        assert np.abs(inner[c] - inner[0] - offset).max() <= 1, c
    row = next(r for r in read_sidecar(out / "lesions.csv") if r.case == "DL_000001_01_01_010_1")
    assert row.context_slices == (10, 8, 9, 11, 12)
    # patient 2 has no neighbour PNGs: every channel falls back to the key slice
    lone = next(r for r in read_sidecar(out / "lesions.csv") if r.patient == 2)
    assert lone.context_slices == (5,) * 5
    assert converted["result"].context_fallbacks == 5


def test_multiple_lesions_per_slice_are_distinct_cases(converted):
    out = converted["out"]
    a, b = (read(out / "labelsTr" / f"DL_000001_01_01_010_{k}.mha") for k in (0, 1))
    assert a.dtype == np.uint8 and a.sum() > 0 and b.sum() > 0 and not np.array_equal(a, b)
    rows = {r.case: r for r in read_sidecar(out / "lesions.csv")}
    ra, rb = rows["DL_000001_01_01_010_0"], rows["DL_000001_01_01_010_1"]
    assert ra.File_name == rb.File_name and (ra.crop_x0, ra.crop_y0) != (rb.crop_x0, rb.crop_y0)


def test_sidecar_geometry_matches_written_files(converted):
    out = converted["out"]
    for r in read_sidecar(out / "lesions.csv"):
        folder = "labelsTr" if r.split != "test" else "pseudolabelsTs"
        label = read(out / folder / f"{r.case}.mha")
        assert label.shape == (r.crop_size, r.crop_size)
        rs = Recist.from_points(r.recist_slice_points)
        np.testing.assert_allclose(slice_to_crop(r.recist_slice_points, r.box), r.recist_crop_points, atol=1e-9)
        np.testing.assert_allclose(crop_to_slice(r.recist_crop_points, r.box), r.recist_slice_points, atol=1e-9)
        np.testing.assert_array_equal(label, ellipse_mask(Recist.from_points(r.recist_crop_points), label.shape))
        long_mm, short_mm = rs.lengths_mm((r.spacing_x, r.spacing_y))
        assert (r.long_mm, r.short_mm) == pytest.approx((long_mm, short_mm))
        # the crop's pixel spacing measures the crop mark in the same mm
        crop_mm = Recist.from_points(r.recist_crop_points).lengths_mm(r.crop_spacing_xy)
        assert crop_mm == pytest.approx((long_mm, short_mm))
        back = paste_back(label, r)
        truth = ellipse_mask(rs, (r.image_height, r.image_width))
        assert 2 * (back & truth).sum() / (back.sum() + truth.sum()) > 0.95


def test_existing_output_is_refused_unless_overwrite(converted, tmp_path):
    dl = converted["dl"]
    out = tmp_path / NAME
    convert_deeplesion(dl, out, num_processes=1, progress=False)
    with pytest.raises(FileExistsError, match="dataset.json"):
        convert_deeplesion(dl, out, num_processes=1, progress=False)
    # --overwrite removes only what the earlier run recorded: a file it did not write is kept, and refused
    # because it would become a stray case (issue 12; tests/test_faults_conversion_output.py)
    stale = out / "imagesTr" / "DL_999999_01_01_001_0_0000.mha"
    stale.write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="DL_999999_01_01_001_0_0000.mha"):
        convert_deeplesion(dl, out, num_processes=1, progress=False, overwrite=True)
    assert stale.read_bytes() == b"old"
    stale.unlink()
    result = convert_deeplesion(dl, out, num_processes=1, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list((out / "imagesTr").iterdir())) == 4 and result.converted["train"] == 2
    # an interrupted run (case files, no dataset.json) is refused too
    (out / "dataset.json").unlink()
    with pytest.raises(FileExistsError, match="interrupted"):
        convert_deeplesion(dl, out, num_processes=1, progress=False)
    with pytest.raises(ValueError, match="never written"):
        convert_deeplesion(dl, dl / "out", num_processes=1, progress=False)


def test_strict_mode_raises_on_first_problem(converted, tmp_path):
    with pytest.raises(ConversionError, match="duplicate_row"):
        convert_deeplesion(converted["dl"], tmp_path / "o", num_processes=1, strict=True, progress=False)
    assert not (tmp_path / "o").exists()  # row problems are found before anything is written


def test_strict_mode_raises_on_png_problem(tmp_path):
    dl = tmp_path / "dl"
    write_png(dl, 1, 1, 1, 5, ramp())
    write_dl_info(dl, [dl_row(1, 1, 1, 5, recist_text(40, 40, 10, 5), 1),
                       dl_row(1, 1, 1, 6, recist_text(40, 40, 10, 5), 2)])
    with pytest.raises(ConversionError, match="missing_png"):
        convert_deeplesion(dl, tmp_path / "o", num_processes=1, strict=True, progress=False)


def small_corpus(dl: Path, rows, images) -> None:
    for (p, s), hu in images.items():
        write_png(dl, p, 1, 1, s, hu)
    write_dl_info(dl, rows)


def test_one_based_coordinates_put_the_ellipse_on_the_0_based_pixel(tmp_path):
    dl = tmp_path / "dl"
    hu = ramp()
    hu[40, 50] = 1500  # marker at 0-based pixel x = 50, y = 40
    # long axis 64 px -> side 128 -> scale 1, so crop pixels are slice pixels
    coords = "19, 41, 83, 41, 51, 31, 51, 51"  # 1-based, centre (51, 41)
    small_corpus(dl, [dl_row(1, 1, 1, 5, coords, 1)], {(1, 5): hu})
    result = convert_deeplesion(dl, tmp_path / "o", num_processes=1, progress=False)
    row, = result.rows
    assert row.scale == 1 and row.crop_size == 128
    u, v = slice_to_crop([[50.0, 40.0]], row.box)[0]
    assert (u, v) == (64.0, 64.0)
    img = read(tmp_path / "o" / "imagesTr" / f"{row.case}_0000.mha")
    label = read(tmp_path / "o" / "labelsTr" / f"{row.case}.mha")
    assert img[64, 64] == 1500 and img[64, 65] == hu[40, 51]
    ys, xs = np.nonzero(label)
    assert (xs.mean(), ys.mean()) == pytest.approx((64.0, 64.0), abs=1e-9)
    ys, xs = np.nonzero(paste_back(label, row))
    assert (xs.mean(), ys.mean()) == pytest.approx((50.0, 40.0), abs=0.05)


def test_border_lesion_is_padded_and_its_ellipse_is_right(tmp_path):
    dl = tmp_path / "dl"
    coords = recist_text(8.5, 6, 16, 8, 20)  # touches the top-left corner
    small_corpus(dl, [dl_row(1, 1, 1, 5, coords, 1)], {(1, 5): ramp()})
    result = convert_deeplesion(dl, tmp_path / "o", num_processes=1, progress=False, scale_policy="physical")
    row, = result.rows
    img = read(tmp_path / "o" / "imagesTr" / f"{row.case}_0000.mha")
    label = read(tmp_path / "o" / "labelsTr" / f"{row.case}.mha")
    v, u = np.mgrid[0:row.crop_size, 0:row.crop_size]
    xy = crop_to_slice(np.stack([u.ravel(), v.ravel()], 1), row.box).reshape(row.crop_size, row.crop_size, 2)
    outside = (xy[..., 0] < 0) | (xy[..., 1] < 0)
    assert outside.any() and np.all(img[outside] == PAD_HU)
    assert np.all(img[~outside] == ramp()[xy[~outside][:, 1].astype(int), xy[~outside][:, 0].astype(int)])
    rs = Recist.from_deeplesion(coords)
    rc = rs.mapped(lambda p: slice_to_crop(p, row.box))
    np.testing.assert_array_equal(label, ellipse_mask(rc, label.shape))
    assert label.sum() == pytest.approx(np.pi * 8 * 4, rel=0.15)  # whole ellipse, not clipped by the slice edge
    # physical policy keeps the true spacing
    _, props = SimpleITKIO().read_images([str(tmp_path / "o" / "imagesTr" / f"{row.case}_0000.mha")])
    assert props["spacing"][1:] == pytest.approx([0.8, 0.7])


def test_png_paths_lists_each_decoded_png_once(converted):
    dl = converted["dl"]
    task = SeriesTask(str(dl / "Images_png" / "000001_01_01"), "unused", 2, ())
    assert task.png_paths() == []
    from nnunet_ulseg.conversion.worker import LesionJob, SliceJob

    def job(key):  # neighbours come from each lesion's own Slice_range and channel offsets (issue 12 case 4)
        return LesionJob(f"c{key}", 2, "", False, None, (), (1.0, 1.0), (96, 80), (9, 12), (0, -2, -1, 1, 2))
    task = SeriesTask(task.series_path, "unused", 2, (SliceJob(10, (job(10),)), SliceJob(11, (job(11),))))
    names = [Path(p).name for p in task.png_paths()]
    assert names == ["010.png", "009.png", "011.png", "012.png"]


def test_worker_pool_works_after_the_parent_used_cv2_threads():
    """Regression: a forked worker calling cv2.setNumThreads after the parent used cv2's thread pool hangs."""
    import subprocess
    import sys

    code = """
import functools, cv2, numpy as np
from nnunet_ulseg.conversion.deeplesion import task_results
from nnunet_ulseg.conversion.geometry import CropBox, crop_png_to_hu
img = np.full((1024, 1024), 33000, np.uint16)
cv2.warpAffine(img, np.eye(2, 3), (1024, 1024))  # starts cv2's thread pool in the parent
threads = cv2.getNumThreads()
fn = functools.partial(crop_png_to_hu, box=CropBox(0.0, 0.0, 64.0, 64))
with task_results(fn, [img] * 4, 2) as results:
    assert [int(r[0, 0]) for r in results] == [33000 - 32768] * 4
assert cv2.getNumThreads() == threads
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_task_results_pool_and_serial_agree():
    from nnunet_ulseg.conversion.deeplesion import task_results

    for n in (1, 2):
        with task_results(abs, list(range(-20, 0)), n) as results:
            assert sorted(results) == list(range(1, 21))


def test_fixed_crop_size_is_used_and_recorded(tmp_path):
    dl = tmp_path / "dl"
    # long axis 64 px -> side 128 slice px; --crop-size 64 halves it (scale 0.5)
    coords = "19, 41, 83, 41, 51, 31, 51, 51"
    small_corpus(dl, [dl_row(1, 1, 1, 5, coords, 1)], {(1, 5): ramp()})
    result = convert_deeplesion(dl, tmp_path / "o", num_processes=1, progress=False, crop_size=64)
    row, = result.rows
    assert row.crop_size == 64 and row.scale == pytest.approx(0.5)
    label = read(tmp_path / "o" / "labelsTr" / f"{row.case}.mha")
    assert label.shape == (64, 64)
    assert label.sum() == pytest.approx(np.pi * 16 * 5, rel=0.15)  # semi-axes 32 x 10 slice px, halved
    meta = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert meta["crop_size_range"] == [64, 64]
    assert read_sidecar(tmp_path / "o" / "lesions.csv")[0].crop_size == 64
    with pytest.raises(ValueError, match="scale policy 'lesion' only"):
        convert_deeplesion(dl, tmp_path / "p", num_processes=1, progress=False, crop_size=64,
                           scale_policy="physical")
