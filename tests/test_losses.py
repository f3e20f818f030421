"""Tests of nnunet_ulseg.losses: Eq. 2 and 3 of AHRNet against hand-computed values, ignore handling,
the region I', optimisation behaviour of the level set loss, autocast, deep-supervision use."""
import math

import numpy as np
import pytest
import torch
from nnunet_ulseg.losses import (MaskedBCELoss, RegionalLevelSetLoss, SoftIoULoss, WeakSegLoss, build_region,
                                 intensity_at, level_set_energy, rls_region, scale_mask_about_centroid)
from nnunet_ulseg.losses._common import foreground_log_probs, fp32_region

# two samples of 2x2: probabilities p (lesion), targets (2 = ignore), intensities
P = [[[0.8, 0.3], [0.6, 0.9]], [[0.2, 0.4], [0.7, 0.1]]]
T = [[[1, 0], [2, 1]], [[0, 0], [1, 0]]]
IMG = [[[1.0, 3.0], [5.0, 2.0]], [[4.0, 0.0], [2.0, 1.0]]]


def logits_from_p(p):
    """(B, 2, ...) logits whose softmax channel 1 is p: channel 0 = 0, channel 1 = logit(p)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    lesion = torch.log(p / (1 - p))
    return torch.stack([torch.zeros_like(lesion), lesion], 1).float()


def as_target(t):
    return torch.as_tensor(t, dtype=torch.float32)[:, None]


def as_image(i):
    return torch.as_tensor(i, dtype=torch.float32)[:, None]


def flat(sample):
    return [v for row in sample for v in row]


def ellipse_implicit(shape, cx, cy, a, b, theta):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2


def ellipse(shape, cx, cy, a, b, theta):
    return ellipse_implicit(shape, cx, cy, a, b, theta) <= 1


def lesion_batch(batch=2, size=24, seed=0):
    """Random logits, an elliptic lesion with an ignore ring around it, and a random image."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 2, size, size, generator=g)
    target = torch.zeros(batch, 1, size, size)
    for b in range(batch):
        outer = torch.from_numpy(ellipse((size, size), 11 + b, 12, 6, 4, 0.3 * b))
        inner = torch.from_numpy(ellipse((size, size), 11 + b, 12, 4.5, 3, 0.3 * b))
        target[b, 0][outer] = 2
        target[b, 0][inner] = 1
    image = torch.randn(batch, 1, size, size, generator=g) + 2 * (target == 1).float()
    return logits, target, image


# ---------------------------------------------------------------- p, BCE, IoU (Eq. 3)

def test_foreground_probability_is_softmax_channel_one():
    logits = torch.tensor([[[[0.5, -2.0]], [[1.5, 3.0]]]])  # (1, 2, 1, 2)
    p, log_p, log_q = foreground_log_probs(logits)
    expected = [1 / (1 + math.exp(-(1.5 - 0.5))), 1 / (1 + math.exp(-(3.0 + 2.0)))]
    assert p.shape == (1, 1, 1, 2) and p.dtype == torch.float32
    assert p.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    assert log_q.exp().flatten().tolist() == pytest.approx([1 - e for e in expected], rel=1e-5)
    assert torch.allclose(log_p.exp(), p)


def test_bce_hand_computed_pooled_over_non_ignored_pixels():
    terms = []
    for p, t in zip(P, T):
        for pv, tv in zip(flat(p), flat(t)):
            if tv == 2:
                continue
            terms.append(-math.log(pv) if tv == 1 else -math.log(1 - pv))
    expected = sum(terms) / len(terms)  # 7 valid pixels in the batch
    loss = MaskedBCELoss(ignore_label=2)(logits_from_p(P), as_target(T))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # without an ignore label, 2 is neither lesion nor ignored: a background pixel
    expected_all = (sum(terms) - math.log(1 - 0.6)) / 8
    assert MaskedBCELoss(ignore_label=None)(logits_from_p(P), as_target(T)).item() == pytest.approx(expected_all, rel=1e-5)


