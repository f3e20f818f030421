"""Surface distances on hand-made shapes whose values are computed by hand (see each comment)."""
import math

import numpy as np
import pytest

from nnunet_ulseg.evaluation.distances import (
    average_distance,
    directed_average_distance,
    directed_distances,
    linear_percentile,
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


def test_pixel_against_line_separates_the_two_hd95s_by_hand():
    # A: the pixel (0, 0); B: row 0, columns 0..4.  d(A -> B) = [0]; d(B -> A) = [0, 1, 2, 3, 4].
    a = box((3, 7), 0, 0, 1, 1)
    b = box((3, 7), 0, 0, 1, 5)
    d = surface_distances(a, b)
    # pooled [0, 0, 1, 2, 3, 4], nearest rank ceil(0.95 * 6) = 6th -> 4
    assert d.hd95_mm == 4.0
    # directed, linear: B -> A at position 0.95 * 4 = 3.8 -> 3.8; A -> B is 0; max 3.8
    assert d.ref_to_pred_hd95_mm == pytest.approx(3.8) and d.pred_to_ref_hd95_mm == 0.0
    assert d.hd95_max_directed_mm == pytest.approx(3.8)
    assert d.hd_mm == 4.0 and d.avg_hd_mm == pytest.approx(1.0)  # (0 + 2) / 2
    # all-pixel AVD: A lies inside B (0); B's pixels are 0..4 from A (mean 2): max 2, mean 1
    avd = average_distance(a, b)
    assert (avd.pred_to_ref_mm, avd.ref_to_pred_mm) == (0.0, 2.0)
    assert avd.avd_mm == 2.0 and avd.avd_mean_mm == 1.0


def test_avd_counts_every_pixel_and_the_overlap_as_zero():
    # 4x4 square A (rows 2..5) inside the 6x4 rectangle B (rows 2..7): d(A, B) = 0; B's rows 6 and 7 are
    # 1 and 2 from A -> (4*1 + 4*2) / 24 = 0.5.  Surfaces instead: B's 16 surface pixels, rows 6-7 at 1, 2
    a = box((12, 10), 2, 2, 4, 4)
    b = box((12, 10), 2, 2, 6, 4)
    avd = average_distance(a, b)
    assert avd.avd_mm == pytest.approx(0.5) and avd.avd_mean_mm == pytest.approx(0.25)
    # shifted squares (rows 2..5 vs 4..7): 4 px at 2, 4 at 1, 8 inside -> 12/16 both ways
    avd = average_distance(a, box((12, 10), 4, 2, 4, 4))
    assert avd.avd_mm == avd.avd_mean_mm == 0.75
    # anisotropic: rows 0.5 mm apart -> every distance halves
    avd = average_distance(a, box((12, 10), 4, 2, 4, 4), spacing=(1.0, 0.5))
    assert avd.avd_mm == pytest.approx(0.375)
    empty = np.zeros_like(a)
    for p, r in [(a, empty), (empty, a), (empty, empty)]:
        v = average_distance(p, r)
        assert math.isnan(v.avd_mm) and math.isnan(v.avd_mean_mm)
    assert math.isnan(directed_average_distance(empty, a)) and math.isinf(directed_average_distance(a, empty))
    with pytest.raises(ValueError, match="shape"):
        average_distance(a, np.zeros((5, 5), bool))


def test_max_directed_hd95_is_never_below_the_pooled_one_under_linear_interpolation():
    rng = np.random.default_rng(5)
    for _ in range(10):
        a = rng.random((16, 18)) > 0.5
        b = rng.random((16, 18)) > 0.6
        d = surface_distances(a, b, (0.9, 1.1))
        pooled = np.concatenate([directed_distances(a, b, (0.9, 1.1)), directed_distances(b, a, (0.9, 1.1))])
        assert d.hd95_max_directed_mm >= linear_percentile(pooled, 95) - 1e-12


def test_linear_percentile_is_numpys_default():
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert linear_percentile(v, 95) == pytest.approx(3.8)
    assert linear_percentile(v, 50) == 2.0
    assert math.isnan(linear_percentile([], 95))
    with pytest.raises(ValueError):
        linear_percentile(v, -1)


def brute_force(a, b, spacing):
    """O(n²) directed surface distances and all-pixel averages, computed without the module's helpers."""
    def points(m, surf):
        if surf:
            inner = np.zeros_like(m)
            inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            m = m & ~inner
        r, c = np.nonzero(m)
        return np.stack([c * spacing[0], r * spacing[1]], 1)

    def nearest(p, q):
        return np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)).min(1)

    pad = lambda m: np.pad(m, 1)  # noqa: E731  (outside the array is background)
    sa, sb = points(pad(a), True), points(pad(b), True)
    fa, fb = points(pad(a), False), points(pad(b), False)
    return nearest(sa, sb), nearest(sb, sa), nearest(fa, fb).mean(), nearest(fb, fa).mean()


