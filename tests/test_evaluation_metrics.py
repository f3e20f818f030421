"""Per-lesion metric record on hand-made shapes with known answers; Dice against nnU-Net's own evaluation."""
import math

import numpy as np
import pytest

from nnunet_ulseg.evaluation.metrics import (
    LesionMetrics,
    axis_error,
    largest_component,
    lesion_metrics,
    lesion_type_name,
    measure_mask,
    volumetric_similarity,
)
from nnunet_ulseg.evaluation.overlap import Overlap
from nnunet_ulseg.recist import Ellipse, mask_axes, rasterize_ellipse

from mask_helpers import box


def test_lesion_type_names_follow_deeplesion():
    assert [lesion_type_name(t) for t in range(1, 9)] == [
        "bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis"]
    assert lesion_type_name(-1) == lesion_type_name(None) == lesion_type_name(9) == "unknown"


def test_largest_component_counts_8_connected_and_breaks_ties_in_raster_order():
    m = box((10, 10), 0, 0, 2, 2) | box((10, 10), 5, 5, 3, 3)
    big, n = largest_component(m)
    assert n == 2 and big.sum() == 9 and big[5, 5]
    diag = np.zeros((4, 4), bool)
    diag[0, 0] = diag[1, 1] = True  # diagonal neighbours: one 8-connected component
    assert largest_component(diag)[1] == 1
    tie = box((6, 6), 4, 4, 2, 2) | box((6, 6), 0, 0, 2, 2)
    first, n = largest_component(tie)
    assert n == 2 and first[0, 0] and not first[4, 4]
    empty, n = largest_component(np.zeros((3, 3), bool))
    assert n == 0 and not empty.any()


def test_rectangle_axes_by_hand_isotropic_and_anisotropic_edge_convention():
    # 10 x 4 px rectangle: the 0.5 iso-line cuts the corners, so the farthest boundary points are the
    # chamfer vertices (-0.5, 0) and (9.5, 3) -> sqrt(10² + 3²); the perpendicular chord spans the
    # 4 px height: 4 / cos = 4 * sqrt(109) / 10
    m = box((12, 16), 3, 2, 4, 10)
    r = measure_mask(m, (1.0, 1.0), "edge")
    assert r.long_mm == pytest.approx(math.sqrt(109))
    assert r.short_mm == pytest.approx(0.4 * math.sqrt(109))
    assert r.area_mm2 == 40 and r.components == 1 and r.convention == "edge"
    # sx = 0.5, sy = 2: in mm the rectangle is 5 x 8; farthest chamfer vertices (0, -1), (4.5, 7)
    r = measure_mask(m, (0.5, 2.0), "edge")
    assert r.long_mm == pytest.approx(math.sqrt(4.5 ** 2 + 8 ** 2))
    assert r.short_mm == pytest.approx(5 * math.sqrt(84.25) / 8)
    assert r.area_mm2 == pytest.approx(40.0)


def test_rectangle_axes_by_hand_uls23_convention():
    # the same 10 x 4 rectangle between boundary pixel centres: corners (2, 3) and (11, 6) -> sqrt(9² + 3²);
    # (-1, 3) is exactly perpendicular to (9, 3) and joins boundary pixels (3, 3) and (2, 6): sqrt(10)
    m = box((12, 16), 3, 2, 4, 10)
    assert measure_mask(m, (1.0, 1.0)).convention == "edge"  # the default keeps earlier callers' numbers
    r = measure_mask(m, (1.0, 1.0), "uls23")
    assert r.convention == "uls23"
    assert r.long_mm == pytest.approx(math.sqrt(90)) and r.short_mm == pytest.approx(math.sqrt(10))
    np.testing.assert_allclose(r.long_endpoints, [[2, 3], [11, 6]])
    np.testing.assert_allclose(r.short_endpoints, [[3, 3], [2, 6]])
    # sx = 0.5, sy = 2: the centres span 4.5 x 6 mm -> long sqrt(4.5² + 6²) = 7.5.  Exactly perpendicular
    # would need 16/3 columns per row; the best pair step is (-5, 1) px = (-2.5, 2) mm, 1.79 degrees off
    # (e.g. boundary pixels (7, 3) and (2, 4)), so ULS23's tolerance widens to 2 degrees, which admits
    # nothing else (the next best, (-9, 2) px, is 4.76 degrees off)
    r = measure_mask(m, (0.5, 2.0), "uls23")
    assert r.long_mm == pytest.approx(7.5)
    assert r.short_mm == pytest.approx(math.hypot(2.5, 2.0))
    with pytest.raises(ValueError, match="convention"):
        measure_mask(m, (1.0, 1.0), "centre")