def test_iou_hand_computed_per_sample_then_batch_mean():
    s = 1e-5
    # sample 0: valid pixels p = .8 (g=1), .3 (g=0), .9 (g=1); the ignored .6 is left out
    iou0 = 1 - (0.8 + 0.9 + s) / ((1 + 0.8 - 0.8) + 0.3 + (1 + 0.9 - 0.9) + s)
    # sample 1: p = .2, .4, .7 (g=1), .1
    iou1 = 1 - (0.7 + s) / (0.2 + 0.4 + (1 + 0.7 - 0.7) + 0.1 + s)
    loss = SoftIoULoss(ignore_label=2, smooth=s)(logits_from_p(P), as_target(T))
    assert loss.item() == pytest.approx((iou0 + iou1) / 2, rel=1e-5)
    # pooled over the batch would be a different number: the per-sample mean is what we claim
    pooled = 1 - (0.8 + 0.9 + 0.7) / (2.3 + 1.7)
    assert abs(loss.item() - pooled) > 1e-3


def test_iou_empty_target_and_prediction_is_zero_not_nan():
    target = torch.zeros(2, 1, 16, 16)
    logits = torch.zeros(2, 2, 16, 16)
    logits[:, 0] = 30.0  # confident background, p ~ 1e-13
    assert 0 <= SoftIoULoss()(logits, target).item() < 1e-3
    all_ignored = torch.full((2, 1, 16, 16), 2.0)
    assert SoftIoULoss()(torch.randn(2, 2, 16, 16), all_ignored).item() == 0.0
    assert MaskedBCELoss()(torch.randn(2, 2, 16, 16), all_ignored).item() == 0.0


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = (torch.randn(2, 2, 8, 8) * 1e4).requires_grad_()
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    image = torch.randn(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    loss = WeakSegLoss(use_rls=True)(logits, target, image)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="two softmax channels"):
        MaskedBCELoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="target must be"):
        SoftIoULoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="region must be"):
        RegionalLevelSetLoss(region="box")
    with pytest.raises(ValueError, match="region must be"):
        build_region(torch.zeros(1, 1, 4, 4), "box")
    with pytest.raises(ValueError, match="no image"):
        WeakSegLoss(use_rls=True)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))


# ---------------------------------------------------------------- ignore label

@pytest.mark.parametrize("make_loss", [
    lambda: MaskedBCELoss(),
    lambda: SoftIoULoss(),
], ids=["bce", "iou"])
def test_ignored_pixels_change_neither_loss_nor_gradient(make_loss):
    loss_fn = make_loss()
    logits, target, image = lesion_batch()
    ignored = (target == 2).expand_as(logits)
    assert ignored.any()

    def run(lg):
        lg = lg.clone().requires_grad_()
        value = loss_fn(lg, target)
        value.backward()
        return value.detach(), lg.grad

    value1, grad1 = run(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 50, logits)
    value2, grad2 = run(changed)
    assert torch.allclose(value1, value2, rtol=1e-6, atol=1e-7)
    assert (grad1[ignored] == 0).all() and (grad2[ignored] == 0).all()
    assert torch.allclose(grad1, grad2, rtol=1e-5, atol=1e-8)
    assert grad1[~ignored].abs().sum() > 0


@pytest.mark.parametrize("make_loss", [
    lambda: RegionalLevelSetLoss(region="rls"),
    lambda: RegionalLevelSetLoss(region="image"),
    lambda: RegionalLevelSetLoss(region="rls", detach_means=False),
], ids=["rls", "ls", "rls_nodetach"])
def test_level_set_acts_inside_the_ignore_band(make_loss):
    """Eq. 2 uses no labels: the ignore band of rounds >= 2 is where RLS must move the contour (DESIGN)."""
    loss_fn = make_loss()
    logits, target, image = lesion_batch()
    band = (target == 2)[:, 0]
    assert band.any()
    lg = logits.clone().requires_grad_()
    loss_fn(lg, target, image).backward()
    assert lg.grad[:, 1][band].abs().min() > 0  # every band pixel gets a gradient
    # and the loss depends on the predictions there
    changed = torch.where((target == 2).expand_as(logits), torch.randn_like(logits) * 5, logits)
    assert loss_fn(changed, target, image).item() != pytest.approx(loss_fn(logits, target, image).item(), rel=1e-4)