def test_max_directed_hd95_and_avd_match_brute_force_on_random_shapes():
    rng = np.random.default_rng(8)
    spacing = (0.7, 1.3)
    for _ in range(5):
        a = rng.random((18, 21)) > 0.55
        b = rng.random((18, 21)) > 0.45
        dab, dba, fab, fba = brute_force(a, b, spacing)
        d = surface_distances(a, b, spacing)
        assert d.hd95_max_directed_mm == pytest.approx(max(np.percentile(dab, 95), np.percentile(dba, 95)))
        assert d.avg_hd_mm == pytest.approx((dab.mean() + dba.mean()) / 2)
        pooled = np.sort(np.concatenate([dab, dba]))
        assert d.hd95_mm == pytest.approx(pooled[math.ceil(0.95 * len(pooled)) - 1])
        avd = average_distance(a, b, spacing)
        assert avd.avd_mm == pytest.approx(max(fab, fba)) and avd.avd_mean_mm == pytest.approx((fab + fba) / 2)


def random_pair(rng, shape=(40, 44)):
    """Two overlapping smooth, irregular blobs (several components, some reaching the array edge)."""
    from scipy import ndimage

    n1 = ndimage.gaussian_filter(rng.random(shape), 3)
    n2 = ndimage.gaussian_filter(rng.random(shape), 3)
    a = n1 > np.percentile(n1, 55)
    b = (n1 + 0.3 * n2) > np.percentile(n1 + 0.3 * n2, 50)
    return a, b


def test_max_directed_hd95_equals_monai():
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(21)
    gaps = []
    for spacing in [(1.0, 1.0), (0.6, 1.4)]:
        for _ in range(4):
            a, b = random_pair(rng)
            d = surface_distances(a, b, spacing)
            t = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
            # MONAI's spacing follows the array axes: (rows, columns) = (sy, sx)
            ref = metrics.compute_hausdorff_distance(t(a), t(b), percentile=95, spacing=[spacing[1], spacing[0]])
            assert d.hd95_max_directed_mm == pytest.approx(float(ref), rel=1e-5)
            gaps.append(d.hd95_max_directed_mm - d.hd95_mm)
            hd = metrics.compute_hausdorff_distance(t(a), t(b), spacing=[spacing[1], spacing[0]])
            assert d.hd_mm == pytest.approx(float(hd), rel=1e-5)
    assert max(gaps) > 0.1  # the two HD95 definitions do differ on these shapes


def test_pooled_distances_equal_medpy():
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(22)
    for spacing in [(1.0, 1.0), (0.6, 1.4)]:
        for _ in range(4):
            a, b = random_pair(rng)
            d = surface_distances(a, b, spacing)
            pooled = np.concatenate([directed_distances(a, b, spacing), directed_distances(b, a, spacing)])
            vs = (spacing[1], spacing[0])  # medpy's voxelspacing follows the array axes too
            # medpy's hd95 is the pooled set with linear interpolation; ours takes nearest rank of the same set
            assert linear_percentile(pooled, 95) == pytest.approx(binary.hd95(a, b, voxelspacing=vs))
            assert nearest_rank_percentile(pooled, 95) == d.hd95_mm
            assert abs(d.hd95_mm - binary.hd95(a, b, voxelspacing=vs)) <= np.diff(np.unique(pooled)).max()
            assert d.hd_mm == pytest.approx(binary.hd(a, b, voxelspacing=vs))
            # medpy 0.5's assd averages the pooled set; ours averages the two directed means
            assert pooled.mean() == pytest.approx(binary.assd(a, b, voxelspacing=vs))
