"""E²Net edge targets (Sec. 2.3): hand-made disc and square, batch/channel independence, rotation, BCE."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_ulseg.losses.edge import edge_distance_map, edge_image, edge_targets, masked_sigmoid_bce


def disc(size=41, r=12.0, cy=20, cx=20) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_disc_is_one_on_the_edge_falls_inward_and_zero_outside():
    mask = disc()
    target = edge_distance_map(mask)
    edge = edge_image(mask)
    np.testing.assert_array_equal(target[edge], 1.0)
    assert (target[~mask] == 0).all()
    assert target[20, 20] == 0.0  # the deepest pixel (distance 12 to the edge)
    # along each of the four radii from the centre to the edge: strictly increasing towards the edge
    for profile in (target[20, 20:33], target[20, 8:21][::-1], target[20:33, 20], target[8:21, 20][::-1]):
        assert (np.diff(profile) > 0).all(), profile
    # everywhere inside, 1 - (distance to the nearest edge pixel) / (largest such distance), by brute force
    ey, ex = np.nonzero(edge)
    iy, ix = np.nonzero(mask)
    d = np.sqrt((iy[:, None] - ey[None]) ** 2 + (ix[:, None] - ex[None]) ** 2).min(1)
    np.testing.assert_allclose(target[iy, ix], 1 - d / d.max(), atol=1e-6)
    assert d.max() == d[(iy == 20) & (ix == 20)][0]


def test_square_with_hand_computed_distances():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True  # 5 x 5 square: ring at distance 0, ring at 1, centre at 2
    expected = np.zeros((9, 9), np.float32)
    expected[2:7, 2:7] = 1.0
    expected[3:6, 3:6] = 0.5
    expected[4, 4] = 0.0
    np.testing.assert_array_equal(edge_distance_map(mask), expected)
    edge = np.zeros((9, 9), bool)
    edge[2:7, 2:7] = True
    edge[3:6, 3:6] = False
    np.testing.assert_array_equal(edge_image(mask), edge)
    # a 7 x 7 square: distances 0, 1, 2, 3 -> 1, 2/3, 1/3, 0
    big = np.zeros((11, 11), bool)
    big[2:9, 2:9] = True
    t = edge_distance_map(big)
    np.testing.assert_allclose(t[5, 2:6], [1, 2 / 3, 1 / 3, 0], atol=1e-7)


def test_each_component_is_normalised_by_its_own_depth_unless_image():
    mask = np.zeros((20, 30), bool)
    mask[2:9, 2:9] = True      # 7 x 7: depth 3
    mask[12:15, 20:23] = True  # 3 x 3: depth 1
    per_object = edge_distance_map(mask)
    assert per_object[5, 5] == 0 and per_object[13, 21] == 0
    whole = edge_distance_map(mask, normalise="image")
    assert whole[5, 5] == 0 and whole[13, 21] == pytest.approx(1 - 1 / 3)
    with pytest.raises(ValueError, match="normalise"):
        edge_distance_map(mask, normalise="object")


def test_patch_border_is_not_an_edge_and_thin_or_empty_objects():
    mask = np.zeros((10, 10), bool)
    mask[:, :4] = True  # cut by the left border: the only edge is column 3
    assert edge_image(mask)[:, 3].all() and edge_image(mask).sum() == 10
    t = edge_distance_map(mask)
    np.testing.assert_allclose(t[0, :4], [0, 1 / 3, 2 / 3, 1], atol=1e-7)
    line = np.zeros((5, 5), bool)
    line[2, 1:4] = True  # all edge
    np.testing.assert_array_equal(edge_distance_map(line), line.astype(np.float32))
    assert not edge_distance_map(np.zeros((5, 5), bool)).any()
    assert not edge_distance_map(np.ones((5, 5), bool)).any()


def test_batch_and_channels_are_independent_and_binary_edge_kind():
    a = torch.from_numpy(disc(41, 12, 20, 20))
    b = torch.from_numpy(disc(41, 6, 10, 28))
    masks = torch.stack([torch.stack([a, b]), torch.stack([b, torch.zeros_like(b)])]).float()  # (2, 2, 41, 41)
    out = edge_targets(masks)
    assert out.shape == masks.shape and out.dtype == torch.float32
    ta, tb = torch.from_numpy(edge_distance_map(a.numpy())), torch.from_numpy(edge_distance_map(b.numpy()))
    torch.testing.assert_close(out[0, 0], ta, rtol=0, atol=0)
    torch.testing.assert_close(out[0, 1], tb, rtol=0, atol=0)
    torch.testing.assert_close(out[1, 0], tb, rtol=0, atol=0)
    assert not out[1, 1].any()
    edges = edge_targets(masks, kind="edge")
    torch.testing.assert_close(edges[0, 0], torch.from_numpy(edge_image(a.numpy())).float(), rtol=0, atol=0)
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="kind"):
        edge_targets(masks, kind="sobel")


def test_target_follows_rotation_and_flip_of_the_label():
    rng = np.random.default_rng(0)
    mask = np.zeros((33, 47), bool)
    mask[5:20, 8:30] = True
    mask[12:28, 25:40] |= rng.random((16, 15)) > 0.2  # an irregular, asymmetric object
    masks = torch.from_numpy(mask)[None, None].float()
    target = edge_targets(masks)
    for k in (1, 2, 3):
        rotated = edge_targets(torch.rot90(masks, k, dims=(2, 3)))
        torch.testing.assert_close(rotated, torch.rot90(target, k, dims=(2, 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(edge_targets(torch.flip(masks, dims=(3,))), torch.flip(target, dims=(3,)),
                               rtol=0, atol=1e-6)


def test_masked_sigmoid_bce_soft_targets_and_ignore():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]]])
    valid = torch.tensor([[[[True, True], [True, False]]]])
    sp = torch.nn.functional.softplus
    # BCE(x, g) = softplus(x) - g * x
    hand = [sp(torch.tensor(0.0)) - 0.0, sp(torch.tensor(2.0)) - 2.0, sp(torch.tensor(-1.0))]
    loss = masked_sigmoid_bce(logits, target, valid)
    assert loss.item() == pytest.approx(float(sum(hand) / 3), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 0, 1, 1] == 0 and logits.grad[0, 0, 0, 1] != 0
    assert masked_sigmoid_bce(logits, target, torch.zeros_like(valid)).item() == 0
    with pytest.raises(ValueError, match="same shape"):
        masked_sigmoid_bce(logits, target[..., :1])