def test_rls_labelled_ablation_gives_the_ignore_band_no_gradient():
    """The pre-fix behaviour, kept as an ablation: I' minus the ignore band, so the band gets no RLS gradient
    while the rest of I' still does."""
    logits, target, image = lesion_batch()
    band = (target == 2)[:, 0]
    lg = logits.clone().requires_grad_()
    RegionalLevelSetLoss(region="rls_labelled")(lg, target, image).backward()
    assert (lg.grad[:, 1][band] == 0).all() and lg.grad[:, 1][~band].abs().sum() > 0
    with pytest.raises(ValueError, match="region must be one of"):
        RegionalLevelSetLoss(region="nope")


def test_compound_loss_masks_ignore_in_bce_and_iou_only():
    logits, target, image = lesion_batch()
    band = (target == 2)[:, 0]
    grads = {}
    for use_rls in (False, True):
        lg = logits.clone().requires_grad_()
        WeakSegLoss(use_rls=use_rls)(lg, target, image).backward()
        grads[use_rls] = lg.grad[:, 1]
    assert (grads[False][band] == 0).all()
    assert (grads[True][band] != 0).all()


# ---------------------------------------------------------------- region I'

def test_region_of_single_pixel_and_of_square_by_hand():
    mask = torch.zeros(2, 1, 9, 9)
    mask[0, 0, 4, 4] = 1
    mask[1, 0, 3:6, 3:6] = 1
    region = scale_mask_about_centroid(mask, 2.0)
    assert region.dtype == torch.bool
    plus = {(4, 4), (3, 4), (5, 4), (4, 3), (4, 5)}
    assert {tuple(ix) for ix in region[0, 0].nonzero().tolist()} == plus
    # 3x3 block at centre 4: the inverse map 4 + (x - 4) / 2 stays within [2.5, 5.5] for x in [1, 7];
    # at x = 1 or 7 the linear sample is exactly 0.5 (inside), at a corner 0.25 (outside)
    expected = {(r, c) for r in range(1, 8) for c in range(1, 8)} - {(1, 1), (1, 7), (7, 1), (7, 7)}
    assert {tuple(ix) for ix in region[1, 0].nonzero().tolist()} == expected


ELLIPSES = [  # cx, cy, a, b, theta: a base ellipse, a rotated copy, a scaled copy, a small one
    (60.3, 66.7, 14.0, 8.0, 0.5),
    (60.3, 66.7, 14.0, 8.0, 0.5 + 1.1),
    (60.3, 66.7, 21.0, 12.0, 0.5),
    (40.5, 70.25, 5.3, 3.1, -0.7),
]


def test_region_of_ellipses_is_the_2x_ellipse_within_one_pixel_ring():
    shape = (128, 128)
    masks = torch.stack([torch.from_numpy(ellipse(shape, *e)) for e in ELLIPSES])[:, None]
    regions = scale_mask_about_centroid(masks, 2.0)  # all four in one batched call
    for k, (cx, cy, a, b, theta) in enumerate(ELLIPSES):
        got = regions[k, 0].numpy()
        analytic = ellipse(shape, cx, cy, 2 * a, 2 * b, theta)
        mismatch = got != analytic
        inner = ellipse(shape, cx, cy, 2 * a - 1, 2 * b - 1, theta)
        outer = ellipse(shape, cx, cy, 2 * a + 1, 2 * b + 1, theta)
        assert not (mismatch & inner).any(), f"ellipse {k}: mismatch more than one pixel inside"
        assert not (mismatch & ~outer).any(), f"ellipse {k}: mismatch more than one pixel outside"
        if a >= 10:
            assert got.sum() / masks[k].sum().item() == pytest.approx(4.0, abs=0.1)


def test_region_follows_the_mask_not_the_patch():
    """A translated mask gives the translated region (cropping/shifting augmentation)."""
    shape = (64, 64)
    m1 = torch.from_numpy(ellipse(shape, 30.0, 28.0, 8, 5, 0.4))
    m2 = torch.roll(m1, shifts=(5, -7), dims=(0, 1))
    r1, r2 = scale_mask_about_centroid(torch.stack([m1, m2])[:, None])
    assert torch.equal(torch.roll(r1, shifts=(5, -7), dims=(1, 2)), r2)


