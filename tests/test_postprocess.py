"""RECIST-mark post-processing: the mask rule (nnunet_ulseg.postprocess), ``ulseg postprocess`` and score_folder."""
from __future__ import annotations

import argparse
import json
import math

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.conversion.sidecar import LesionRow, write_sidecar
from nnunet_ulseg.postprocess import (ELLIPSE_FACTOR, MODES, keep_marked, keep_marked_info, mark_pixels,
                                      postprocess_crop, postprocess_mask, scaled_ellipse)
from nnunet_ulseg.recist import Recist, ellipse_mask, rasterize_ellipse

# a horizontal long axis from x=6 to x=14 at y=10 and a vertical short axis at x=10 from y=7 to y=13
MARK = [[6, 10], [14, 10], [10, 7], [10, 13]]


def disk(shape, cx, cy, r):
    yy, xx = np.indices(shape)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_spurious_blob_away_from_the_mark_is_removed_and_the_lesion_kept():
    lesion = disk((32, 32), 10, 10, 4.5)
    blob = np.zeros((32, 32), bool)
    blob[24:28, 24:29] = True
    out = keep_marked((lesion | blob).astype(np.uint8), MARK)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, lesion)
    info = keep_marked_info(lesion | blob, MARK)
    assert (info.status, info.components, info.kept, info.fallback) == ("marked", 2, 1, False)


def test_every_component_crossed_by_either_axis_is_kept():
    left = np.zeros((32, 32), bool)
    left[8:13, 5:9] = True         # crossed by the long axis (y = 10, x 6..8)
    right = np.zeros((32, 32), bool)
    right[8:13, 12:16] = True      # crossed by the long axis (x 12..14)
    top = np.zeros((32, 32), bool)
    top[5:8, 9:12] = True          # only the short axis (x = 10, y 7) reaches it
    away = np.zeros((32, 32), bool)
    away[20:23, 20:23] = True
    out = keep_marked(left | right | top | away, MARK)
    np.testing.assert_array_equal(out, left | right | top)


def test_components_are_8_connected():
    a = np.zeros((32, 32), bool)
    a[9:12, 8:12] = True
    b = np.zeros((32, 32), bool)
    b[12:15, 12:15] = True  # touches a only at a corner ([11, 11] and [12, 12])
    out = keep_marked(a | b, [[8, 10], [11, 10], [9, 9], [9, 11]])
    np.testing.assert_array_equal(out, a | b)


def test_holes_are_filled_and_can_be_kept():
    ring = disk((32, 32), 10, 10, 5) & ~disk((32, 32), 10, 10, 2)
    filled = keep_marked(ring, MARK)
    np.testing.assert_array_equal(filled, disk((32, 32), 10, 10, 5))
    np.testing.assert_array_equal(keep_marked(ring, MARK, fill_holes=False), ring)
    # a square ring whose hole reaches the outside only through a diagonal chain of background pixels
    # ([12, 12] -> [13, 13] -> [14, 14] -> outside): still a hole for 8-connected foreground
    square = np.zeros((32, 32), bool)
    square[6:15, 6:15] = True
    square[8:13, 8:13] = False
    square[13, 13] = square[14, 14] = False
    expected = np.zeros((32, 32), bool)
    expected[6:15, 6:15] = True
    expected[14, 14] = False  # 4-connected to the outside: not a hole
    np.testing.assert_array_equal(keep_marked(square, MARK), expected)


def test_a_miss_or_an_empty_prediction_falls_back_to_the_ellipse():
    recist = Recist.from_points(MARK)
    ellipse = ellipse_mask(recist, (32, 32))
    away = np.zeros((32, 32), bool)
    away[24:28, 24:28] = True
    for pred in (away, np.zeros((32, 32), np.uint8)):
        info = keep_marked_info(pred, MARK)
        assert info.status == "fallback_ellipse" and info.fallback and info.kept == 0
        np.testing.assert_array_equal(info.mask, ellipse)
    # other fallbacks: nothing, or the component nearest to the mark
    np.testing.assert_array_equal(keep_marked(away, MARK, fallback="empty"), np.zeros((32, 32), bool))
    near = np.zeros((32, 32), bool)
    near[2:4, 9:12] = True  # 3 px above the short axis' top end
    info = keep_marked_info(away | near, MARK, fallback="nearest")
    assert info.status == "fallback_nearest"
    np.testing.assert_array_equal(info.mask, near)
    np.testing.assert_array_equal(keep_marked(np.zeros((32, 32), bool), MARK, fallback="nearest"), ellipse)
    with pytest.raises(ValueError, match="fallback must be"):
        keep_marked(away, MARK, fallback="largest")


