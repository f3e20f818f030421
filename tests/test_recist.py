import math

import numpy as np
import pytest

from nnunet_ulseg.recist import (
    Recist,
    ellipse_mask,
    ellipse_params,
    mask_axes,
    parse_numbers,
    rasterize_ellipse,
    Ellipse,
    symmetric_error,
)

EXAMPLE = "233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143"


def test_parse_numbers_and_errors():
    np.testing.assert_allclose(parse_numbers("1, 2.5,3", 3), [1, 2.5, 3])
    with pytest.raises(ValueError, match="expected 3 numbers, got 2"):
        parse_numbers("1, 2", 3, "Spacing_mm_px_")
    with pytest.raises(ValueError, match="NaN"):
        parse_numbers("1, nan, 3", 3)
    with pytest.raises(ValueError, match="not a list of numbers"):
        parse_numbers("1, x, 3", 3)


def test_from_deeplesion_is_one_based_and_round_trips():
    r = Recist.from_deeplesion(EXAMPLE)
    np.testing.assert_allclose(r.long_axis[0], [232.537, 94.0204])
    np.testing.assert_allclose(r.short_axis[1], [235.252, 100.143])
    again = Recist.from_deeplesion(r.to_deeplesion())
    np.testing.assert_allclose(again.points, r.points, atol=1e-4)
    # DL_info's Lesion_diameters_Pixel_ for this row is "11.9677, 5.10387"
    assert r.long_length == pytest.approx(11.9677, abs=1e-3)
    assert r.short_length == pytest.approx(5.10387, abs=1e-3)


@pytest.mark.parametrize(
    "points, message",
    [
        ([1, 1, 1, 1, 0, 0, 2, 2], "zero-length"),
        ([0, 0, 10, 0, 3, 0, 7, 0], "collinear"),
        ([0, 0, 10, 0, 5, 5, 5, 5], "zero-length short"),
        ([0, float("nan"), 10, 0, 5, -2, 5, 2], "NaN"),
    ],
)
def test_degenerate_recist_raises(points, message):
    with pytest.raises(ValueError, match=message):
        Recist.from_points(points)


def test_axes_are_swapped_when_short_comes_first():
    r = Recist.from_points([50, 40, 50, 60, 10, 50, 90, 50])
    assert r.long_length == pytest.approx(80)
    assert r.short_length == pytest.approx(20)


def test_lengths_mm_uses_anisotropic_spacing():
    r = Recist.from_points([0, 0, 10, 0, 5, -2, 5, 2])
    assert r.lengths_mm((0.5, 2.0)) == pytest.approx((5.0, 8.0))


def test_ellipse_params_perfect_mark():
    r = Recist.from_points([10, 50, 90, 50, 50, 30, 50, 70])
    e = ellipse_params(r)
    assert (e.cx, e.cy, e.a, e.b) == pytest.approx((50, 50, 40, 20))
    assert e.theta == pytest.approx(0.0)


def test_ellipse_params_off_centre_short_axis_keeps_both_extents():
    # Short axis crosses the long axis at 1/4 of its length and is off-centre across it.
    r = Recist.from_points([0, 0, 40, 0, 10, -4, 10, 12])
    e = ellipse_params(r)
    assert (e.cx, e.cy, e.a, e.b) == pytest.approx((20, 4, 20, 8))


def test_ellipse_params_rotated_and_non_perpendicular():
    ang = math.radians(30)
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    c = np.array([60.0, 40.0])
    # short axis tilted 10 degrees off the perpendicular
    tilt = math.radians(10)
    s = n * math.cos(tilt) + d * math.sin(tilt)
    pts = np.array([c - 30 * d, c + 30 * d, c - 10 * s, c + 10 * s])
    e = ellipse_params(Recist.from_points(pts))
    assert e.theta == pytest.approx(ang)
    assert (e.cx, e.cy, e.a) == pytest.approx((60, 40, 30))
    assert e.b == pytest.approx(10 * math.cos(tilt))


def test_ellipse_mask_area_and_membership():
    r = Recist.from_points([10, 50, 90, 50, 50, 30, 50, 70])
    m = ellipse_mask(r, (100, 100))
    assert m.sum() == pytest.approx(math.pi * 40 * 20, rel=0.01)
    assert m[50, 10] and m[50, 90] and m[30, 50] and m[70, 50]
    assert not m[50, 9] and not m[29, 50] and not m[31, 11]