def test_ellipse_and_rotated_shape_axes_edge_convention():
    # rasterised ellipse, semi-axes 20 and 8 px at 30 degrees: axes within a pixel of 40 and 16
    # (ULS23's 1-degree perpendicular tolerance gives 13.9 for this one: tests/test_recist.py)
    convention = "edge"
    e = rasterize_ellipse(Ellipse(40, 40, 20, 8, math.radians(30)), (80, 80))
    r = measure_mask(e, (1.0, 1.0), convention)
    assert r.long_mm == pytest.approx(40, abs=1.0)
    assert r.short_mm == pytest.approx(16, abs=1.0)
    assert r.area_mm2 == pytest.approx(math.pi * 20 * 8, rel=0.03)
    # the same ellipse in mm on 0.5 x 1 mm pixels: pixel (r, c) sits at (0.5 c, r) mm
    ys, xs = np.mgrid[0:60, 0:120]
    x, y = xs * 0.5 - 30, ys * 1.0 - 30
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    u, v = x * c + y * s, -x * s + y * c
    aniso = (u / 20) ** 2 + (v / 8) ** 2 <= 1
    r = measure_mask(aniso, (0.5, 1.0), convention)
    assert r.long_mm == pytest.approx(40, abs=1.0)
    assert r.short_mm == pytest.approx(16, abs=1.0)
    # rotated 20 x 6 rectangle (45 degrees): long axis = its diagonal sqrt(436) within a pixel
    u, v = (xs - 60) * 0.7071 + (ys - 30) * 0.7071, -(xs - 60) * 0.7071 + (ys - 30) * 0.7071
    rot = (np.abs(u) <= 10) & (np.abs(v) <= 3)
    r = measure_mask(rot, (1.0, 1.0), convention)
    assert r.long_mm == pytest.approx(math.sqrt(20 ** 2 + 6 ** 2), abs=1.0)
    assert r.short_mm == pytest.approx(6 * math.sqrt(436) / 20, abs=1.0)


def test_measure_uses_largest_component_and_reports_count():
    m = box((30, 30), 3, 2, 4, 10) | box((30, 30), 20, 20, 2, 2)
    r = measure_mask(m, (0.5, 2.0), "uls23")
    only = mask_axes(box((30, 30), 3, 2, 4, 10), (0.5, 2.0), convention="uls23")
    assert r.components == 2
    assert r.long_mm == pytest.approx(only.long_mm) and r.short_mm == pytest.approx(only.short_mm)
    assert r.area_mm2 == pytest.approx(40.0) and r.total_area_mm2 == pytest.approx(44.0)
    empty = measure_mask(np.zeros((5, 5), bool), (1, 1))
    assert math.isnan(empty.long_mm) and empty.area_mm2 == 0 and empty.components == 0


def test_volumetric_similarity_and_axis_error():
    assert volumetric_similarity(Overlap(4, 0, 8)) == pytest.approx(0.5)  # 1 - 8 / 16
    assert volumetric_similarity(Overlap(8, 8, 8)) == 1.0  # equal volumes, poor overlap
    assert volumetric_similarity(Overlap(0, 0, 0)) == 1.0
    assert volumetric_similarity(Overlap(0, 5, 0)) == 0.0
    assert axis_error(5.0, 10.0) == pytest.approx(1 / 3)
    assert math.isnan(axis_error(float("nan"), 3.0))


def test_offset_squares_full_record():
    a = box((12, 10), 2, 2, 4, 4)
    b = box((12, 10), 4, 2, 4, 4)
    m = lesion_metrics(a, b, (1.0, 1.0), recist_long_mm=10.0, recist_short_mm=5.0)
    assert (m.tp, m.fp, m.fn) == (8, 8, 8)
    assert m.dice == m.precision == m.recall == 0.5
    assert m.vs == 1.0
    assert (m.avg_hd_mm, m.hd95_mm, m.hd_mm) == (1.0, 2.0, 2.0)
    # each directed set is 4 x 0, 4 x 1, 4 x 2: linear 95th percentile at position 10.45 -> 2
    assert m.hd95_max_directed_mm == 2.0
    # all pixels: 4 at 2, 4 at 1, 8 inside the other square -> (8 + 4) / 16 both ways
    assert m.avd_mm == m.avd_mean_mm == 0.75
    # 4x4 squares, ULS23: corner centres sqrt(3² + 3²) apart, the other diagonal is the short axis
    assert m.pred_long_mm == pytest.approx(3 * math.sqrt(2)) and m.ref_short_mm == pytest.approx(3 * math.sqrt(2))
    # edge: chamfer vertices (-0.5, 0) and (3.5, 3) are 5 apart; the short axis is 5 too
    assert m.pred_long_edge_mm == pytest.approx(5.0) and m.ref_long_edge_mm == pytest.approx(5.0)
    assert m.pred_short_edge_mm == pytest.approx(5.0)
    assert m.long_err == pytest.approx(0.0) and m.short_err == pytest.approx(0.0)
    assert m.long_err_edge == pytest.approx(0.0) and m.short_err_edge == pytest.approx(0.0)
    # against the mark: the edge convention by default (5 vs 10 and 5 vs 5) ...
    assert m.pred_long_err_recist == pytest.approx(5 / 15)
    assert m.pred_short_err_recist == pytest.approx(0.0)
    # ... or ULS23's when the marks were derived with it
    u = lesion_metrics(a, b, (1.0, 1.0), 10.0, 5.0, recist_convention="uls23")
    assert u.pred_long_err_recist == pytest.approx((10 - 3 * math.sqrt(2)) / (10 + 3 * math.sqrt(2)))
    with pytest.raises(ValueError, match="recist_convention"):
        lesion_metrics(a, b, (1.0, 1.0), recist_convention="centres")
    assert m.pred_components == m.ref_components == 1
    assert m.pred_area_mm2 == 16
    assert set(m.as_dict()) == {f for f in LesionMetrics.__dataclass_fields__}


