"""AHRNet: outputs, deep supervision, ablation rows, nnU-Net plans contract (networks/ahrnet.py)."""
import json
import pydoc
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_ulseg.networks.ahrnet import (NETWORK_CLASS_NAME, AHRNet, ahrnet_arch_kwargs,
                                          deep_supervision_scales, deep_supervision_strides)
from nnunet_ulseg.networks.attention import DualAttention
from nnunet_ulseg.networks.heads import BaselineHead, DEDecoder
from network_helpers import conv_output_elements

TINY = {"stem_channels": 8, "stages": [
    {"block": "bottleneck", "num_modules": 1, "num_blocks": [1], "num_channels": [4]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1], "num_channels": [4, 8]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1, 1], "num_channels": [4, 8, 16]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1, 1, 1], "num_channels": [4, 8, 16, 32]},
]}
ROWS = {  # Table 2 rows 1-4
    1: dict(decoder=False, dual_attention=False, scale_attention=False),
    2: dict(decoder=True, dual_attention=False, scale_attention=False),
    3: dict(decoder=True, dual_attention=True, scale_attention=False),
    4: dict(decoder=True, dual_attention=True, scale_attention=True),
}


def tiny(row=4, **kw):
    kw = {**ROWS[row], **kw}
    return AHRNet(kw.pop("input_channels", 1), kw.pop("num_classes", 2), TINY, **kw)


@pytest.mark.parametrize("size", [(64, 64), (96, 96), (128, 128), (96, 160)])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_ds_on_and_off(size, channels):
    net = tiny(4, input_channels=channels, num_classes=3, deep_supervision=True).eval()
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        outs = net(x)
        assert isinstance(outs, list) and len(outs) == 3
        assert [tuple(o.shape[2:]) for o in outs] == [size, (size[0] // 2, size[1] // 2),
                                                      (size[0] // 4, size[1] // 4)]
        assert all(o.shape[:2] == (2, 3) for o in outs)
        net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
        single = net(x)
    assert torch.is_tensor(single) and single.shape == (2, 3, *size)
    torch.testing.assert_close(single, outs[0])


def test_baseline_row_outputs():
    net = tiny(1, input_channels=2).eval()
    assert isinstance(net.decoder, BaselineHead) and isinstance(net.attention, nn.Identity)
    x = torch.randn(1, 2, 64, 96)
    with torch.no_grad():
        assert net(x).shape == (1, 2, 64, 96)
        net.decoder.deep_supervision = True
        out = net(x)
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (1, 2, 64, 96)


def test_rejects_bad_sizes_ops_and_strides():
    net = tiny(2)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 64, 80))
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        net(torch.randn(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="2D only"):
        AHRNet(1, 2, TINY, conv_op=nn.Conv3d)
    with pytest.raises(ValueError, match="input_channels"):
        AHRNet(0, 2, TINY)
    with pytest.raises(ValueError, match="strides"):
        AHRNet(1, 2, TINY, strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]])
    with pytest.raises(TypeError):
        AHRNet(1, 2, TINY, dropout_op=None)  # unknown kwargs are rejected
    assert AHRNet(1, 2, TINY, decoder=False, strides=[[1, 1], [32, 32]]).strides == [[1, 1], [32, 32]]


def test_ablation_rows_are_built_and_ordered():
    nets = {r: tiny(r) for r in ROWS}
    counts = {r: sum(p.numel() for p in n.parameters()) for r, n in nets.items()}
    assert counts[1] < counts[2] < counts[3] < counts[4]
    assert isinstance(nets[1].decoder, BaselineHead) and isinstance(nets[2].decoder, DEDecoder)
    assert isinstance(nets[3].attention, DualAttention) and nets[3].fusion.scale_attention is None
    assert nets[4].fusion.scale_attention is not None
    # rows differ exactly by their added modules
    assert counts[4] - counts[3] == sum(p.numel() for p in nets[4].fusion.scale_attention.parameters())