def test_within_clips_a_leak_outside_the_dilated_ellipse():
    lesion = disk((40, 40), 10, 10, 4)
    leak = np.zeros((40, 40), bool)
    leak[9:12, 10:38] = True  # a strip along the long axis, far past its end (x = 14)
    pred = lesion | leak
    assert np.array_equal(keep_marked(pred, MARK), pred)  # the leak is connected: 'mark' alone keeps it
    out = keep_marked(pred, MARK, within=1.5)
    limit = rasterize_ellipse(scaled_ellipse(MARK, 1.5), (40, 40))
    np.testing.assert_array_equal(out, pred & limit)
    # the 1.5x ellipse reaches x = 10 + 1.5 * 4 = 16 on the long axis
    assert out[10, 16] and not out[10, 17:].any()
    assert (out & lesion).sum() == lesion.sum()
    np.testing.assert_array_equal(postprocess_mask(pred, MARK, "mark-ellipse").mask, out)
    assert ELLIPSE_FACTOR == 1.5


def test_within_drops_a_piece_that_is_only_connected_outside_the_ellipse():
    # 1.5x ellipse of MARK: centre (10, 10), semi-axes 6 (x) and 4.5 (y); on row 14 it spans x 7.25..12.75
    pred = disk((40, 40), 10, 10, 2)   # rows 8..12
    pred[10, 10:31] = True             # a leak along the long axis out of the ellipse ...
    pred[10:15, 30] = True             # ... down ...
    pred[14, 8:31] = True              # ... and back in below the lesion (row 13 stays empty)
    assert keep_marked(pred, MARK)[14, 10]  # without the limit the hook keeps the piece
    out = keep_marked(pred, MARK, within=1.5)
    # clipped first, the piece on row 14 no longer connects to anything the mark crosses
    assert not out[14].any() and out[10, 8:17].all() and not out[10, 17:].any()


def test_mark_at_the_crop_border():
    # lesion cut by the left border; the mark reaches 2 px past it (points outside the crop are dropped)
    lesion = disk((24, 24), 1, 12, 5)
    blob = np.zeros((24, 24), bool)
    blob[20:23, 18:22] = True
    mark = [[-2, 12], [5, 12], [1, 8], [1, 16]]
    out = keep_marked(lesion | blob, mark)
    np.testing.assert_array_equal(out, lesion)
    px = mark_pixels(mark, (24, 24))
    assert px[12, 0:6].all() and not px[:, 6:].any() and px[8:17, 1].all()
    # a mark entirely outside the image crosses nothing: ellipse fallback (clipped to the image)
    far = [[-20, 5], [-10, 5], [-15, 3], [-15, 7]]
    assert keep_marked_info(lesion, far).status == "fallback_ellipse"
    assert not keep_marked(lesion, far).any()
    assert keep_marked_info(lesion, far, fallback="nearest").status == "fallback_nearest"


def test_points_are_x_y_not_row_column():
    pred = np.zeros((32, 32), np.uint8)
    pred[2:7, 18:28] = 1   # wide blob at x 18..27, y 2..6
    pred[18:28, 2:7] = 1   # its transpose
    mark = [[19, 4], [26, 4], [22.5, 2.5], [22.5, 5.5]]  # (x, y) on the first blob
    out = keep_marked(pred, mark)
    assert out[4, 22] and not out[22, 4]
    np.testing.assert_array_equal(out, pred.astype(bool) & (np.indices(pred.shape)[0] < 10))
    px = mark_pixels(mark, pred.shape)
    assert px[4, 19:27].all() and px[4, 18] == 0 and not px[19:27, 4].any()