def test_subset_record_and_anisotropic_areas():
    ref = box((10, 10), 2, 2, 3, 4)  # 12 px
    pred = box((10, 10), 2, 2, 1, 4)  # 4 px, inside
    m = lesion_metrics(pred, ref, (0.5, 2.0))
    assert (m.tp, m.fp, m.fn) == (4, 0, 8)
    assert m.precision == 1.0 and m.recall == pytest.approx(1 / 3)
    assert m.dice == pytest.approx(0.5) and m.vs == pytest.approx(0.5)
    assert m.ref_area_mm2 == pytest.approx(12.0) and m.pred_area_mm2 == pytest.approx(4.0)
    assert math.isnan(m.pred_long_err_recist)  # no RECIST lengths given


def test_empty_prediction_reference_and_both():
    ref = box((10, 10), 2, 2, 3, 3)
    empty = np.zeros((10, 10), bool)
    m = lesion_metrics(empty, ref, (1, 1), 4.0, 3.0)
    assert m.pred_empty and not m.ref_empty
    assert m.dice == 0.0 and m.recall == 0.0 and math.isnan(m.precision) and m.vs == 0.0
    assert math.isnan(m.avg_hd_mm) and math.isnan(m.hd95_mm) and math.isnan(m.hd95_max_directed_mm)
    assert math.isnan(m.avd_mm) and math.isnan(m.avd_mean_mm)
    assert math.isnan(m.pred_long_mm) and math.isnan(m.long_err) and m.pred_components == 0
    assert math.isnan(m.pred_long_edge_mm) and math.isnan(m.long_err_edge)
    assert math.isfinite(m.ref_long_mm) and math.isfinite(m.ref_long_err_recist)
    m = lesion_metrics(ref, empty, (1, 1))
    assert m.ref_empty and m.dice == 0.0 and math.isnan(m.recall) and math.isnan(m.hd_mm)
    m = lesion_metrics(empty, empty, (1, 1))
    assert m.dice == 1.0 and m.vs == 1.0 and math.isnan(m.avg_hd_mm) and math.isnan(m.long_err)


def test_axis_conventions_differ_by_about_a_pixel_on_a_disc():
    # pixels within 6 px of (10, 10): ULS23 measures 12 x 12 between centres, the edge convention 13 x 13,
    # so a 1-px-too-small prediction scores 0 error under one convention and not under the other
    yy, xx = np.mgrid[0:21, 0:21]
    ref = (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    m = lesion_metrics(ref, ref, (0.8, 0.8))
    assert (m.ref_long_mm, m.ref_short_mm) == (pytest.approx(9.6), pytest.approx(9.6))
    assert (m.ref_long_edge_mm, m.ref_short_edge_mm) == (pytest.approx(10.4), pytest.approx(10.4))


def test_several_components_and_border_touching():
    ref = box((20, 20), 0, 0, 6, 6)  # touches the top-left array border
    pred = ref | box((20, 20), 15, 15, 2, 2)
    m = lesion_metrics(pred, ref, (1, 1))
    assert m.pred_components == 2 and m.ref_components == 1
    assert m.pred_long_mm == pytest.approx(m.ref_long_mm)  # measured on the largest component
    assert m.long_err == 0.0
    # the blob's far pixel (16, 16) is nearest to the reference corner (5, 5): sqrt(11² + 11²)
    assert m.hd_mm == pytest.approx(11 * math.sqrt(2))
    same = lesion_metrics(ref, ref, (1, 1))
    assert same.dice == 1.0 and same.hd_mm == 0.0 and same.avg_hd_mm == 0.0


def test_dice_equals_nnunet_compute_metrics(tmp_path):
    import SimpleITK as sitk
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(7)
    ref = (rng.random((40, 48)) > 0.5).astype(np.uint8) + (rng.random((40, 48)) > 0.8)  # labels 0, 1, 2
    pred = (rng.random((40, 48)) > 0.4).astype(np.uint8)
    for name, arr, ext in [("ref", ref, ".nii.gz"), ("pred", pred, ".nii.gz"), ("ref", ref, ".mha"),
                           ("pred", pred, ".mha")]:
        sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(tmp_path / f"{name}{ext}"))
    m = lesion_metrics(pred == 1, ref == 1, (1.0, 1.0))
    for ext in (".nii.gz", ".mha"):
        nn = compute_metrics(str(tmp_path / f"ref{ext}"), str(tmp_path / f"pred{ext}"), SimpleITKIO(), [1])
        nn = nn["metrics"][1]
        assert (m.tp, m.fp, m.fn) == (nn["TP"], nn["FP"], nn["FN"])
        assert m.dice == pytest.approx(nn["Dice"], abs=1e-12)
