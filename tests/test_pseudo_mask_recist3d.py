"""3D RECIST estimation (WSSS Sec. 3.3, supplement Fig. 9) against hand-computed spheres and ellipsoids."""
import math

import numpy as np
import pytest

from nnunet_ulseg.pseudo_masks.recist3d import (
    MODES, crossing_point, estimate_recist, estimate_recist_at_slice, estimated_region, slice_distance_mm,
)
from nnunet_ulseg.recist import Recist


def sphere_mark(spacing=(1.0, 1.0), radius_mm=10.0, centre=(40.0, 30.0)):
    """RECIST of a sphere's equator: two perpendicular 2*radius mm diameters through its centre (x, y px)."""
    cx, cy = centre
    rx, ry = radius_mm / spacing[0], radius_mm / spacing[1]
    return Recist.from_points([cx - rx, cy, cx + rx, cy, cx, cy - ry, cx, cy + ry])


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("mode", MODES)
def test_sphere_of_radius_10mm_shrinks_by_pythagoras(mode):
    mark = sphere_mark()
    est = estimate_recist(mark, 6.0, (1.0, 1.0), mode)
    # sqrt(10^2 - 6^2) = 8 on each side: 16 mm axes, same centre
    assert est.long_length == pytest.approx(16.0) and est.short_length == pytest.approx(16.0)
    np.testing.assert_allclose(est.points, [[32, 30], [48, 30], [40, 22], [40, 38]], atol=1e-12)
    np.testing.assert_allclose(crossing_point(est), (40.0, 30.0), atol=1e-12)
    assert estimate_recist(mark, 10.0, (1.0, 1.0), mode) is None  # the sphere's pole: nothing left
    assert estimate_recist(mark, 12.5, (1.0, 1.0), mode) is None
    # above and below the key slice alike; the key slice itself is the mark
    np.testing.assert_allclose(estimate_recist(mark, -6.0, (1.0, 1.0), mode).points, est.points)
    np.testing.assert_allclose(estimate_recist(mark, 0.0, (1.0, 1.0), mode).points, mark.points)


def test_slice_offsets_use_the_slice_interval():
    mark = sphere_mark()
    assert slice_distance_mm(-3, 2.0) == 6.0
    est = estimate_recist_at_slice(mark, -3, (1.0, 1.0, 2.0))  # 3 slices of 2 mm = 6 mm
    assert est.long_length == pytest.approx(16.0)
    assert estimate_recist_at_slice(mark, 2, (1.0, 1.0, 5.0)) is None  # 10 mm
    with pytest.raises(ValueError, match="slice interval"):
        slice_distance_mm(1, 0.0)
    with pytest.raises(ValueError, match=r"\(x, y, z\)"):
        estimate_recist_at_slice(mark, 1, (1.0, 1.0))


def test_anisotropic_in_plane_spacing_measures_in_mm():
    spacing = (0.5, 2.0)  # a 10 mm radius is 20 px along x, 5 px along y
    mark = sphere_mark(spacing)
    est = estimate_recist(mark, 6.0, spacing)
    np.testing.assert_allclose(est.points, [[24, 30], [56, 30], [40, 26], [40, 34]], atol=1e-12)
    long_mm, short_mm = est.lengths_mm(spacing)
    assert long_mm == pytest.approx(16.0) and short_mm == pytest.approx(16.0)
    # the same pixels read with isotropic 1 mm spacing are a 40 x 10 mm lesion: 6 mm is past its short
    # radius for "endpoint" and shrinks the long axis to 2*sqrt(20^2 - 6^2) mm for "ratio"
    assert estimate_recist(mark, 6.0, (1.0, 1.0), "endpoint") is None
    iso = estimate_recist(mark, 6.0, (1.0, 1.0), "ratio")
    assert iso.long_length == pytest.approx(2 * math.sqrt(400 - 36))


def test_each_endpoint_keeps_its_direction_from_the_crossing_point():
    # an oblique, off-centre mark: perpendicular axes crossing at (18.54, 15.69), 0.28 along the long one
    mark = Recist.from_points([10.0, 10.0, 40.0, 30.0, 13.0, 24.0, 21.5, 11.25])
    c = crossing_point(mark)
    for mode in MODES:
        est = estimate_recist(mark, 3.0, (0.8, 0.8), mode)
        np.testing.assert_allclose(crossing_point(est), c, atol=1e-9)
        for before, after in zip(mark.points, est.points):
            np.testing.assert_allclose(unit(after - c), unit(before - c), atol=1e-9)
            assert np.linalg.norm(after - c) < np.linalg.norm(before - c)


def test_endpoint_mode_moves_every_endpoint_by_its_own_distance():
    # long axis 24 mm with the crossing 8 mm from one end; short axis 10 mm centred
    mark = Recist.from_points([0.0, 0.0, 24.0, 0.0, 8.0, -5.0, 8.0, 5.0])
    est = estimate_recist(mark, 4.0, (1.0, 1.0), "endpoint")
    expected_x = [8 - math.sqrt(64 - 16), 8 + math.sqrt(256 - 16)]
    np.testing.assert_allclose(est.long_axis[:, 0], expected_x)
    np.testing.assert_allclose(est.short_axis[:, 1], [-3.0, 3.0])  # sqrt(25 - 16) = 3
    # past the short radius (5 mm) the mark has no width left: beyond reach, although the long axis is not
    assert estimate_recist(mark, 5.0, (1.0, 1.0), "endpoint") is None


def test_ratio_mode_keeps_the_short_to_long_ratio():
    mark = Recist.from_points([0.0, 0.0, 24.0, 0.0, 8.0, -5.0, 8.0, 5.0])
    est = estimate_recist(mark, 4.0, (1.0, 1.0), "ratio")
    long_expected = math.sqrt(64 - 16) + math.sqrt(256 - 16)
    assert est.long_length == pytest.approx(long_expected)
    assert est.short_length / est.long_length == pytest.approx(10.0 / 24.0)
    # the estimate lasts as long as the long axis: until the farther long endpoint's 16 mm
    assert estimate_recist(mark, 15.9, (1.0, 1.0), "ratio") is not None
    assert estimate_recist(mark, 16.0, (1.0, 1.0), "ratio") is None


def test_bad_arguments_are_refused():
    mark = sphere_mark()
    with pytest.raises(ValueError, match="mode"):
        estimate_recist(mark, 1.0, (1.0, 1.0), "cube")
    with pytest.raises(ValueError, match="spacing"):
        estimate_recist(mark, 1.0, (1.0, -1.0))
    with pytest.raises(ValueError, match="offset"):
        estimate_recist(mark, float("nan"), (1.0, 1.0))


def test_estimated_region_is_the_ellipse_of_the_estimate():
    mark = sphere_mark()
    region = estimated_region(estimate_recist(mark, 6.0, (1.0, 1.0)), (60, 80))
    yy, xx = np.mgrid[:60, :80]
    np.testing.assert_array_equal(region, (xx - 40) ** 2 + (yy - 30) ** 2 <= 64)  # the 8 mm circle
    assert not estimated_region(None, (60, 80)).any()