def test_label_maps_bool_masks_and_bad_input():
    label = np.zeros((32, 32), np.uint8)
    label[8:13, 8:13] = 1
    label[20:24, 20:24] = 2  # ignore label: not lesion
    out = keep_marked(label, np.asarray(MARK, float).ravel())  # 8 numbers work too
    np.testing.assert_array_equal(out, label == 1)
    np.testing.assert_array_equal(keep_marked(label == 1, Recist.from_points(MARK)), label == 1)
    with pytest.raises(ValueError, match="2D"):
        keep_marked(np.zeros((2, 32, 32)), MARK)
    with pytest.raises(ValueError, match="zero-length"):
        keep_marked(label, [[1, 1], [1, 1], [2, 2], [2, 3]])
    with pytest.raises(ValueError, match="unknown post-processing mode 'largest'"):
        postprocess_mask(label, MARK, "largest")
    with pytest.raises(ValueError, match="positive"):
        scaled_ellipse(MARK, 0)
    none = postprocess_mask(label, None, "none")
    assert none.status == "unchanged" and np.array_equal(none.mask, label == 1)
    assert MODES == ("none", "mark", "mark-ellipse", "mark-grabcut")


def row(case="c", size=32, recist=tuple(float(v) for v in np.ravel(MARK)), **kw) -> LesionRow:
    """A lesions.csv row whose crop is the whole 32 x 32 slice at scale 1 (crop pixel = slice pixel)."""
    base = dict(case=case, split="test", dl_row=2, File_name="000001_01_01_001.png", patient=1, study=1, series=1,
                key_slice=1, crop_x0=-0.5, crop_y0=-0.5, crop_side=float(size), crop_size=size, scale=1.0,
                spacing_x=0.7, spacing_y=0.7, spacing_z=5.0, recist_slice=recist, recist_crop=recist, long_mm=5.6,
                short_mm=4.2, lesion_type=4, possibly_noisy=0, window_min=-175.0, window_max=275.0,
                image_width=size, image_height=size, context_slices=(1,))
    base.update(kw)
    return LesionRow(**base)


def test_postprocess_crop_uses_the_crop_mark_and_names_the_case():
    pred = np.zeros((32, 32), np.uint8)
    pred[8:13, 8:13] = 1
    pred[25:28, 25:28] = 1
    np.testing.assert_array_equal(postprocess_crop(pred, row(), "mark").mask,
                                  (pred == 1) & (np.indices(pred.shape)[0] < 20))
    with pytest.raises(ValueError, match="case c: mask shape"):
        postprocess_crop(pred[:30], row(), "mark")
    with pytest.raises(ValueError, match="case z: lesions.csv recist_crop"):
        postprocess_crop(pred, row("z", recist=(0.0,) * 8), "mark")
    assert postprocess_crop(pred, row("z", recist=(0.0,) * 8), "none").status == "unchanged"


# -- ulseg postprocess ---------------------------------------------------------------------------
def write_pred(path, array, dtype=np.uint8):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=dtype))
    image.SetSpacing((0.7, 0.9))
    image.SetOrigin((3.0, -2.0))
    image.SetDirection((0.0, 1.0, 1.0, 0.0))
    sitk.WriteImage(image, str(path), False)


