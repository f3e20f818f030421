"""Trimaps from CNN output and GrabCut on off-key slices (WSSS Sec. 3.3), with the paper's fallback."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from nnunet_ulseg.labels import BACKGROUND, IGNORE, LESION
from nnunet_ulseg.pseudo_masks.cnn_trimap import (
    MIN_THRESHOLD, adjusted_threshold, axis_pixels, grabcut_from_cnn, off_key_slice_labels, split_uncertain,
    trimap_from_cnn,
)
from nnunet_ulseg.pseudo_masks.recist3d import estimate_recist, estimated_region
from nnunet_ulseg.recist import Recist

YY, XX = np.mgrid[:64, :64]


def circle_mark(cx=32.0, cy=32.0, r=10.0):
    return Recist.from_points([cx - r, cy, cx + r, cy, cx, cy - r, cx, cy + r])


def disc(cx, cy, r):
    return (XX - cx) ** 2 + (YY - cy) ** 2 <= r ** 2


def ct_scene(seed=0):
    """64 x 64 HU slice 5 mm from the key slice of a lesion marked as a 22 mm sphere (1 mm pixels).

    Soft tissue (40 HU) with a fat band (-100 HU) and noise; the lesion (130 HU) is the estimated
    region R̂ (radius sqrt(11^2 - 5^2) = 9.8) with a bite out of its upper left and a lobe at its lower
    right, both away from the estimated axes.  Returns the image, the lesion and R̂.
    """
    rng = np.random.default_rng(seed)
    mark_hat = estimate_recist(circle_mark(r=11.0), 5.0, (1.0, 1.0))
    lesion = (estimated_region(mark_hat, (64, 64)) & ~disc(24, 24, 5)) | disc(41, 37, 3)
    image = np.full((64, 64), 40.0)
    image[:, 52:56] = -100.0
    image[lesion] = 130.0
    return image + rng.normal(0, 8, (64, 64)), lesion, mark_hat


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_threshold_is_lowered_until_half_of_the_axes_is_covered():
    axes = np.zeros((1, 10), bool)
    axes[0, :] = True
    p = np.array([[0.9, 0.8, 0.45, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05, 0.0]])
    # 5 of 10 axis pixels must be covered: the 5th largest value, 0.35
    assert adjusted_threshold(p, axes) == (0.35, 0.5)
    # with 5 values already >= 0.5 the threshold stays at 0.5 (only ever lowered)
    p2 = np.array([[0.9, 0.8, 0.7, 0.6, 0.55, 0.3, 0.2, 0.1, 0.05, 0.0]])
    assert adjusted_threshold(p2, axes) == (0.5, 0.5)
    # an odd count needs ceil(n / 2): 3 of 5
    assert adjusted_threshold(p[:, :5], axes[:, :5]) == (0.45, 0.6)
    with pytest.raises(ValueError, match="outside"):
        adjusted_threshold(p, np.zeros_like(axes))


def test_coverage_rule_on_a_synthetic_probability_map():
    mark = Recist.from_points([10.0, 32.0, 50.0, 32.0, 30.0, 22.0, 30.0, 42.0])
    axes = axis_pixels(mark, (64, 64))
    assert axes.sum() == 41 + 21 - 1  # two pixel-aligned segments sharing their crossing pixel
    # probability falls linearly with x: 0.6 at x = 10 ... 0.2 at x = 50; the short axis (x = 30) is at 0.4
    p = np.clip(0.6 - 0.01 * (XX - 10), 0, 1).astype(np.float32)
    tm = trimap_from_cnn(p, mark)
    # 61 axis pixels need 31 covered: the 21 short-axis pixels at 0.4 and the long axis up to x = 30,
    # 21 pixels at >= 0.4 -> 41 (one shared) > 31; the 31st largest value is x = 30's 0.4
    expected_t = float(np.sort(p[axes])[::-1][30])
    assert tm.threshold == pytest.approx(expected_t) and tm.threshold == pytest.approx(0.4)
    assert tm.coverage >= 0.5 and tm.from_cnn
    assert ((p >= tm.threshold) & axes).sum() >= 31


def test_fg_bg_and_uncertain_regions():
    mark = circle_mark(r=8.0)
    region = estimated_region(mark, (64, 64))
    predicted = disc(36, 32, 8)  # the CNN's lesion, 4 px to the right of the estimate
    p = np.where(predicted, 0.9, 0.02).astype(np.float32)
    tm = trimap_from_cnn(p, mark)
    axes = axis_pixels(mark, (64, 64))
    assert tm.threshold == 0.5 and tm.from_cnn
    np.testing.assert_array_equal(tm.fg, (predicted & region) | axes)
    np.testing.assert_array_equal(tm.bg, ~predicted & ~region)
    np.testing.assert_array_equal(tm.uncertain, (predicted ^ region) & ~axes)
    pfg, pbg = tm.labels == cv2.GC_PR_FGD, tm.labels == cv2.GC_PR_BGD
    n = tm.uncertain.sum()
    assert pfg.sum() == (n + 1) // 2 and pbg.sum() == n // 2
    # PFG is the half nearer to FG relative to BG
    d_fg = ndimage.distance_transform_edt(~tm.fg)
    d_bg = ndimage.distance_transform_edt(~tm.bg)
    score = d_fg / (d_fg + d_bg)
    assert score[pfg].max() <= score[pbg].min()


def test_split_uncertain_uses_mm_distances():
    # a 1 x 5 uncertain strip between FG (left) and BG (right): the 3 left pixels are PFG
    fg = np.zeros((1, 7), bool)
    fg[0, 0] = True
    bg = np.zeros_like(fg)
    bg[0, 6] = True
    unc = ~fg & ~bg
    np.testing.assert_array_equal(split_uncertain(unc, fg, bg, (2.0, 0.5)), [[0, 1, 1, 1, 0, 0, 0]])
    # with BG only above the strip (short in y, 0.5 mm) every strip pixel is near BG; the one next to FG ranks first
    fg2 = np.zeros((2, 4), bool)
    fg2[1, 0] = True
    bg2 = np.zeros_like(fg2)
    bg2[0, :] = True
    out = split_uncertain(~fg2 & ~bg2, fg2, bg2, (2.0, 0.5))
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [0, 1, 1, 0]])


def test_a_failed_cnn_gives_the_trimap_of_the_estimate_alone():
    mark = circle_mark(r=8.0)
    p = np.full((64, 64), 0.05, np.float32)  # nothing detected: the threshold would have to drop below 0.1
    tm = trimap_from_cnn(p, mark)
    assert tm.threshold < MIN_THRESHOLD and not tm.from_cnn
    axes = axis_pixels(mark, (64, 64))
    region = estimated_region(mark, (64, 64))
    np.testing.assert_array_equal(tm.fg, axes)
    np.testing.assert_array_equal(tm.bg, ~region)
    np.testing.assert_array_equal(tm.uncertain, region & ~axes)


def test_grabcut_recovers_the_lesion_from_an_imperfect_cnn_on_an_off_key_slice():
    image, lesion, mark_hat = ct_scene()
    assert mark_hat.long_length == pytest.approx(2 * np.sqrt(121 - 25))
    # the CNN: a smooth blob shifted 3 px right (misses the lobe's tip, spills right), plus a stray blob
    p = ndimage.gaussian_filter(np.where(disc(35, 32, 10) | disc(8, 8, 3), 0.95, 0.02), 1.5).astype(np.float32)
    result = grabcut_from_cnn(p, image, mark_hat, (-160, 240))
    assert result.status == "grabcut" and not result.fallback
    assert set(np.unique(result.labels)) <= {BACKGROUND, LESION}
    mask = result.labels == LESION
    assert not mask[:16, :16].any()  # the stray detection is not the marked lesion
    # where the CNN and R̂ disagree, GrabCut follows the image
    u = result.trimap.uncertain
    assert u.sum() > 100 and (mask[u] == lesion[u]).mean() > 0.95
    assert dice(mask, lesion) > 0.95
    assert dice(mask, lesion) > dice(p >= 0.5, lesion) + 0.1  # CNN alone: 0.82
    assert dice(mask, lesion) > dice(estimated_region(mark_hat, (64, 64)), lesion) + 0.03  # R̂ alone: 0.93


def test_off_key_slice_labels_estimates_then_cuts_and_stops_beyond_reach():
    image, lesion, mark_hat = ct_scene()
    p = ndimage.gaussian_filter(np.where(disc(35, 32, 10), 0.95, 0.02), 1.5).astype(np.float32)
    key_mark = circle_mark(r=11.0)
    result = off_key_slice_labels(key_mark, -5.0, p, image, (-160, 240))
    np.testing.assert_array_equal(result.labels, grabcut_from_cnn(p, image, mark_hat, (-160, 240)).labels)
    assert off_key_slice_labels(key_mark, 11.0, p, image, (-160, 240)) is None


def test_grabcut_is_deterministic():
    image, _, mark_hat = ct_scene(seed=3)
    p = ndimage.gaussian_filter(np.where(disc(33, 31, 10), 0.9, 0.05), 2.0).astype(np.float32)
    first = grabcut_from_cnn(p, image, mark_hat, (-160, 240))
    cv2.setRNGSeed(12345)  # whatever state OpenCV's RNG was left in
    second = grabcut_from_cnn(p.copy(), image.copy(), mark_hat, (-160, 240))
    assert first.status == second.status == "grabcut"
    np.testing.assert_array_equal(first.labels, second.labels)


def test_flat_image_falls_back_to_cnn_and_estimate_with_ignore():
    mark = circle_mark(r=8.0)
    region = estimated_region(mark, (64, 64))
    predicted = disc(36, 32, 8)
    p = np.where(predicted, 0.9, 0.02).astype(np.float32)
    flat = np.full((64, 64), 500.0)  # above the window: one grey level after windowing
    result = grabcut_from_cnn(p, flat, mark, (-160, 240))
    assert result.status == "fallback_no_contrast" and result.fallback
    axes = axis_pixels(mark, (64, 64))
    expected = np.full((64, 64), IGNORE, np.uint8)
    expected[(predicted & region) | axes] = LESION  # CNN ∩ R̂ (and R) is foreground
    expected[~predicted & ~region] = BACKGROUND  # predicted background that does not overlap R̂
    np.testing.assert_array_equal(result.labels, expected)


def test_very_few_foreground_pixels_and_a_trimap_without_background_fall_back():
    image, _, mark = ct_scene()
    p = np.where(disc(33, 32, 8), 0.9, 0.02).astype(np.float32)
    small = grabcut_from_cnn(p, image, mark, (-160, 240), min_fg_fraction=2.0)  # no result is twice R̂'s area
    assert small.status == "fallback_too_small"
    assert set(np.unique(small.labels)) == {BACKGROUND, LESION, IGNORE}
    everywhere = np.full((64, 64), 0.9, np.float32)  # the CNN calls every pixel lesion: no BG sample at all
    nobg = grabcut_from_cnn(everywhere, image, mark, (-160, 240))
    assert nobg.status == "fallback_no_background"
    assert not (nobg.labels == BACKGROUND).any() and (nobg.labels == LESION).sum() == nobg.trimap.fg.sum()


def test_bad_inputs_are_refused():
    mark = circle_mark()
    p = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match="beyond the lesion's reach"):
        trimap_from_cnn(p, None)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        trimap_from_cnn(p + 2.0, mark)
    with pytest.raises(ValueError, match="float probability map"):
        trimap_from_cnn(p.astype(np.uint8), mark)
    with pytest.raises(ValueError, match="differs"):
        grabcut_from_cnn(p, np.zeros((32, 32)), mark, (-160, 240))
