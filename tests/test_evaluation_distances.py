"""Surface distances on hand-made shapes whose values are computed by hand (see each comment)."""
import math

import numpy as np
import pytest

from nnunet_ulseg.evaluation.distances import (
    directed_distances,
    nearest_rank_percentile,
    surface,
    surface_distances,
    surface_points_mm,
)

from mask_helpers import box


def ring():
    """7x7 square (rows/cols 2..8) with a 3x3 hole (rows/cols 4..6) in an 11x11 array."""
    m = box((11, 11), 2, 2, 7, 7)
    m[4:7, 4:7] = False
    return m


def test_surface_of_square_ring_pixel_and_border():
    # 4x4 square: the 12 perimeter pixels, not the inner 2x2
    s = surface(box((8, 8), 2, 2, 4, 4))
    assert s.sum() == 12 and not s[3:5, 3:5].any()
    # ring: 24 outer perimeter + 12 pixels 4-adjacent to the hole; the 4 diagonal corners of the hole are not
    s = surface(ring())
    assert s.sum() == 36
    assert not s[3, 3] and not s[3, 7] and not s[7, 3] and not s[7, 7]
    assert s[3, 4] and s[4, 3]
    # single pixel is its own surface
    assert surface(box((5, 5), 2, 2, 1, 1)).sum() == 1
    # a mask covering the whole array: outside counts as background, so the array edge is surface
    s = surface(np.ones((5, 6), bool))
    assert s.sum() == 5 * 6 - 3 * 4
    with pytest.raises(ValueError, match="2D"):
        surface(np.ones((2, 2, 2), bool))


def test_surface_points_are_pixel_centres_in_mm_x_first():
    m = np.zeros((4, 5), bool)
    m[3, 1] = True
    np.testing.assert_allclose(surface_points_mm(m, (0.5, 2.0)), [[0.5, 6.0]])
    with pytest.raises(ValueError, match="spacing"):
        surface_points_mm(m, (0.0, 1.0))


def test_offset_squares_by_hand():
    # A rows 2..5, B rows 4..7 (cols 2..5).  From A: top row 4 px at 2, bottom row 2 px at 0 and 2 at 1,
    # side pixels of rows 3 at 1 and rows 4 at 0 -> 4x2, 4x1, 4x0, mean 1; B->A is the mirror image.
    a = box((12, 10), 2, 2, 4, 4)
    b = box((12, 10), 4, 2, 4, 4)
    np.testing.assert_allclose(np.sort(directed_distances(a, b)), [0] * 4 + [1] * 4 + [2] * 4)
    d = surface_distances(a, b)
    assert d.pred_to_ref_mm == 1.0 and d.ref_to_pred_mm == 1.0
    assert d.avg_hd_mm == 1.0
    assert d.hd_mm == 2.0
    # 24 pooled values (8 zeros, 8 ones, 8 twos): the ceil(0.95 * 24) = 23rd smallest is 2
    assert d.hd95_mm == 2.0
    # anisotropic: rows are 0.5 mm apart, columns 1 mm; every nearest neighbour is vertical -> all halve
    d = surface_distances(a, b, spacing=(1.0, 0.5))
    assert (d.avg_hd_mm, d.hd95_mm, d.hd_mm) == (0.5, 1.0, 1.0)


def test_ring_against_filled_square_isotropic_and_anisotropic():
    filled = box((11, 11), 2, 2, 7, 7)
    # ring -> filled: 24 outer pixels at 0, the 12 hole-side pixels at 1 px from the outer perimeter
    d = surface_distances(ring(), filled)
    assert d.pred_to_ref_mm == pytest.approx(12 / 36)
    assert d.ref_to_pred_mm == 0.0
    assert d.avg_hd_mm == pytest.approx(1 / 6)
    assert d.hd_mm == 1.0
    # 60 pooled values, 48 zeros and 12 ones: the 57th smallest is 1
    assert d.hd95_mm == 1.0
    # sx = 2 mm: the 6 pixels above/below the hole stay 1 mm away (vertical); the 6 left/right of it are
    # 2 mm from the outer column (and >= 2 mm vertically) -> mean (6*1 + 6*2)/36 = 0.5
    d = surface_distances(ring(), filled, spacing=(2.0, 1.0))
    assert d.pred_to_ref_mm == pytest.approx(0.5)
    assert d.avg_hd_mm == pytest.approx(0.25)
    assert d.hd_mm == 2.0 and d.hd95_mm == 2.0


def test_single_pixels_and_outlier():
    a = box((10, 10), 2, 3, 1, 1)
    b = box((10, 10), 5, 7, 1, 1)
    d = surface_distances(a, b)
    assert d.avg_hd_mm == d.hd95_mm == d.hd_mm == 5.0
    d = surface_distances(a, b, spacing=(2.0, 1.0))  # dx = 4 px * 2 mm, dy = 3 px * 1 mm
    assert d.hd_mm == pytest.approx(math.sqrt(73))
    # square vs square + far pixel: HD sees the outlier, HD95 does not (1 of 73 pooled values)
    sq = box((12, 40), 0, 0, 10, 10)
    plus = sq.copy()
    plus[0, 30] = True  # 21 px from the square's pixel (0, 9)
    d = surface_distances(sq, plus)
    assert d.hd_mm == 21.0
    assert d.hd95_mm == 0.0
    assert d.avg_hd_mm == pytest.approx((0 + 21 / 37) / 2)


def test_empty_masks_give_nan_and_inputs_are_checked():
    a = box((6, 6), 1, 1, 2, 2)
    empty = np.zeros((6, 6), bool)
    for p, r in [(a, empty), (empty, a), (empty, empty)]:
        d = surface_distances(p, r)
        assert math.isnan(d.avg_hd_mm) and math.isnan(d.hd95_mm) and math.isnan(d.hd_mm) and not d.defined
    assert directed_distances(empty, a).size == 0
    assert np.all(np.isinf(directed_distances(a, empty)))
    with pytest.raises(ValueError, match="shape"):
        surface_distances(a, np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(a, a, spacing=(1.0, -1.0))


def test_nearest_rank_percentile():
    v = np.arange(1, 21, dtype=float)[::-1]
    assert nearest_rank_percentile(v, 95) == 19.0  # ceil(19.0) = 19th smallest
    assert nearest_rank_percentile(v, 100) == 20.0
    assert nearest_rank_percentile(v, 0) == 1.0
    assert nearest_rank_percentile(v, 96) == 20.0  # ceil(19.2) = 20
    assert math.isnan(nearest_rank_percentile([], 95))
    with pytest.raises(ValueError):
        nearest_rank_percentile(v, 101)


def test_matches_brute_force_on_random_shapes():
    rng = np.random.default_rng(3)
    spacing = (0.7, 1.3)
    for _ in range(5):
        a = rng.random((20, 24)) > 0.6
        b = rng.random((20, 24)) > 0.5
        pa, pb = surface_points_mm(a, spacing), surface_points_mm(b, spacing)
        dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
        dab, dba = dist.min(1), dist.min(0)
        pooled = np.sort(np.concatenate([dab, dba]))
        d = surface_distances(a, b, spacing)
        assert d.avg_hd_mm == pytest.approx((dab.mean() + dba.mean()) / 2)
        assert d.hd_mm == pytest.approx(pooled[-1])
        assert d.hd95_mm == pytest.approx(pooled[math.ceil(0.95 * len(pooled)) - 1])
