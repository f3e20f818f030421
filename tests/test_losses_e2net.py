"""E²Net Eq. 3 (Sec. 2.4): weights, hand sums, ignore pixels, gradients to s1, s2 and e."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_ulseg.losses.e2net import E2NetLoss, sigmoid_iou, split_region_target
from nnunet_ulseg.losses.edge import edge_targets


def region_target(b=2, size=32, ignore=False) -> torch.Tensor:
    """Liver region (label 1 or 2) and tumour region (label 2) as nnU-Net's region target (+ ignore channel)."""
    t = torch.zeros(b, 3 if ignore else 2, size, size)
    t[:, 0, 6:26, 4:28] = 1
    t[:, 1, 10:18, 8:16] = 1
    t[1, 1] = 0
    t[1, 1, 14:24, 14:22] = 1
    if ignore:
        t[:, 2, :, :3] = 1  # a band of ignored pixels
        t[:, :2, :, :3] = 0
    return t


def outputs(b=2, size=32, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, 2, size, size, generator=g).requires_grad_(grad) for _ in range(3))


def hand_bce(x, t):
    return (F.softplus(x) - t * x).mean()


def hand_iou(x, t):
    p = torch.sigmoid(x)
    inter = (p * t).sum((2, 3))
    union = (p + t - p * t).sum((2, 3))
    return (1 - (inter + 1e-5) / (union + 1e-5)).mean()


def test_eq3_equals_the_hand_sum_of_its_components_with_weights_1_1_4():
    s2, s1, e = outputs()
    target = region_target()
    loss_fn = E2NetLoss()
    assert (loss_fn.s1_weight, loss_fn.s2_weight, loss_fn.edge_weight) == (1.0, 1.0, 4.0)
    loss = loss_fn((s2, s1, e), target)
    g_e = edge_targets(target)
    hand = hand_iou(s1, target) + hand_bce(s1, target) + hand_iou(s2, target) + hand_bce(s2, target) \
        + 4 * hand_bce(e, g_e)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    rec = loss_fn.last_record
    assert rec["bce_e"].item() == pytest.approx(hand_bce(e, g_e).item(), rel=1e-5)
    assert rec["iou_s1"].item() == pytest.approx(hand_iou(s1, target).item(), rel=1e-5)
    parts = rec["iou_s1"] + rec["bce_s1"] + rec["iou_s2"] + rec["bce_s2"] + 4 * rec["bce_e"]
    assert rec["total"].item() == pytest.approx(parts.item(), rel=1e-6)
    # other weights are honoured term by term
    weighted = E2NetLoss(s1_weight=0.5, s2_weight=2.0, edge_weight=1.0)((s2, s1, e), target)
    hand_w = 0.5 * (rec["iou_s1"] + rec["bce_s1"]) + 2 * (rec["iou_s2"] + rec["bce_s2"]) + rec["bce_e"]
    assert weighted.item() == pytest.approx(hand_w.item(), rel=1e-5)


def test_edge_target_kind_and_missing_outputs():
    s2, s1, e = outputs()
    target = region_target()
    edge = E2NetLoss(edge_kind="edge")
    edge((s2, s1, e), target)
    assert edge.last_record["bce_e"].item() == pytest.approx(hand_bce(e, edge_targets(target, "edge")).item(),
                                                             rel=1e-5)
    base = E2NetLoss()
    # baseline (no edge branch) and l_1st / deep supervision off (a single tensor = s2)
    assert base((s2, s1, None), target).item() == pytest.approx(
        (hand_iou(s1, target) + hand_bce(s1, target) + hand_iou(s2, target) + hand_bce(s2, target)).item(), rel=1e-5)
    assert base.last_record["bce_e"].item() == 0
    assert base(s2, [target]).item() == pytest.approx((hand_iou(s2, target) + hand_bce(s2, target)).item(), rel=1e-5)
    means = base.pop_means()
    assert set(means) == {*E2NetLoss.components, "total"} and base.pop_means() == {}
    with pytest.raises(ValueError, match="one output channel per region"):
        base(s2[:, :1], target)
    with pytest.raises(ValueError, match="edge_kind"):
        E2NetLoss(edge_kind="canny")


def test_ignored_pixels_do_not_change_the_loss_and_get_no_gradient():
    target = region_target(ignore=True)
    s2, s1, e = outputs()
    loss_fn = E2NetLoss(has_ignore_channel=True)
    ref = loss_fn((s2, s1, e), target)
    ref.backward()
    for x in (s2, s1, e):
        assert (x.grad[..., :3] == 0).all() and x.grad[..., 3:].abs().sum() > 0
    changed = tuple(x.detach().clone() for x in (s2, s1, e))
    for x in changed:
        x[..., :3] = torch.randn_like(x[..., :3]) * 50
    assert loss_fn(changed, target).item() == pytest.approx(ref.item(), rel=1e-6)
    g, valid = split_region_target(target, True)
    assert g.shape == (2, 2, 32, 32) and valid.shape == (2, 1, 32, 32) and not valid[..., :3].any()


def test_gradients_reach_all_three_outputs():
    s2, s1, e = outputs()
    E2NetLoss()((s2, s1, e), region_target()).backward()
    for x in (s2, s1, e):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_perfect_prediction_has_zero_iou_and_small_bce():
    target = region_target()
    logits = (target * 2 - 1) * 30
    assert sigmoid_iou(logits, target).item() == pytest.approx(0, abs=1e-6)
    empty = torch.zeros(1, 1, 8, 8)
    assert sigmoid_iou(torch.full_like(empty, -30.0), empty).item() == pytest.approx(0, abs=1e-5)
    assert np.isfinite(E2NetLoss()((logits, logits, logits), target).item())