@pytest.mark.parametrize("row", [1, 2, 3, 4])
@pytest.mark.parametrize("ds", [True, False])
def test_every_parameter_gets_a_gradient(row, ds):
    torch.manual_seed(0)
    net = tiny(row, deep_supervision=ds, nonlin_kwargs={"inplace": True}).train()  # plans default
    net.apply(net.initialize)
    with torch.no_grad():  # gamma = 0 zeroes the PAM/CAM gradients; open the gate to check them
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    out = net(torch.randn(2, 1, 64, 64))
    outs = out if isinstance(out, list) else [out]
    sum((o * torch.randn_like(o)).mean() for o in outs).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert no_grad == [] and zero == []


def test_state_dict_keys_do_not_depend_on_deep_supervision():
    for row in ROWS:
        on, off = tiny(row, deep_supervision=True), tiny(row, deep_supervision=False)
        assert list(on.state_dict()) == list(off.state_dict())
        off.load_state_dict(on.state_dict())



def test_compute_conv_feature_map_size():
    net = tiny(4, num_classes=3)
    x = torch.randn(1, 1, 64, 96)
    quarter = 16 * 24
    da = net.attention.output_channels
    extra = 60 * quarter + quarter ** 2 + da ** 2  # fused map + PAM map + CAM map
    assert net.compute_conv_feature_map_size((64, 96)) == conv_output_elements(net.eval(), x) + extra
    b = tiny(1)
    assert b.compute_conv_feature_map_size((64, 96)) == conv_output_elements(b.eval(), x) + 60 * quarter
    sizes = [net.compute_conv_feature_map_size((s, s)) for s in (64, 96, 128)]
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    with pytest.raises(ValueError, match="2D"):
        net.compute_conv_feature_map_size((1, 64, 64))


def test_initialize_is_nnunet_he_init():
    net = tiny(4)
    assert isinstance(AHRNet.__dict__["initialize"], staticmethod)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            nn.init.constant_(m.bias, 1.0)
    net.apply(net.initialize)
    conv = net.encoder.stages[1][0].branches[0][0].conv1.conv
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / (1 + 1e-4) / fan_in) ** 0.5, rel=0.25)
    assert all(m.bias.abs().sum() == 0 for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None)
    assert net.attention.pam.gamma.item() == 0 and net.attention.cam.gamma.item() == 0


def test_arch_kwargs_are_json_and_locatable():
    kwargs, req = ahrnet_arch_kwargs("w18", decoder=True)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert req == ["conv_op", "norm_op", "nonlin"]
    assert pydoc.locate(kwargs["conv_op"]) is nn.Conv2d
    assert pydoc.locate(kwargs["norm_op"]) is nn.BatchNorm2d and pydoc.locate(kwargs["nonlin"]) is nn.ReLU
    assert kwargs["strides"] == [[1, 1], [2, 2], [2, 2], [8, 8]]
    explicit, _ = ahrnet_arch_kwargs(TINY, decoder=False, norm_op=nn.InstanceNorm2d,
                                     norm_op_kwargs={"eps": 1e-5, "affine": True})
    assert explicit["config"] == TINY and explicit["strides"] == [[1, 1], [32, 32]]
    assert pydoc.locate(explicit["norm_op"]) is nn.InstanceNorm2d
    assert pydoc.locate(NETWORK_CLASS_NAME) is AHRNet


