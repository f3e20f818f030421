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
    np.testing.assert_array_equal(update_pseudo_mask(probs, e), [[1, 2, 2]])
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
    assert (out[e] == 1).all() and out[0, 3] == 2 and (out == 1).sum() == 4


def test_label_value_two_in_a_prediction_is_not_lesion_and_shapes_must_match():
    e = np.ones((2, 2), bool)
    p = np.array([[2, 1], [0, 0]], np.uint8)
    np.testing.assert_array_equal(update_pseudo_mask(p, e), [[2, 1], [2, 2]])
    with pytest.raises(ValueError, match="shape"):
        update_pseudo_mask(np.zeros((2, 3), np.uint8), e)