@pytest.fixture
def pred_folder(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    a = np.zeros((32, 32), np.uint8)
    a[8:13, 8:13] = 1
    a[10, 10] = 0            # a hole
    a[25:28, 25:28] = 1      # a blob
    write_pred(pred / "a.mha", a)
    write_pred(pred / "b.mha", np.zeros((32, 32)))  # empty: ellipse fallback
    (pred / "dataset.json").write_text(json.dumps({"file_ending": ".mha"}))
    (pred / "plans.json").write_text("{}")
    (pred / "a.npz").write_bytes(b"probabilities")
    write_sidecar(tmp_path / "lesions.csv", [row("a"), row("b"), row("unused")])
    return pred, a


def main(argv):
    from nnunet_ulseg.cli import main as ulseg

    return ulseg(argv)


def test_cli_writes_new_files_with_the_geometry_and_leaves_the_input(pred_folder, tmp_path, capsys):
    pred, a = pred_folder
    before = {p.name: p.read_bytes() for p in pred.iterdir()}
    out = tmp_path / "out"
    assert main(["postprocess", "-i", str(pred), "-o", str(out), "--sidecar", str(tmp_path / "lesions.csv"),
                 "--mode", "mark", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "post-processed 2 case(s)" in text and "fallback_ellipse 1" in text and "marked 1" in text
    assert {p.name: p.read_bytes() for p in pred.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["a.mha", "b.mha", "dataset.json", "plans.json",
                                                     "postprocessing.json"]
    for case in ("a", "b"):
        src, dst = sitk.ReadImage(str(pred / f"{case}.mha")), sitk.ReadImage(str(out / f"{case}.mha"))
        assert dst.GetSpacing() == src.GetSpacing() == (0.7, 0.9)
        assert dst.GetOrigin() == src.GetOrigin() and dst.GetDirection() == src.GetDirection()
        assert dst.GetSize() == src.GetSize() and dst.GetPixelID() == src.GetPixelID()
    got_a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.mha")))
    expected = np.zeros((32, 32), np.uint8)
    expected[8:13, 8:13] = 1
    np.testing.assert_array_equal(got_a, expected)
    got_b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "b.mha")))
    np.testing.assert_array_equal(got_b, ellipse_mask(Recist.from_points(MARK), (32, 32)).astype(np.uint8))
    record = json.loads((out / "postprocessing.json").read_text())
    assert record["mode"] == "mark" and record["status"] == {"a": "marked", "b": "fallback_ellipse"}
    assert record["fallback_cases"] == ["b"]


def test_cli_refuses_to_overwrite_and_names_a_case_missing_from_the_sidecar(pred_folder, tmp_path, capsys):
    pred, a = pred_folder
    sidecar = tmp_path / "lesions.csv"
    assert main(["postprocess", "-i", str(pred), "-o", str(pred), "--sidecar", str(sidecar)]) == 2
    assert "must differ from the input folder" in capsys.readouterr().err
    write_pred(pred / "stranger.mha", a)
    assert main(["postprocess", "-i", str(pred), "-o", str(tmp_path / "o2"), "--sidecar", str(sidecar),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{pred / 'stranger.mha'}: case stranger is not in the sidecar" in err
    assert not (tmp_path / "o2").exists()
    assert main(["postprocess", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o3"), "--sidecar",
                 str(sidecar)]) == 2


def test_other_labels_survive_and_mode_none_copies(tmp_path):
    from nnunet_ulseg.workflow.postprocess_cli import apply_to_labels, postprocess_folder

    labels = np.array([[1, 2, 0], [0, 1, 2]], np.uint8)
    kept = np.array([[0, 1, 0], [0, 1, 0]], bool)
    np.testing.assert_array_equal(apply_to_labels(labels, kept), [[0, 1, 0], [0, 1, 2]])
    pred = tmp_path / "p"
    pred.mkdir()
    a = np.zeros((32, 32), np.int16)
    a[25:28, 25:28] = 1
    write_pred(pred / "a.mha", a, np.int16)
    write_sidecar(tmp_path / "lesions.csv", [row("a")])
    record = postprocess_folder(pred, tmp_path / "o", tmp_path / "lesions.csv", "none", progress=False)
    assert record["status"] == {"a": "unchanged"}
    out = sitk.ReadImage(str(tmp_path / "o" / "a.mha"))
    assert out.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), a)


def test_cli_mode_choices_match_the_library():
    from nnunet_ulseg.evaluation.cli import POSTPROCESS_CHOICES
    from nnunet_ulseg.refine.cli import POSTPROCESS_CHOICES as REFINE_CHOICES
    from nnunet_ulseg.workflow.postprocess_cli import MODE_CHOICES

    assert MODE_CHOICES == POSTPROCESS_CHOICES == REFINE_CHOICES == MODES
    parser = argparse.ArgumentParser()
    from nnunet_ulseg.workflow.postprocess_cli import add_postprocess_parser

    add_postprocess_parser(parser.add_subparsers())
    assert parser.parse_args(["postprocess", "-i", "a", "-o", "b", "--sidecar", "c"]).mode == "mark"


# -- score_folder ---------------------------------------------------------------------------------
def block_sample(tmp_path):
    """A generated-sample folder whose one true mask is the 10 x 10 block [10:20, 10:20] of a 32 x 32 slice."""
    sample = tmp_path / "sample"
    (sample / "Masks_png").mkdir(parents=True)
    truth = np.zeros((32, 32), np.uint8)
    truth[10:20, 10:20] = 1
    cv2.imwrite(str(sample / "Masks_png" / "m.png"), truth)
    (sample / "masks.csv").write_text("File_name,lesion_instance,mask_path,true_type\n"
                                      "000001_01_01_001.png,1,Masks_png/m.png,4\n")
    return sample, truth


def test_score_folder_with_postprocess_gives_the_hand_computed_dice(tmp_path):
    from nnunet_ulseg.workflow.slice_scores import score_folder

    sample, truth = block_sample(tmp_path)
    mark = (10.0, 15.0, 19.0, 15.0, 15.0, 11.0, 15.0, 19.0)
    write_sidecar(tmp_path / "lesions.csv", [row("a", recist=mark)])
    # prediction: 8 of the 10 columns of the lesion (80 px) and a 4 x 4 stray blob (16 px)
    pred = tmp_path / "pred"
    pred.mkdir()
    p = np.zeros((32, 32), np.uint8)
    p[10:20, 12:20] = 1
    p[0:4, 26:30] = 1
    write_pred(pred / "a.mha", p)
    plain = score_folder(pred, tmp_path / "lesions.csv", sample, "test")
    marked = score_folder(pred, tmp_path / "lesions.csv", sample, "test", postprocess="mark")
    # none: TP 80, FP 16, FN 20 -> 160 / 196; mark: the blob goes, TP 80, FP 0, FN 20 -> 160 / 180
    assert plain["per_lesion"][0]["dice"] == pytest.approx(160 / 196)
    assert marked["per_lesion"][0]["dice"] == pytest.approx(160 / 180)
    assert marked["per_lesion"][0]["precision"] == pytest.approx(1.0)
    assert marked["postprocess"] == "mark" and marked["per_lesion"][0]["postprocess_status"] == "marked"
    assert plain["postprocess"] == "none" and plain["per_lesion"][0]["postprocess_status"] == "unchanged"
    with pytest.raises(ValueError, match="unknown post-processing mode"):
        score_folder(pred, tmp_path / "lesions.csv", sample, "test", postprocess="all")


def test_score_folder_reports_uls23_axis_errors(tmp_path):
    """Long/short axis SAPE |p - t| / (|p| + |t|): a 10 x 8 px block against the 10 x 10 true block."""
    from nnunet_ulseg.workflow.slice_scores import score_folder

    sample, truth = block_sample(tmp_path)
    write_sidecar(tmp_path / "lesions.csv", [row("a", recist=(10.0, 15.0, 19.0, 15.0, 15.0, 11.0, 15.0, 19.0))])
    pred = tmp_path / "pred"
    pred.mkdir()
    p = np.zeros((32, 32), np.uint8)
    p[10:20, 12:20] = 1
    write_pred(pred / "a.mha", p)
    lesion = score_folder(pred, tmp_path / "lesions.csv", sample, "test")["per_lesion"][0]
    # ULS23's convention measures between boundary pixel centres: the long axis of a w x h block is the
    # centre diagonal hypot(w - 1, h - 1); the short axis is the one mask_axes(convention="uls23") gives
    # (tested by hand in test_recist.py)
    from nnunet_ulseg.recist import mask_axes

    d_true, d_pred = math.hypot(9, 9), math.hypot(9, 7)
    s_true = mask_axes(truth.astype(bool), convention="uls23").short_mm
    s_pred = mask_axes(p.astype(bool), convention="uls23").short_mm
    assert lesion["long_err"] == pytest.approx((d_true - d_pred) / (d_true + d_pred), abs=1e-9)
    assert lesion["short_err"] == pytest.approx((s_true - s_pred) / (s_true + s_pred), abs=1e-9)
    assert lesion["short_err"] > 2 * lesion["long_err"]
    write_pred(pred / "a.mha", truth)
    assert score_folder(pred, tmp_path / "lesions.csv", sample, "test")["long_err"]["mean"] == 0.0
    write_pred(pred / "a.mha", np.zeros((32, 32), np.uint8))
    empty = score_folder(pred, tmp_path / "lesions.csv", sample, "test")
    assert empty["per_lesion"][0]["long_err"] == 1.0 and empty["short_err"]["mean"] == 1.0
