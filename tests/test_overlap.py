import math

import numpy as np
import pytest

from nnunet_ulseg.evaluation.overlap import Overlap, dice, summarize


def test_offset_squares_hand_computed():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True  # 16 px
    b[2:6, 0:4] = True  # 16 px, 8 shared
    o = Overlap.of(a, b)
    assert (o.tp, o.fp, o.fn) == (8, 8, 8)
    assert o.dice == pytest.approx(0.5)
    assert o.precision == pytest.approx(0.5)
    assert o.recall == pytest.approx(0.5)


def test_subset_and_empty_cases():
    ref = np.zeros((5, 5), bool)
    ref[1:4, 1:4] = True
    pred = np.zeros((5, 5), bool)
    pred[2, 2] = True
    o = Overlap.of(pred, ref)
    assert o.precision == 1.0 and o.recall == pytest.approx(1 / 9) and o.dice == pytest.approx(2 / 10)
    empty = np.zeros((5, 5), bool)
    assert dice(empty, ref) == 0.0
    assert math.isnan(Overlap.of(empty, ref).precision)
    assert dice(empty, empty) == 1.0
    with pytest.raises(ValueError, match="shape"):
        Overlap.of(np.zeros((2, 2)), np.zeros((3, 3)))


def test_overlap_outside_ignore_hand_computed():
    ref = np.zeros((6, 6), bool)
    ref[1:5, 1:5] = True  # 16 px
    pred = np.zeros((6, 6), bool)
    pred[3:5, 1:5] = True  # lower half of ref: 8 px
    ignore = np.zeros((6, 6), bool)
    ignore[0:3, :] = True  # rows 0-2: covers the 8 missed ref pixels and nothing of pred
    assert Overlap.of(pred, ref).dice == pytest.approx(16 / 24)
    o = Overlap.outside(pred, ref, ignore)
    assert (o.tp, o.fp, o.fn) == (8, 0, 0) and o.dice == 1.0
    ignore[4, 1] = True  # an ignored pixel that is right in both removes one TP
    assert (Overlap.outside(pred, ref, ignore).tp, Overlap.outside(pred, ref, ignore).fn) == (7, 0)
    assert Overlap.outside(pred, ref, np.zeros_like(ref)) == Overlap.of(pred, ref)


def test_dice_matches_nnunet_compute_metrics():
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    rng = np.random.default_rng(0)
    pred = rng.random((1, 32, 32)) > 0.6
    ref = rng.random((1, 32, 32)) > 0.5
    tp, fp, fn, _ = compute_tp_fp_fn_tn(ref, pred)
    assert dice(pred, ref) == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_summarize_ignores_nan():
    s = summarize([1.0, 0.5, float("nan")])
    assert s == {"n": 2, "mean": 0.75, "std": 0.25, "median": 0.75, "min": 0.5}
    assert summarize([])["n"] == 0
