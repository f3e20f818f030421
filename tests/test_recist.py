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


# --- axis conventions -------------------------------------------------------------------------


def rect(w, h, r0=3, c0=4):
    m = np.zeros((h + 8, w + 9), bool)
    m[r0:r0 + h, c0:c0 + w] = True
    return m


@pytest.mark.parametrize("w, h", [(5, 3), (10, 4), (7, 7), (3, 9), (2, 2)])
def test_rectangle_long_axis_under_both_conventions(w, h):
    # uls23: the corner pixel centres, sqrt((w-1)² + (h-1)²) apart, first pair in row-major order:
    # top-left then bottom-right.  edge: the iso-line's chamfer vertices, sqrt(max² + (min-1)²)
    u = mask_axes(rect(w, h), convention="uls23")
    assert u.long_mm == pytest.approx(math.hypot(w - 1, h - 1)) and u.convention == "uls23"
    np.testing.assert_allclose(u.long_endpoints, [[4, 3], [4 + w - 1, 3 + h - 1]])
    e = mask_axes(rect(w, h), convention="edge")
    assert e.long_mm == pytest.approx(math.hypot(max(w, h), min(w, h) - 1)) and e.convention == "edge"
    assert e.long_mm - u.long_mm == pytest.approx(1.0, abs=0.3)  # "about one pixel"


def test_rectangle_short_axis_uls23_by_hand():
    # 5 x 3: long (0,0)->(4,2) relative; (-1, 2) is exactly perpendicular and joins boundary pixels
    # (x 5, y 3) and (x 4, y 5): sqrt(5).  Square: the other diagonal
    u = mask_axes(rect(5, 3), convention="uls23")
    assert u.short_mm == pytest.approx(math.sqrt(5))
    np.testing.assert_allclose(u.short_endpoints, [[5, 3], [4, 5]])
    assert mask_axes(rect(7, 7), convention="uls23").short_mm == pytest.approx(6 * math.sqrt(2))
    # 10 x 2 bar: long (0,0)->(9,1); no pair is within 6 degrees of perpendicular, the best is the
    # vertical step (0, 1) at 90 - atan(9) = 6.34 degrees, so ULS23's tolerance widens to 7 degrees
    u = mask_axes(rect(10, 2), convention="uls23")
    assert u.long_mm == pytest.approx(math.sqrt(82)) and u.short_mm == pytest.approx(1.0)


def test_degenerate_masks_under_both_conventions():
    one = rect(1, 1)
    u, e = mask_axes(one, convention="uls23"), mask_axes(one, convention="edge")
    assert (u.long_mm, u.short_mm) == (0.0, 0.0) and (e.long_mm, e.short_mm) == (1.0, 1.0)
    np.testing.assert_allclose(u.long_endpoints, [[4, 3], [4, 3]])
    # one-pixel-wide bar: n - 1 x 0 between centres (ULS23's loop would return the long axis as the
    # short one there), n x 1 between edges; also along a diagonal
    u, e = mask_axes(rect(6, 1), convention="uls23"), mask_axes(rect(6, 1), convention="edge")
    assert (u.long_mm, u.short_mm) == (5.0, 0.0) and (e.long_mm, e.short_mm) == (6.0, 1.0)
    diag = np.eye(6, dtype=bool)
    u = mask_axes(diag, convention="uls23")
    assert u.long_mm == pytest.approx(5 * math.sqrt(2)) and u.short_mm == 0.0
    with pytest.raises(ValueError, match="convention"):
        mask_axes(one, convention="centre")