def test_region_in_3d_is_about_8x_volume():
    zz, yy, xx = np.mgrid[:40, :40, :40].astype(float)
    ball = ((xx - 19.6) ** 2 + (yy - 20.2) ** 2 + (zz - 20.1) ** 2) <= 7.5 ** 2
    region = scale_mask_about_centroid(torch.from_numpy(ball)[None, None])
    assert region.sum().item() / ball.sum() == pytest.approx(8.0, rel=0.05)


def test_rls_region_uses_lesion_and_ignore_and_keeps_ignore_pixels():
    target = torch.zeros(1, 1, 9, 9)
    target[0, 0, 3:6, 3:6] = 2
    target[0, 0, 4, 4] = 1
    scaled = rls_region(target, ignore_label=2)
    assert scaled.sum().item() == 45  # the whole 3x3 block (lesion and ignore) scaled, see the hand test
    region = build_region(target, "rls", ignore_label=2)
    assert torch.equal(region, scaled)  # ignore pixels are part of I' (Eq. 2 uses no labels)
    assert build_region(target, "image", ignore_label=2).all()
    assert rls_region(torch.zeros(1, 1, 9, 9)).sum().item() == 0


# ---------------------------------------------------------------- level set (Eq. 2)

def eq2_by_hand(p_list, i_list, lambda1=1.0, lambda2=3.0):
    c1 = sum(p * i for p, i in zip(p_list, i_list)) / sum(p_list)
    c2 = sum((1 - p) * i for p, i in zip(p_list, i_list)) / sum(1 - p for p in p_list)
    energy = sum(lambda1 * p * (i - c1) ** 2 + lambda2 * (1 - p) * (i - c2) ** 2 for p, i in zip(p_list, i_list))
    return energy / len(p_list)


def variance(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


@pytest.mark.parametrize("normalize", [False, True])
def test_level_set_whole_image_hand_computed(normalize):
    # sample 0 without its ignored bottom-left pixel: p = .8 .3 .9, i = 1 3 2
    # c1 = 3.5 / 2 = 1.75, c2 = 2.5 / 1 = 2.5, energies 1.8 + 0.99375 + 0.13125 -> 0.975 (checks eq2_by_hand)
    assert eq2_by_hand([0.8, 0.3, 0.9], [1.0, 3.0, 2.0]) == pytest.approx(0.975)
    per_sample = []
    for p, img in zip(P, IMG):  # every pixel counts, the ignored one included (Eq. 2 uses no labels)
        ps, iv = flat(p), flat(img)
        value = eq2_by_hand(ps, iv)
        per_sample.append(value / (variance(iv) + 0.01) if normalize else value)
    loss = RegionalLevelSetLoss(region="image", normalize_intensity=normalize)(
        logits_from_p(P), as_target(T), as_image(IMG))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)


def test_level_set_region_hand_computed_and_lambdas():
    """Eq. 2 over I' of a 3x3 lesion in a 9x9 patch: the 45 pixels found in the region test."""
    size = 9
    target = torch.zeros(1, 1, size, size)
    target[0, 0, 3:6, 3:6] = 1
    inside = {(r, c) for r in range(1, 8) for c in range(1, 8)} - {(1, 1), (1, 7), (7, 1), (7, 7)}
    p = [[0.1 + 0.8 * ((r * 7 + c * 3) % 10) / 9 for c in range(size)] for r in range(size)]
    img = [[float((r * c) % 5) - 1.5 for c in range(size)] for r in range(size)]
    ps = [p[r][c] for r, c in sorted(inside)]
    iv = [img[r][c] for r, c in sorted(inside)]
    for lambda1, lambda2 in [(1.0, 3.0), (2.0, 0.5)]:
        loss = RegionalLevelSetLoss(lambda1, lambda2, region="rls", normalize_intensity=False)(
            logits_from_p([p]), target, as_image([img]))
        assert loss.item() == pytest.approx(eq2_by_hand(ps, iv, lambda1, lambda2), rel=1e-5)