@pytest.mark.parametrize("decoder", [True, False])
def test_get_network_from_plans_round_trip(decoder):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs, req = ahrnet_arch_kwargs(TINY, decoder=decoder, dual_attention=decoder, scale_attention=decoder)
    kwargs, req = json.loads(json.dumps(kwargs)), json.loads(json.dumps(req))  # as read from plans.json
    nets = {ds: get_network_from_plans(NETWORK_CLASS_NAME, kwargs, req, 1, 2, allow_init=True,
                                       deep_supervision=ds) for ds in (True, False)}
    assert list(nets[True].state_dict()) == list(nets[False].state_dict())
    direct = AHRNet(1, 2, TINY, decoder=decoder, dual_attention=decoder, scale_attention=decoder)
    assert list(direct.state_dict()) == list(nets[True].state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert isinstance(nets[True].eval()(x), list) and torch.is_tensor(nets[False].eval()(x))
    assert isinstance(nets[True].encoder.stem[0].norm, nn.BatchNorm2d)
    assert nets[True].encoder.stem[0].nonlin.inplace


@pytest.mark.parametrize("decoder", [True, False])
def test_nnunet_deep_supervision_scales_match_outputs(decoder):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    kwargs, req = ahrnet_arch_kwargs(TINY, decoder=decoder)
    cm = ConfigurationManager({"architecture": {"network_class_name": NETWORK_CLASS_NAME,
                                                "arch_kwargs": kwargs, "_kw_requires_import": req}})
    fake_trainer = SimpleNamespace(enable_deep_supervision=True, configuration_manager=cm)
    scales = nnUNetTrainer._get_deep_supervision_scales(fake_trainer)
    assert np.allclose(scales, deep_supervision_scales(decoder))
    net = AHRNet(1, 2, TINY, decoder=decoder, deep_supervision=True).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 1, 64, 96))
    assert len(outs) == len(scales)
    for o, s in zip(outs, scales):
        assert tuple(o.shape[2:]) == (round(64 * s[0]), round(96 * s[1]))
    assert deep_supervision_strides(decoder) == kwargs["strides"]


def test_w18_forward_at_128():
    net = AHRNet(1, 2, "w18", deep_supervision=True)
    net.apply(net.initialize)
    net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = net(torch.randn(1, 1, 128, 128))
    print(f"W18 AHRNet 1x1x128x128 eval forward: {time.perf_counter() - t0:.3f}s")
    assert [tuple(o.shape) for o in outs] == [(1, 2, 128, 128), (1, 2, 64, 64), (1, 2, 32, 32)]
    assert net.encoder.output_channels == [18, 36, 72, 144]
    assert net.fusion.output_channels == 270 and net.attention.output_channels == 67


@pytest.mark.parametrize("decoder", [True, False])
def test_stride_two_stem_doubles_every_branch_and_keeps_nnunet_scales_right(decoder):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    kwargs, req = ahrnet_arch_kwargs(TINY, decoder=decoder, stem_stride=2)
    cm = ConfigurationManager({"architecture": {"network_class_name": NETWORK_CLASS_NAME,
                                                "arch_kwargs": kwargs, "_kw_requires_import": req}})
    scales = nnUNetTrainer._get_deep_supervision_scales(
        SimpleNamespace(enable_deep_supervision=True, configuration_manager=cm))
    assert np.allclose(scales, deep_supervision_scales(decoder, stem_stride=2))
    assert np.allclose(scales, [[1, 1], [0.5, 0.5]] if decoder else [[1, 1]])
    net = AHRNet(1, 2, TINY, decoder=decoder, deep_supervision=True, stem_stride=2).eval()
    assert net.encoder.output_strides == [2, 4, 8, 16] and net.size_divisor == 16
    x = torch.randn(1, 1, 48, 80)  # multiples of 16, not of 32
    with torch.no_grad():
        feats = net.encoder(x)
        outs = net(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    assert [tuple(o.shape[2:]) for o in outs] == [(round(48 * s[0]), round(80 * s[1])) for s in scales]
    half = 24 * 40
    extra = 60 * half  # the fused map (TINY: 4 + 8 + 16 + 32 channels)
    if isinstance(net.attention, DualAttention):
        extra += half ** 2 + net.attention.output_channels ** 2  # PAM and CAM maps
    assert net.compute_conv_feature_map_size((48, 80)) == conv_output_elements(net, x) + extra
    # the same weights as a stride-4 network: a pretrained HRNet loads into either
    four = AHRNet(1, 2, TINY, decoder=decoder, stem_stride=4)
    assert {k: v.shape for k, v in net.encoder.state_dict().items()} == \
        {k: v.shape for k, v in four.encoder.state_dict().items()}
    with pytest.raises(ValueError, match="stem_stride"):
        AHRNet(1, 2, TINY, stem_stride=8)