def test_disc_under_both_conventions():
    # the pixels within 6 px of a pixel centre: boundary centres at +-6 on both axes -> 12 x 12;
    # the iso-line reaches 6.5 there -> 13 x 13
    yy, xx = np.mgrid[0:21, 0:21]
    disc = (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    u, e = mask_axes(disc, convention="uls23"), mask_axes(disc, convention="edge")
    assert (u.long_mm, u.short_mm) == (pytest.approx(12.0), pytest.approx(12.0))
    assert (e.long_mm, e.short_mm) == (pytest.approx(13.0), pytest.approx(13.0))
    np.testing.assert_allclose(u.long_endpoints, [[10, 4], [10, 16]])  # first boundary pixel is the top one
    np.testing.assert_allclose(sorted(u.short_endpoints[:, 0]), [4, 16])


def uls23_reference(mask):
    """ULS23's per-slice rule re-implemented plainly (brute force, in (row, col) voxel space).

    Boundary = mask minus its 4-connected erosion; long axis = first farthest pair over all ordered
    pairs; short axis = longest pair within the smallest whole-degree tolerance ``|angle - 90| < t``
    (t = 0, 1, 2, ...) that admits one.  Returns lengths and (x, y) endpoints.
    """
    import itertools

    from scipy.ndimage import binary_erosion

    pts = np.argwhere(mask & ~binary_erosion(mask)).astype(float)
    best, p1, p2 = 0.0, pts[0], pts[0]
    for a in pts:
        for b in pts:
            d = float(np.linalg.norm(a - b))
            if d > best:
                best, p1, p2 = d, a, b
    v1 = p2 - p1
    tol, short, ends = 0, 0.0, None
    while ends is None:
        for a, b in itertools.combinations(pts, 2):
            v2 = b - a
            cos = np.clip(v1 @ v2 / (np.linalg.norm(v1) * np.linalg.norm(v2)), -1, 1)
            if abs(math.degrees(math.acos(cos)) - 90) < tol and np.linalg.norm(v2) > short:
                short, ends = float(np.linalg.norm(v2)), (a, b)
        tol += 1
    xy = lambda p: p[::-1]  # noqa: E731
    return best, short, np.array([xy(p1), xy(p2)]), np.array([xy(ends[0]), xy(ends[1])])


def test_uls23_convention_matches_a_plain_reimplementation_of_uls23s_rule():
    rng = np.random.default_rng(11)
    from scipy import ndimage

    shapes = [rasterize_ellipse(Ellipse(20, 20, 12, 5, math.radians(30)), (40, 40))]
    for _ in range(4):
        noise = ndimage.gaussian_filter(rng.random((30, 32)), 2.5)
        blob = noise > np.percentile(noise, 60)  # irregular, concave blobs of ~100-300 px
        lab, n = ndimage.label(blob)
        if n:
            shapes.append(lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    shapes.append(rect(10, 2))
    for m in shapes:
        long_px, short_px, long_pts, short_pts = uls23_reference(m)
        ax = mask_axes(m, convention="uls23")
        assert ax.long_mm == pytest.approx(long_px) and ax.short_mm == pytest.approx(short_px)
        np.testing.assert_allclose(ax.long_endpoints, long_pts)
        np.testing.assert_allclose(ax.short_endpoints, short_pts)
        # square pixels of 0.8 mm: the same pairs, lengths scaled
        mm = mask_axes(m, (0.8, 0.8), convention="uls23")
        assert (mm.long_mm, mm.short_mm) == (pytest.approx(0.8 * long_px), pytest.approx(0.8 * short_px))
        np.testing.assert_allclose(mm.long_endpoints, long_pts)


def test_uls23_short_axis_of_an_oblique_ellipse_is_limited_by_the_tolerance():
    # semi-axes 20 and 8 px at 30 degrees: ~15 px between boundary centres across the minor axis, but
    # no boundary pair that long is within 1 degree of perpendicular to the long axis
    e = rasterize_ellipse(Ellipse(40, 40, 20, 8, math.radians(30)), (80, 80))
    u, ed = mask_axes(e, convention="uls23"), mask_axes(e, convention="edge")
    assert u.short_mm == pytest.approx(13.8924, abs=1e-3) and ed.short_mm == pytest.approx(16, abs=1.0)
    assert u.long_mm == pytest.approx(39.446, abs=1e-3)


def test_uls23_endpoints_give_a_recist_mark_in_pixel_coordinates():
    # the call a converter makes: endpoints are 0-based (x, y) pixel centres, long then short
    r = Recist.from_points([20, 40, 100, 60, 55, 30, 65, 70])
    m = ellipse_mask(r, (100, 128))
    ax = mask_axes(m, (0.7, 0.7), convention="uls23")
    mark = ax.as_recist()
    assert mark.long_length * 0.7 == pytest.approx(ax.long_mm)
    assert np.all(m[ax.long_endpoints[:, 1].astype(int), ax.long_endpoints[:, 0].astype(int)])
    assert np.all(m[ax.short_endpoints[:, 1].astype(int), ax.short_endpoints[:, 0].astype(int)])
    assert mark.long_length == pytest.approx(r.long_length, abs=1.5)
