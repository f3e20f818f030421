import numpy as np
import pytest

from nnunet_ulseg.pseudo_masks.update import binarize_prediction, update_pseudo_mask


def test_update_rule_on_hand_made_arrays():
    e = np.array([[0, 1, 1, 0],
                  [0, 1, 1, 0],
                  [0, 0, 0, 0]], bool)
    p = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 1],
                  [0, 0, 0, 0]], np.uint8)
    expected = np.array([[0, 2, 1, 2],
                         [0, 2, 1, 2],
                         [0, 0, 0, 0]], np.uint8)
    out = update_pseudo_mask(p, e)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_probabilities_are_thresholded():
    e = np.array([[1, 1, 0]], bool)
    probs = np.array([[0.9, 0.4, 0.7]], np.float32)
    # 0.7 at x = 2 is its own component, not touching the ellipse: background
    np.testing.assert_array_equal(update_pseudo_mask(probs, e), [[1, 2, 0]])
    np.testing.assert_array_equal(update_pseudo_mask(probs, e, threshold=0.3), [[1, 1, 2]])
    with pytest.raises(ValueError, match="probabilities"):
        binarize_prediction(np.array([1.5]))


def test_empty_and_missing_predictions_fall_back_to_the_ellipse():
    e = np.zeros((4, 4), bool)
    e[1:3, 1:3] = True
    empty = np.zeros((4, 4), np.uint8)
    np.testing.assert_array_equal(update_pseudo_mask(empty, e), e.astype(np.uint8))
    elsewhere = np.zeros((4, 4), np.uint8)
    elsewhere[0, 3] = 1
    out = update_pseudo_mask(elsewhere, e)
    # a component that does not touch the ellipse is not the marked lesion: background, not ignore
    assert (out[e] == 1).all() and out[0, 3] == 0 and (out == 1).sum() == 4


def test_label_value_two_in_a_prediction_is_not_lesion_and_shapes_must_match():
    e = np.ones((2, 2), bool)
    p = np.array([[2, 1], [0, 0]], np.uint8)
    np.testing.assert_array_equal(update_pseudo_mask(p, e), [[2, 1], [2, 2]])
    with pytest.raises(ValueError, match="shape"):
        update_pseudo_mask(np.zeros((2, 3), np.uint8), e)


def ellipse_label(shape, cx, cy, a, b):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1


def test_spurious_blob_does_not_move_or_inflate_the_rls_region():
    """I' of round 2 (lesion or ignore, scaled x2 about its centroid) follows the ellipse, not a stray blob."""
    import torch
    from nnunet_ulseg.losses.region import rls_region

    e = ellipse_label((128, 128), 64, 64, 14, 9)
    p = ellipse_label((128, 128), 66, 64, 15, 8)  # the lesion, a little off the ellipse
    p[5:25, 100:120] = True  # a 20 x 20 spurious blob in a corner
    label = update_pseudo_mask(p.astype(np.uint8), e)
    assert (label[5:25, 100:120] == 0).all()

    def region(lab):
        return rls_region(torch.from_numpy(lab.astype(np.float32))[None, None], ignore_label=2)[0, 0].numpy()

    reference = region(e.astype(np.uint8))
    got = region(label)
    iou = (got & reference).sum() / (got | reference).sum()
    assert iou > 0.9
    # the literal rule (p OR e - p AND e as ignore) would have halved the overlap
    literal = np.where(p | e, 2, 0).astype(np.uint8)
    literal[p & e] = 1
    lit = region(literal)
    assert (lit & reference).sum() / (lit | reference).sum() < 0.6


def test_restrict_to_ellipse_keeps_touching_components_and_clips_leaks():
    from nnunet_ulseg.pseudo_masks.update import restrict_to_ellipse, scale_about_centroid

    e = ellipse_label((64, 64), 32, 32, 8, 4)
    p = np.zeros((64, 64), bool)
    p[30:35, 20:45] = True  # overlaps the ellipse
    p[30:33, 45:64] = True  # a leak along the same component, beyond the x2 ellipse (x > 48)
    p[2:6, 2:6] = True  # separate, away from the ellipse
    kept = restrict_to_ellipse(p, e)
    assert kept[32, 32] and kept[31, 46] and not kept[31, 60] and not kept[3, 3]
    twice = scale_about_centroid(e)
    assert twice.sum() == pytest.approx(4 * e.sum(), rel=0.1) and twice[32, 47] and not twice[32, 50]
    np.testing.assert_array_equal(restrict_to_ellipse(p, np.zeros_like(e)), p)
