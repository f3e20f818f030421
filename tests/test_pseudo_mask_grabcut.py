"""CNN-GC (WSSS Sec. 3.3): GrabCut from a prediction and the RECIST axes, with the axis-agreement guard."""
import numpy as np
import pytest

from nnunet_ulseg.postprocess import mark_pixels, postprocess_mask
from nnunet_ulseg.pseudo_masks.grabcut import cnn_trimap, grabcut_refine, window_to_uint8
from nnunet_ulseg.recist import Recist

import cv2


def scene(seed=0):
    """64 x 64 HU crop: a bright irregular lesion (a disc of radius 12 with a bite out of its lower right,
    away from the axes) on noisy tissue."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    lesion = (xx - 32) ** 2 + (yy - 32) ** 2 <= 12 ** 2
    lesion &= (xx - 44) ** 2 + (yy - 44) ** 2 > 10 ** 2
    image = np.where(lesion, 120.0, 20.0) + rng.normal(0, 8, (64, 64))
    mark = Recist.from_points([20.0, 32.0, 44.0, 32.0, 32.0, 21.0, 32.0, 43.0])  # long horizontal, short vertical
    return image, lesion, mark


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_window_maps_hu_to_uint8():
    out = window_to_uint8(np.array([-200.0, -175.0, 50.0, 275.0, 400.0]), (-175, 275))
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])
    with pytest.raises(ValueError, match="max > min"):
        window_to_uint8(np.zeros(2), (10, 10))


def test_trimap_regions():
    _, lesion, mark = scene()
    axes = mark_pixels(mark, lesion.shape)
    t = cnn_trimap(lesion, mark, axes)
    assert (t[axes] == cv2.GC_FGD).all()
    assert (t[~lesion & ~axes & (t != cv2.GC_BGD)] == cv2.GC_PR_BGD).all()  # outside mask and axes: never FG
    assert (t[lesion] != cv2.GC_BGD).all() and (t[lesion] == cv2.GC_PR_FGD).any() and (t[lesion] == cv2.GC_FGD).any()
    assert t[0, 0] == cv2.GC_BGD  # far outside the 2x ellipse


def test_grabcut_pulls_an_ellipse_like_prediction_onto_the_lesion():
    image, lesion, mark = scene()
    yy, xx = np.mgrid[:64, :64]
    blob = (xx - 32) ** 2 + (yy - 32) ** 2 <= 14 ** 2  # too big, no notch: what a model trained on ellipses predicts
    result = grabcut_refine(blob, image, mark, (-50, 200), mark_pixels(mark, blob.shape))
    assert result.accepted and result.long_err <= 0.15
    assert dice(result.mask, lesion) > dice(blob, lesion) + 0.05
    assert dice(result.mask, lesion) > 0.9


def test_guard_rejects_a_result_that_loses_the_marks_axes():
    image, lesion, mark = scene()
    flat = np.full_like(image, 20.0)  # nothing to segment: GrabCut cannot keep the mark's extent
    flat[30:34, 30:34] = 200.0
    result = grabcut_refine(lesion, flat, mark, (-50, 200), mark_pixels(mark, lesion.shape), tolerance=0.01)
    assert not result.accepted
    np.testing.assert_array_equal(result.mask, lesion)


def test_empty_prediction_starts_from_the_ellipse_and_mode_needs_the_image():
    image, lesion, mark = scene()
    result = grabcut_refine(np.zeros_like(lesion), image, mark, (-50, 200), mark_pixels(mark, lesion.shape))
    assert result.mask.any()
    kept = postprocess_mask(lesion.astype(np.uint8), mark, "mark-grabcut", image=image, window=(-50, 200))
    assert kept.status in ("grabcut", "grabcut_rejected") and dice(kept.mask, lesion) > 0.9
    with pytest.raises(ValueError, match="needs the crop's CT image"):
        postprocess_mask(lesion.astype(np.uint8), mark, "mark-grabcut")


def test_refinement_is_deterministic():
    image, lesion, mark = scene(3)
    yy, xx = np.mgrid[:64, :64]
    blob = (xx - 32) ** 2 + (yy - 32) ** 2 <= 14 ** 2
    axes = mark_pixels(mark, blob.shape)
    cv2.setRNGSeed(123)
    first = grabcut_refine(blob, image, mark, (-50, 200), axes).mask
    np.random.default_rng(5).random(10)
    cv2.setRNGSeed(99)
    np.testing.assert_array_equal(grabcut_refine(blob, image, mark, (-50, 200), axes).mask, first)


def test_a_prediction_that_does_not_measure_like_the_mark_is_replaced():
    """Two lesions of one slice merged into one blob: the marked lesion is re-found from the mark alone."""
    image, lesion, mark = scene()
    merged = lesion.copy()
    merged[26:38, 40:62] = True  # a neighbour fused to the right side: the long axis is far too long
    image = np.where(merged & ~lesion, 120.0, image)
    kept = postprocess_mask(merged.astype(np.uint8), mark, "mark-grabcut", image=image, window=(-50, 200))
    assert kept.status in ("grabcut_from_ellipse", "fallback_ellipse_axes")
    assert dice(kept.mask, lesion) > dice(merged, lesion) + 0.1
