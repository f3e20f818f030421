"""3D lesion masks from slice masks (conversion.geometry3d) and the 3D metrics (evaluation.metrics3d).

WSSS Sec. 3.3 / Sec. 4, Table 5, Fig. 4.  Every expected value is computed here by hand or by
brute force, never by the code under test.
"""
import itertools
import math

import numpy as np
import pytest

from nnunet_ulseg.conversion.geometry3d import Stack3D, align_stacks, stack_slices, unstack
from nnunet_ulseg.evaluation.distances import average_distance
from nnunet_ulseg.evaluation.metrics3d import (
    average_distance_3d,
    dice_by_offset,
    lesion_metrics_3d,
    offset_curve,
    recist_ellipsoid_volume,
    stack_metrics,
    volume_mm3,
)

SPACING = (0.7, 0.8, 2.5)  # x, y, z mm: anisotropic like a CT series


def ellipsoid(shape, centre_zyx, radii_mm_xyz, spacing):
    """A true 3D ellipsoid ``[z, y, x]``: voxel centres within the radii (mm) of ``centre_zyx`` (voxels)."""
    z, y, x = np.indices(shape, dtype=np.float64)
    cz, cy, cx = centre_zyx
    rx, ry, rz = radii_mm_xyz
    sx, sy, sz = spacing
    return (((x - cx) * sx / rx) ** 2 + ((y - cy) * sy / ry) ** 2 + ((z - cz) * sz / rz) ** 2) <= 1.0


def test_ellipsoid_slices_stack_back_to_the_true_volume():
    true = ellipsoid((9, 40, 50), (4.0, 19.2, 24.6), (12.0, 9.0, 8.0), SPACING)
    key, first = 57, 53  # the series' slice indices: z = 0 is slice 53, the key slice is z = 4
    slices = {first + k: true[k] for k in range(true.shape[0]) if true[k].any()}
    assert sorted(slices) == list(range(first + 1, first + 8))  # |z - 4| * 2.5 mm <= 8 mm: z = 1..7
    stack = stack_slices(slices, SPACING, key_slice=key)
    assert stack.first_slice == first + 1 and stack.slice_indices == tuple(range(54, 61))
    assert stack.mask.dtype == bool and np.array_equal(stack.mask, true[1:8])  # voxel by voxel
    assert stack.spacing == SPACING and stack.filled == ()
    assert list(stack.offsets) == [-3, -2, -1, 0, 1, 2, 3]
    assert np.allclose(stack.offsets_mm, [-7.5, -5.0, -2.5, 0.0, 2.5, 5.0, 7.5])
    assert stack.z_of(key) == 3
    # volume: voxel count x voxel volume, close to the analytic 4/3 pi a b c
    assert volume_mm3(stack.mask, SPACING) == pytest.approx(true.sum() * 0.7 * 0.8 * 2.5)
    assert volume_mm3(stack.mask, SPACING) == pytest.approx(4 / 3 * math.pi * 12 * 9 * 8, rel=0.08)
    back = unstack(stack)
    assert sorted(back) == sorted(slices) and all(np.array_equal(back[i], slices[i]) for i in slices)


def test_non_contiguous_slices_are_an_error_or_filled_and_named():
    m = np.zeros((4, 5), dtype=np.uint8)
    m[1:3, 1:4] = 1
    slices = {10: m, 11: m, 14: m}
    with pytest.raises(ValueError, match=r"lesion 7: slices 10..14 are not contiguous, missing \[12, 13\]"):
        stack_slices(slices, SPACING, 11, what="lesion 7")
    stack = stack_slices(slices, SPACING, 11, gaps="empty")
    assert stack.filled == (12, 13) and stack.mask.shape == (5, 4, 5)
    assert [bool(s.any()) for s in stack.mask] == [True, True, False, False, True]
    assert sorted(unstack(stack)) == [10, 11, 14]  # filled slices are not given back
    with pytest.raises(ValueError, match="gaps must be one of"):
        stack_slices(slices, SPACING, 11, gaps="zero")


def test_stack_input_checks():
    with pytest.raises(ValueError, match="no slice masks"):
        stack_slices({}, SPACING, 0)
    with pytest.raises(ValueError, match="one shape"):
        stack_slices({0: np.zeros((3, 3)), 1: np.zeros((3, 4))}, SPACING, 0)
    with pytest.raises(ValueError, match="three positive numbers"):
        stack_slices({0: np.zeros((3, 3))}, (1.0, 1.0), 0)
    with pytest.raises(ValueError, match="three positive numbers"):
        stack_slices({0: np.zeros((3, 3))}, (1.0, 1.0, 0.0), 0)
    with pytest.raises(ValueError, match="outside the stack"):
        stack_slices({0: np.zeros((3, 3))}, SPACING, 0).z_of(1)