def test_ellipse_mask_clipped_at_border_and_tiny_marks_survive():
    r = Recist.from_points([-10, 5, 10, 5, 0, 0, 0, 10])
    m = ellipse_mask(r, (20, 20))
    assert m[5, 0] and m.sum() > 0
    tiny = rasterize_ellipse(Ellipse(3.2, 4.1, 0.2, 0.1, 0.0), (8, 8))
    assert tiny.sum() == 1 and tiny[4, 3]


def test_mask_axes_square_single_pixel_and_bar():
    sq = np.zeros((20, 20), bool)
    sq[5:15, 5:15] = True
    ax = mask_axes(sq)
    # the 0.5 iso-line cuts each corner by half a pixel diagonally
    assert ax.long_mm == pytest.approx(math.hypot(10, 9), abs=0.5)
    assert ax.short_mm == pytest.approx(ax.long_mm, abs=0.01)  # a square's diagonals are equal
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert mask_axes(one).long_mm == pytest.approx(1.0)
    bar = np.zeros((5, 30), bool)
    bar[2, 3:23] = True
    ax = mask_axes(bar)
    assert ax.long_mm == pytest.approx(20.0)
    assert ax.short_mm == pytest.approx(1.0)
    np.testing.assert_allclose(sorted(ax.long_endpoints[:, 0]), [2.5, 22.5])


def test_mask_axes_ellipse_round_trip_and_rotation():
    ang = math.radians(35)
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    c = np.array([64.0, 64.0])
    r = Recist.from_points(np.array([c - 40 * d, c + 40 * d, c - 15 * n, c + 15 * n]))
    ax = mask_axes(ellipse_mask(r, (128, 128)))
    assert ax.long_mm == pytest.approx(80, abs=1.5)
    assert ax.short_mm == pytest.approx(30, abs=1.5)
    long_dir = ax.long_endpoints[1] - ax.long_endpoints[0]
    assert abs(abs(long_dir @ d) / np.linalg.norm(long_dir) - 1) < 0.01
    short_dir = ax.short_endpoints[1] - ax.short_endpoints[0]
    assert abs(short_dir @ long_dir) < 1e-6 * np.linalg.norm(long_dir) * np.linalg.norm(short_dir) + 1e-9


def test_mask_axes_rectangle_and_l_shape():
    rect = np.zeros((60, 60), bool)
    rect[10:20, 5:45] = True  # 40 x 10
    ax = mask_axes(rect)
    assert ax.long_mm == pytest.approx(math.hypot(40, 10), abs=0.8)
    # the short axis is perpendicular to the diagonal: shorter than the long one, longer than 10
    assert 10 < ax.short_mm < ax.long_mm
    ell = np.zeros((40, 40), bool)
    ell[5:35, 5:10] = True
    ell[30:35, 5:35] = True
    ax = mask_axes(ell)
    assert ax.long_mm == pytest.approx(math.hypot(30, 30), abs=1.0)


def test_mask_axes_uses_spacing():
    r = Recist.from_points([10, 50, 90, 50, 50, 30, 50, 70])
    m = ellipse_mask(r, (100, 100))
    iso = mask_axes(m)
    aniso = mask_axes(m, spacing=(0.5, 1.0))
    assert iso.long_mm == pytest.approx(81)
    # 81 px * 0.5 mm wide vs 41 px * 1 mm tall: the long axis becomes the vertical one
    assert aniso.long_mm == pytest.approx(41)
    assert aniso.short_mm == pytest.approx(40.5)
    assert aniso.long_px == pytest.approx(41)


def test_mask_axes_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        mask_axes(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="2D"):
        mask_axes(np.ones((2, 2, 2), bool))
    with pytest.raises(ValueError, match="spacing"):
        mask_axes(np.ones((2, 2), bool), spacing=(0, 1))


def test_mask_axes_as_recist_reproduces_the_ellipse():
    r = Recist.from_points([20, 40, 100, 60, 55, 30, 65, 70])
    m = ellipse_mask(r, (100, 128))
    again = ellipse_mask(mask_axes(m).as_recist(), m.shape)
    dice = 2 * (m & again).sum() / (m.sum() + again.sum())
    assert dice > 0.97


def test_symmetric_error():
    assert symmetric_error(10, 10) == 0
    assert symmetric_error(12, 8) == pytest.approx(0.2)
    assert symmetric_error(0, 0) == 0
    assert symmetric_error(0, 5) == 1
