import numpy as np
import pytest
import torch

from nnunet_ulseg.training.ds import ImageDeepSupervision, deep_supervision_weights


def test_nnunet_weights_match_nnunet_by_hand():
    # 1, 1/2, 1/4, 1/8 -> last switched off -> 1, .5, .25, 0 normalised by 1.75
    np.testing.assert_allclose(deep_supervision_weights(4), [1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0])
    ddp = deep_supervision_weights(3, ddp=True)
    assert ddp[-1] > 0 and ddp.sum() == pytest.approx(1)
    assert deep_supervision_weights(3, ddp=True, compiled=True)[-1] == 0
    np.testing.assert_allclose(deep_supervision_weights(1), [1.0])
    np.testing.assert_allclose(deep_supervision_weights(3, "equal"), [1, 1, 1])
    with pytest.raises(ValueError, match="scheme"):
        deep_supervision_weights(3, "nope")


class _ImageTimesOutput(torch.nn.Module):
    """A real per-output loss: mean(output * resized image channel 0) + mean(target)."""

    def forward(self, out, tgt, image):
        img = torch.nn.functional.interpolate(image[:, :1], size=out.shape[2:], mode="area")
        return (out[:, :1] * img).mean() + tgt.float().mean()


def test_wrapper_weights_outputs_and_passes_the_image():
    loss = ImageDeepSupervision(_ImageTimesOutput(), weights=[0.75, 0.25, 0.0])
    image = torch.full((2, 1, 8, 8), 2.0)
    outs = [torch.ones(2, 2, 8, 8, requires_grad=True), torch.ones(2, 2, 4, 4), torch.ones(2, 2, 2, 2)]
    tgts = [torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    loss.image = image
    value = loss(outs, tgts)
    # 0.75 * (2 + 1) + 0.25 * (2 + 0); the zero-weight output is not evaluated
    assert value.item() == pytest.approx(2.75)
    value.backward()
    assert outs[0].grad is not None


def test_wrapper_single_tensor_and_errors():
    loss = ImageDeepSupervision(_ImageTimesOutput())
    loss.image = torch.ones(1, 1, 4, 4)
    assert loss(torch.ones(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-zero"):
        ImageDeepSupervision(_ImageTimesOutput(), weights=[0, 0])
    with pytest.raises(ValueError, match="2 outputs but 1 targets"):
        loss([torch.ones(1, 2, 4, 4)] * 2, [torch.ones(1, 1, 4, 4)])


class _Recording(torch.nn.Module):
    """A per-output loss that records its components like WeakSegLoss does (``last_record``)."""

    components = ("a",)

    def forward(self, out, tgt, image):
        value = out.mean()
        self.last_record = {"seg": value.detach(), "a": torch.tensor(float(out.shape[-1]))}
        return value


def test_wrapper_records_each_outputs_components_by_index():
    loss = ImageDeepSupervision(_Recording(), weights=[0.5, 0.5, 0.0])
    outs = [torch.full((1, 2, s, s), float(s)) for s in (8, 4, 2)]
    tgts = [torch.zeros(1, 1, s, s) for s in (8, 4, 2)]
    loss(outs, tgts)
    loss([o * 3 for o in outs], tgts)
    means = loss.pop_component_means()
    # output 0 (highest resolution): seg 8 then 24 -> 16; the zero-weight output is not evaluated, so not recorded
    assert means == {0: {"seg": 16.0, "a": 8.0}, 1: {"seg": 8.0, "a": 4.0}}
    assert loss.pop_component_means() == {}
    # a loss without last_record: nothing recorded; a single tensor is output 0
    plain = ImageDeepSupervision(_ImageTimesOutput())
    plain.image = torch.ones(1, 1, 4, 4)
    plain(torch.ones(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    assert plain.pop_component_means() == {}
    single = ImageDeepSupervision(_Recording())
    single(torch.ones(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    assert single.pop_component_means() == {0: {"seg": 1.0, "a": 4.0}}


def test_wrapper_records_weak_seg_loss_components():
    from nnunet_ulseg.losses import WeakSegLoss

    g = torch.Generator().manual_seed(0)
    loss = ImageDeepSupervision(WeakSegLoss(use_rls=True), weights=[1.0, 1.0])
    image = torch.randn(2, 1, 16, 16, generator=g)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 5:12] = 1
    outs = [torch.randn(2, 2, 16, 16, generator=g), torch.randn(2, 2, 8, 8, generator=g)]
    loss.image = image
    loss(outs, [target, target[:, :, ::2, ::2]])
    top = loss.pop_component_means()[0]
    direct = WeakSegLoss(use_rls=True)
    direct(outs[0], target, image)
    expected = direct.last_components
    assert top == pytest.approx({"seg": expected["bce"] + expected["iou"], **expected}, rel=1e-6)