def box(shape, z, y, x):
    m = np.zeros(shape, dtype=bool)
    m[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return m


def test_two_boxes_dice_vs_volume_by_hand():
    shape = (6, 10, 10)
    ref = box(shape, (1, 5), (2, 6), (2, 7))  # 4 x 4 x 5 = 80 voxels
    pred = box(shape, (2, 5), (2, 6), (4, 9))  # 3 x 4 x 5 = 60; overlap 3 x 4 x 3 = 36
    m = lesion_metrics_3d(pred, ref, SPACING)
    tp, fp, fn = 36, 24, 44
    assert (m.tp_voxels, m.fp_voxels, m.fn_voxels) == (tp, fp, fn)
    assert m.dice_3d == pytest.approx(2 * 36 / (2 * 36 + 24 + 44))
    assert m.vs_3d == pytest.approx(1 - 20 / 140)
    assert m.precision_3d == pytest.approx(36 / 60) and m.recall_3d == pytest.approx(36 / 80)
    v = 0.7 * 0.8 * 2.5
    assert m.ref_volume_mm3 == pytest.approx(80 * v) and m.pred_volume_mm3 == pytest.approx(60 * v)
    assert (m.ref_slices, m.pred_slices) == (4, 3)
    empty = lesion_metrics_3d(np.zeros(shape, bool), ref, SPACING)
    assert empty.dice_3d == 0 and math.isnan(empty.avd_3d_mm) and math.isnan(empty.precision_3d)


def brute_force_avd(a, b, spacing):
    """max of the two directed means over all foreground voxels, by every pair of voxel centres."""
    sx, sy, sz = spacing

    def pts(m):
        z, y, x = np.nonzero(m)
        return np.stack([x * sx, y * sy, z * sz], axis=1)

    pa, pb = pts(a), pts(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    d_ab, d_ba = d.min(axis=1).mean(), d.min(axis=0).mean()
    return max(d_ab, d_ba), (d_ab + d_ba) / 2


def test_shifted_box_avd_matches_brute_force_with_anisotropic_spacing():
    shape = (5, 6, 7)
    ref = box(shape, (1, 3), (1, 4), (1, 5))
    pred = box(shape, (2, 4), (1, 4), (1, 5))  # shifted by one slice (2.5 mm)
    d = average_distance_3d(pred, ref, SPACING)
    # by hand: half of each box lies in the other (0 mm), the other half one slice away (2.5 mm)
    assert d.avd_mm == pytest.approx(1.25) and d.avd_mean_mm == pytest.approx(1.25)
    m = lesion_metrics_3d(pred, ref, SPACING)
    assert m.dice_3d == pytest.approx(0.5) and m.vs_3d == 1.0
    rng = np.random.default_rng(3)
    for _ in range(5):  # irregular shapes: the distance transform equals the all-pairs minimum
        a, b = rng.random(shape) < 0.15, rng.random(shape) < 0.1
        exp_max, exp_mean = brute_force_avd(a, b, SPACING)
        got = average_distance_3d(a, b, SPACING)
        assert got.avd_mm == pytest.approx(exp_max) and got.avd_mean_mm == pytest.approx(exp_mean)


def test_one_slice_stack_agrees_with_the_2d_avd():
    rng = np.random.default_rng(1)
    a, b = rng.random((12, 9)) < 0.2, rng.random((12, 9)) < 0.3
    d3 = average_distance_3d(a[None], b[None], SPACING)
    d2 = average_distance(a, b, SPACING[:2])
    assert d3.avd_mm == pytest.approx(d2.avd_mm) and d3.avd_mean_mm == pytest.approx(d2.avd_mean_mm)


def test_dice_by_offset_aligns_by_slice_index_and_groups_by_distance():
    plane = np.zeros((6, 6), dtype=bool)
    plane[1:5, 1:5] = True  # 16 px
    half = plane.copy()
    half[1:5, 1:3] = False  # 8 px inside the reference square
    ref = stack_slices({8: plane, 9: plane, 10: plane, 11: plane}, SPACING, key_slice=10)
    pred = stack_slices({9: half, 10: plane, 11: plane, 12: plane}, SPACING, key_slice=10)
    curve = dice_by_offset(pred, ref)
    got = [(s.slice_index, s.offset, s.offset_mm, s.dice, s.ref_voxels, s.pred_voxels) for s in curve]
    assert got == [(8, -2, -5.0, 0.0, 16, 0), (9, -1, -2.5, pytest.approx(2 * 8 / 24), 16, 8),
                   (10, 0, 0.0, 1.0, 16, 16), (11, 1, 2.5, 1.0, 16, 16), (12, 2, 5.0, 0.0, 0, 16)]
    rows = offset_curve([curve])
    assert [(r["offset"], r["n"]) for r in rows] == [(0, 1), (1, 2), (2, 1)]  # slice 12 has no reference
    assert rows[1]["mean_dice"] == pytest.approx((2 / 3 + 1) / 2) and rows[1]["mean_offset_mm"] == 2.5
    rows = offset_curve([curve, curve], absolute=False, include_empty_reference=True)
    assert [(r["offset"], r["n"]) for r in rows] == [(-2, 2), (-1, 2), (0, 2), (1, 2), (2, 2)]
    m = stack_metrics(pred, ref)
    assert (m.tp_voxels, m.fp_voxels, m.fn_voxels) == (8 + 32, 16, 8 + 16)


def test_align_stacks_refuses_other_geometry():
    a = Stack3D(np.zeros((2, 4, 4), bool), SPACING, 3, 4)
    with pytest.raises(ValueError, match="slice shape"):
        align_stacks(a, Stack3D(np.zeros((2, 4, 5), bool), SPACING, 3, 4))
    with pytest.raises(ValueError, match="spacing"):
        align_stacks(a, Stack3D(np.zeros((2, 4, 4), bool), (0.7, 0.8, 5.0), 3, 4))
    with pytest.raises(ValueError, match="key slice"):
        align_stacks(a, Stack3D(np.zeros((2, 4, 4), bool), SPACING, 3, 5))
    p, r, first = align_stacks(a, Stack3D(np.ones((1, 4, 4), bool), SPACING, 6, 4))
    assert first == 3 and p.shape == r.shape == (4, 4, 4) and r[3].all() and not r[:3].any()


def test_recist_ellipsoid_volume():
    # a sphere of diameter d: L = S = d gives 4/3 pi (d/2)^3
    assert recist_ellipsoid_volume(10.0, 10.0) == pytest.approx(4 / 3 * math.pi * 5 ** 3)
    assert recist_ellipsoid_volume(12.0, 6.0) == pytest.approx(math.pi * 12 * 36 / 6)
    assert math.isnan(recist_ellipsoid_volume(float("nan"), 3.0))