def test_level_set_is_invariant_to_intensity_scale_when_normalised():
    logits, target, image = lesion_batch()
    loss = RegionalLevelSetLoss(var_eps=0.0)
    assert loss(logits, target, image).item() == pytest.approx(loss(logits, target, 7 * image + 3).item(), rel=1e-4)
    raw = RegionalLevelSetLoss(normalize_intensity=False)
    assert raw(logits, target, 2 * image).item() == pytest.approx(4 * raw(logits, target, image).item(), rel=1e-4)


def test_detached_and_attached_means_give_the_same_gradient():
    logits, target, image = lesion_batch(seed=3)
    grads = []
    for detach in (True, False):
        lg = logits.clone().requires_grad_()
        RegionalLevelSetLoss(detach_means=detach)(lg, target, image).backward()
        grads.append(lg.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_empty_region_contributes_zero_and_stays_in_graph():
    logits = torch.randn(2, 2, 12, 12, requires_grad=True)
    target = torch.zeros(2, 1, 12, 12)
    target[1, 0, 4:8, 4:8] = 1
    image = torch.randn(2, 1, 12, 12)
    per_sample = level_set_energy(torch.softmax(logits, 1)[:, 1:], image, build_region(target, "rls"))
    assert per_sample[0].item() == 0.0 and per_sample[1].item() > 0
    loss = RegionalLevelSetLoss()(logits, target, image)
    assert loss.item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    empty = RegionalLevelSetLoss()(logits, torch.zeros_like(target), image)
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_intensity_at_takes_channel_zero_and_area_averages():
    values = [[float((r * 8 + c) ** 2 % 23) for c in range(8)] for r in range(8)]  # not linear in r, c
    image = torch.tensor([values, [[-1.0] * 8] * 8]).view(1, 2, 8, 8)  # channel 1 must be ignored
    quarter = intensity_at(image, (2, 2))
    block_means = [[sum(values[r][c] for r in range(4 * br, 4 * br + 4) for c in range(4 * bc, 4 * bc + 4)) / 16
                    for bc in range(2)] for br in range(2)]
    assert quarter.shape == (1, 1, 2, 2)
    assert quarter[0, 0].flatten().tolist() == pytest.approx(flat(block_means), rel=1e-6)
    assert torch.equal(intensity_at(image, (8, 8)), image[:, :1])
    assert intensity_at(image.half(), (8, 8)).dtype == torch.float32
    with pytest.raises(ValueError, match="larger than the image"):
        intensity_at(image, (16, 16))
    with pytest.raises(ValueError, match="spatial dims"):
        intensity_at(image, (2, 2, 2))


def _dice(a, b):
    return 2 * (a & b).sum().item() / (a.sum() + b.sum()).item()


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("region", ["rls", "image"])
def test_level_set_alone_moves_a_shifted_blurred_prediction_onto_the_disc(detach, region):
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    disc = ((xx - 16) ** 2 + (yy - 16) ** 2) <= 7 ** 2
    image = (disc.float() + 0.05 * torch.randn(size, size, generator=torch.Generator().manual_seed(0)))[None, None]
    # pseudo mask shifted by (4, 3) px; I' (radius 14 about (20, 19)) still covers the true disc
    shifted_distance = torch.sqrt((xx - 20) ** 2 + (yy - 19) ** 2) - 7
    target = (shifted_distance <= 0).float()[None, None]
    z = (-shifted_distance / 2.0).clone()[None, None].requires_grad_()  # blurred: a soft edge 2 px wide
    loss_fn = RegionalLevelSetLoss(region=region, detach_means=detach)
    optimiser = torch.optim.Adam([z], lr=0.2)

    def step():
        logits = torch.cat([torch.zeros_like(z), z], 1)
        return loss_fn(logits, target, image)

    dice0 = _dice(z[0, 0] > 0, disc)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        value = step()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert losses[-1] < 0.3 * losses[0]
    assert dice0 < 0.8 and _dice(z[0, 0].detach() > 0, disc) > 0.95


# ---------------------------------------------------------------- compound, autocast, deep supervision

def test_weak_seg_loss_sums_components_and_records_them():
    logits, target, image = lesion_batch()
    loss = WeakSegLoss(rls_weight=0.1, use_rls=False)
    bce = MaskedBCELoss()(logits, target).item()
    iou = SoftIoULoss()(logits, target).item()
    rls = RegionalLevelSetLoss()(logits, target, image).item()
    assert loss(logits, target, image).item() == pytest.approx(bce + iou, rel=1e-6)
    assert loss.last_components == pytest.approx({"bce": bce, "iou": iou, "rls": 0.0})
    loss.use_rls = True  # what the trainer flips at the schedule point
    assert loss(logits, target, image).item() == pytest.approx(bce + iou + 0.1 * rls, rel=1e-6)
    assert loss.last_components["rls"] == pytest.approx(rls, rel=1e-6)
    records = loss.pop_components()
    assert len(records) == 2 and records[0]["rls"] == 0.0 and records[1]["rls"] == pytest.approx(rls, rel=1e-6)
    assert loss.pop_components() == []
    ls = WeakSegLoss(use_rls=True, region="image", rls_weight=1.0)
    ls(logits, target, image)
    assert ls.last_components["rls"] == pytest.approx(
        RegionalLevelSetLoss(region="image")(logits, target, image).item(), rel=1e-6)


def test_ls_variant_uses_the_whole_image():
    """Changing the image far from the lesion changes LS but not RLS."""
    logits, target, image = lesion_batch()
    far = image.clone()
    far[:, :, :2, :2] += 10.0  # corner pixels: outside I' (lesion at x ~ 11, radius <= 12 after scaling)
    assert not build_region(target, "rls")[:, :, :2, :2].any()
    rls, ls = RegionalLevelSetLoss(region="rls"), RegionalLevelSetLoss(region="image")
    assert rls(logits, target, far).item() == pytest.approx(rls(logits, target, image).item(), rel=1e-6)
    assert abs(ls(logits, target, far).item() - ls(logits, target, image).item()) > 1e-3


def test_bf16_autocast_on_cpu_returns_float32_and_matches_fp32():
    logits, target, image = lesion_batch()
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    loss = WeakSegLoss(use_rls=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(image)
        assert out.dtype == torch.bfloat16
        value = loss(out, target, image.bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert all(torch.isfinite(q.grad).all() for q in conv.parameters())
    reference = loss(out.detach().float(), target, image.bfloat16().float())
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)


def test_fp32_region_switches_autocast_off():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with fp32_region("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert torch.nn.functional.linear(torch.ones(1, 2), torch.ones(3, 2)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")


def test_works_inside_nnunet_deep_supervision_wrapper():
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    logits, target, image = lesion_batch(size=32)
    outputs = [torch.randn(2, 2, s, s, requires_grad=True) for s in (32, 16, 8)]
    targets = [target[:, :, ::k, ::k] for k in (1, 2, 4)]  # nearest downsampling, as nnU-Net's transform
    weights = (4 / 7, 2 / 7, 1 / 7)
    per_output = WeakSegLoss(use_rls=True)
    wrapped = DeepSupervisionWrapper(per_output, weights)
    total = wrapped(outputs, targets, [image] * 3)
    records = per_output.pop_components()
    assert len(records) == 3
    expected = sum(w * WeakSegLoss(use_rls=True)(o, t, image).item() for w, o, t in zip(weights, outputs, targets))
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert all(o.grad is not None and torch.isfinite(o.grad).all() for o in outputs)


def test_3d_inputs():
    logits = torch.randn(1, 2, 12, 16, 16, requires_grad=True)
    zz, yy, xx = np.mgrid[:12, :16, :16].astype(float)
    target = torch.from_numpy((((xx - 8) / 3) ** 2 + ((yy - 8) / 3) ** 2 + ((zz - 6) / 2) ** 2) <= 1).float()[None, None]
    image = torch.randn(1, 1, 24, 32, 32)
    value = WeakSegLoss(use_rls=True)(logits, target, image)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
