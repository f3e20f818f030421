"""Co-segmentation network (co-seg paper Sec. 2.2-2.3): dilated encoder, pair co-attention, CoSegNet."""
import json
import pydoc
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_ulseg.networks.coattention import (ATTENTION_VARIANTS, CoAttention, ECAChannel, MeanSpatial,
                                               eca_kernel_size)
from nnunet_ulseg.networks.coseg import NETWORK_CLASS_NAME, CoSegNet, coseg_arch_kwargs
from nnunet_ulseg.networks.dilated_resnet import (DilatedResNet, load_pretrained_drn, resolve_drn_config,
                                                  torchvision_to_drn_key)
from network_helpers import conv_output_elements

TINY = {"stem_channels": 8, "layers": [1, 1, 1, 3], "planes": [4, 8, 8, 16]}  # low 16, high 64 channels
FUSIONS = ("mean", "cross")


def tiny(attention="csa", decoder="d2", **kw):
    kw.setdefault("decoder_channels", 16)
    kw.setdefault("low_level_channels", 8)
    return CoSegNet(kw.pop("input_channels", 1), kw.pop("num_classes", 2), TINY, attention, decoder, **kw)


def _open_danet_gates(net, value=0.5):
    """DANet's gamma starts at 0 (attention off); open it so the pair path is exercised."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.fill_(value)
    return net


def _randomise_norm_stats(net):
    """Non-trivial BatchNorm statistics, so eval mode is not the identity normalisation."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _calibrate_norm_stats(net, size=(32, 32)):
    """BatchNorm running statistics from a few random pairs, as after training: in eval mode the
    features then stay normalised (raw He-initialised features would saturate the sigmoids)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, net.encoder.stem.input_channels, *size))
    return net.eval()


def eval_net(attention, decoder="d2", **kw):
    torch.manual_seed(0)
    net = tiny(attention, decoder, **kw)
    net.apply(net.initialize)  # as get_network_from_plans does
    return _calibrate_norm_stats(_open_danet_gates(net))


# ---------------------------------------------------------------- encoder

def test_encoder_output_strides_and_dilations():
    enc = DilatedResNet(1, TINY).eval()
    with torch.no_grad():
        low, high = enc(torch.randn(2, 1, 64, 96))
    assert low.shape == (2, 16, 16, 24) and high.shape == (2, 64, 8, 12)
    assert (enc.low_channels, enc.high_channels) == (16, 64) and enc.output_strides == (4, 8)
    assert enc.dilations == [[1], [1], [1], [2, 4, 8]]  # multi-grid (2, 4, 8) in the last stage
    assert [b.conv2.conv.dilation for b in enc.stages[3]] == [(2, 2), (4, 4), (8, 8)]
    assert [b.conv2.conv.padding for b in enc.stages[3]] == [(2, 2), (4, 4), (8, 8)]
    assert [enc.stages[s][0].conv2.conv.stride for s in range(4)] == [(1, 1), (2, 2), (1, 1), (1, 1)]
    drn = DilatedResNet(1, {**TINY, "layers": [1, 1, 2, 3]}, multi_grid=None)  # DRN: no multi-grid
    assert drn.dilations == [[1], [1], [1, 2], [2, 4, 4]]
    assert [b.conv2.conv.dilation[0] for b in drn.stages[2]] == [1, 2]


def test_named_layouts():
    assert resolve_drn_config("resnet101")["layers"] == [3, 4, 23, 3]
    assert resolve_drn_config("resnet26")["layers"] == [1, 2, 2, 3]
    lite = DilatedResNet(1, "resnet_lite")
    assert (lite.low_channels, lite.high_channels) == (64, 512)
    with pytest.raises(ValueError, match="unknown dilated ResNet depth"):
        resolve_drn_config("resnet18")
    with pytest.raises(ValueError, match="multi_grid"):
        DilatedResNet(1, {**TINY, "layers": [1, 1, 1, 2]})  # 2 blocks, 3 rates
    with pytest.raises(ValueError, match="keys"):
        resolve_drn_config({**TINY, "block": "basic"})
    with pytest.raises(ValueError, match="2D only"):
        DilatedResNet(1, TINY, conv_op=nn.Conv3d)


def test_encoder_equals_torchvision_dilated_resnet_after_loading_its_weights(tmp_path):
    """A torchvision ResNet with replace_stride_with_dilation=[F, T, T] computes what DRN does."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    tv = ResNet(Bottleneck, [1, 1, 1, 3], replace_stride_with_dilation=[False, True, True]).eval()
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial weights and statistics
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet_tv.pth"
    torch.save({"state_dict": tv.state_dict()}, path)
    ours = DilatedResNet(3, {"stem_channels": 64, "layers": [1, 1, 1, 3], "planes": [64, 128, 256, 512]},
                         multi_grid=None).eval()
    report = load_pretrained_drn(ours, path)
    assert report["missing"] == 0 and report["unexpected"] == 0 and report["skipped_head"] == 2  # fc.w, fc.b
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        l1 = tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))
        high_tv = tv.layer4(tv.layer3(tv.layer2(l1)))
        low, high = ours(x)
    torch.testing.assert_close(low, l1)
    torch.testing.assert_close(high, high_tv)


def test_pretrained_loading_into_cosegnet_grey_input_and_errors(tmp_path):
    net = tiny()
    source = {}
    for key, value in net.encoder.state_dict().items():  # write the file in torchvision names
        inverse = [k for k in _torchvision_names(net.encoder) if torchvision_to_drn_key(k) == key]
        assert len(inverse) == 1, key
        source[inverse[0]] = torch.randn_like(value.float()).to(value.dtype)
    source["conv1.weight"] = torch.randn(8, 3, 7, 7)  # an RGB stem
    source["fc.weight"] = torch.randn(10, 64)
    path = tmp_path / "drn.pth"
    torch.save(source, path)
    report = load_pretrained_drn(net, path)
    assert report["missing"] == 0 and report["skipped_head"] == 1
    torch.testing.assert_close(net.encoder.stem.conv.weight, source["conv1.weight"].mean(1, keepdim=True))
    torch.testing.assert_close(net.encoder.stages[3][2].conv2.conv.weight, source["layer4.2.conv2.weight"])
    torch.testing.assert_close(net.encoder.stages[0][0].skip.norm.running_var, source["layer1.0.downsample.1.running_var"])
    bigger = tiny(decoder_channels=16)
    bigger.encoder = DilatedResNet(1, {**TINY, "planes": [4, 8, 8, 32]})
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_drn(bigger, path)
    del source["layer2.0.conv1.weight"]
    torch.save(source, path)
    with pytest.raises(ValueError, match="missing"):
        load_pretrained_drn(tiny(), path)
    assert load_pretrained_drn(tiny(), path, strict=False)["missing_keys"] == ["stages.1.0.conv1.conv.weight"]
    with pytest.raises(FileNotFoundError):
        load_pretrained_drn(tiny(), tmp_path / "absent.pth")


def _torchvision_names(enc):
    names = [f"{p}.{leaf}" for p in ("conv1", "bn1") for leaf in ("weight", "bias", "running_mean",
                                                                  "running_var", "num_batches_tracked")]
    for s, stage in enumerate(enc.stages):
        for b, block in enumerate(stage):
            parts = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
            if not isinstance(block.skip, nn.Identity):
                parts += ["downsample.0", "downsample.1"]
            for part in parts:
                for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                    names.append(f"layer{s + 1}.{b}.{part}.{leaf}")
    return names


def test_network_state_dict_round_trip_through_a_file(tmp_path):
    net = eval_net("csa")
    path = tmp_path / "coseg.pth"
    torch.save(net.state_dict(), path)
    other = tiny("csa").eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other(x), net(x))


# ---------------------------------------------------------------- co-attention

@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_attention_output_shapes(attention):
    att = CoAttention(nn.Conv2d, 64, attention, norm_op=nn.BatchNorm2d, nonlin=nn.ReLU).eval()
    fa, fb = torch.randn(3, 64, 8, 12), torch.randn(3, 64, 8, 12)
    with torch.no_grad():
        ga, gb = att(fa, fb)
    width = 16 if attention == "danet" else 64
    assert att.output_channels == width
    assert ga.shape == gb.shape == (3, width, 8, 12)
    with pytest.raises(ValueError, match="equally shaped"):
        att(fa, fb[:, :, :4])


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_attention_module_is_symmetric(attention, fusion):
    torch.manual_seed(0)
    att = _randomise_norm_stats(_open_danet_gates(
        CoAttention(nn.Conv2d, 32, attention, fusion, norm_op=nn.BatchNorm2d, nonlin=nn.ReLU))).eval()
    fa, fb = torch.rand(2, 32, 8, 8), torch.rand(2, 32, 8, 8)
    with torch.no_grad():
        ga, gb = att(fa, fb)
        hb, ha = att(fb, fa)
    torch.testing.assert_close(ha, ga)
    torch.testing.assert_close(hb, gb)


def test_csa_by_hand_mean_and_cross_fusion():
    torch.manual_seed(0)
    fa, fb = torch.rand(1, 32, 4, 4), torch.rand(1, 32, 4, 4)
    mean = CoAttention(nn.Conv2d, 32, "csa", "mean").eval()
    cross = CoAttention(nn.Conv2d, 32, "csa", "cross").eval()
    cross.load_state_dict(mean.state_dict())
    with torch.no_grad():
        ca, cb = mean.channel(fa), mean.channel(fb)
        sa, sb = mean.spatial(fa), mean.spatial(fb)
        ga, gb = mean(fa, fb)
        xa, xb = cross(fa, fb)
    torch.testing.assert_close(ga, fa * (ca + cb) / 2 * sa)
    torch.testing.assert_close(gb, fb * (ca + cb) / 2 * sb)
    torch.testing.assert_close(xa, fa * cb * sa)
    torch.testing.assert_close(xb, fb * ca * sb)


def test_mean_spatial_attention_hand_values():
    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 1] = torch.tensor([1.0, 3.0])  # channel means 0 and 2: mean 1, std 1
    s = MeanSpatial(eps=0)(f)
    torch.testing.assert_close(s, torch.sigmoid(torch.tensor([[[[-1.0, 1.0]]]])))
    torch.testing.assert_close(MeanSpatial()(f * 100 + 7), s, atol=1e-6, rtol=0)  # scale-free


def test_eca_kernel_size_and_locality():
    assert [eca_kernel_size(c) for c in (64, 256, 512, 2048)] == [3, 5, 5, 7]
    eca = ECAChannel(64)
    assert eca.conv.kernel_size == (3,)
    f = torch.rand(1, 64, 4, 4)
    g = f.clone()
    g[:, 40] += 5  # changes the weights of channels 39..41 only (kernel 3)
    with torch.no_grad():
        changed = (eca(f) != eca(g)).flatten().nonzero().flatten().tolist()
    assert changed == [39, 40, 41]


# ---------------------------------------------------------------- CoSegNet pair contract

@pytest.mark.parametrize("decoder", ["d1", "d2"])
@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_pair_symmetry_and_interaction(attention, decoder):
    net = eval_net(attention, decoder)
    torch.manual_seed(1)
    a, b, b2 = (torch.randn(2, 1, 64, 64) for _ in range(3))
    with torch.no_grad():
        ya, yb = net.forward_pair(a, b)
        zb, za = net.forward_pair(b, a)
        ya2, _ = net.forward_pair(a, b2)
    assert ya.shape == yb.shape == (2, 2, 64, 64)
    torch.testing.assert_close(za, ya)
    torch.testing.assert_close(zb, yb)
    if attention == "none":
        torch.testing.assert_close(ya2, ya)  # plain Siamese: the partner does not matter
    else:
        assert (ya2 - ya).abs().max() > 1e-3 * ya.abs().max()  # the partner changes the prediction


def test_danet_pair_is_independent_while_gamma_is_zero():
    net = _randomise_norm_stats(tiny("danet")).eval()  # as initialised: gamma = 0
    a, b, b2 = (torch.randn(1, 1, 32, 32) for _ in range(3))
    with torch.no_grad():
        torch.testing.assert_close(net.forward_pair(a, b)[0], net.forward_pair(a, b2)[0])


@pytest.mark.parametrize("attention", ["csa", "danet"])
def test_interleaved_forward_equals_forward_pair(attention):
    net = eval_net(attention)
    a, b = torch.randn(3, 1, 32, 48), torch.randn(3, 1, 32, 48)
    x = torch.empty(6, 1, 32, 48)
    x[0::2], x[1::2] = a, b
    with torch.no_grad():
        y = net(x)
        ya, yb = net.forward_pair(a, b)
        single = [net.forward_pair(a[i:i + 1], b[i:i + 1]) for i in range(3)]
    assert y.shape == (6, 2, 32, 48)
    torch.testing.assert_close(y[0::2], ya)
    torch.testing.assert_close(y[1::2], yb)
    torch.testing.assert_close(torch.cat([s[0] for s in single]), ya, rtol=1e-4, atol=1e-5)  # pairs don't mix


def test_odd_batch_error_and_self_pair_mode():
    net = eval_net("csa")
    x = torch.randn(3, 1, 32, 32)
    with pytest.raises(ValueError, match="even batch"):
        net(x)
    net.self_pair_when_odd = True
    with torch.no_grad():
        y = net(x)
        pair = net.forward_pair(x[:1], x[1:2])
        self_pair = net.forward_pair(x[2:], x[2:])
    assert y.shape == (3, 2, 32, 32)
    torch.testing.assert_close(y[0:1], pair[0])
    torch.testing.assert_close(y[1:2], pair[1])
    torch.testing.assert_close(y[2:], self_pair[0])
    torch.testing.assert_close(self_pair[0], self_pair[1])


def test_rejects_bad_sizes_and_options():
    net = tiny()
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(2, 1, 64, 60))
    with pytest.raises(ValueError, match=r"\(2N, c, h, w\)"):
        net(torch.randn(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="equally shaped"):
        net.forward_pair(torch.randn(1, 1, 32, 32), torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown co-attention"):
        tiny("cbam")
    with pytest.raises(ValueError, match="unknown decoder"):
        tiny(decoder="d3")
    with pytest.raises(ValueError, match="channel_fusion"):
        tiny(channel_fusion="max")
    with pytest.raises(ValueError, match="strides"):
        tiny(strides=[[1, 1], [32, 32]])
    with pytest.raises(TypeError):
        tiny(dropout_op=None)  # unknown kwargs are rejected


@pytest.mark.parametrize("attention", ATTENTION_VARIANTS)
def test_every_parameter_gets_a_gradient(attention):
    torch.manual_seed(0)
    net = _open_danet_gates(tiny(attention, nonlin_kwargs={"inplace": True})).train()
    net.apply(net.initialize)
    _open_danet_gates(net)
    y = net(torch.randn(4, 1, 32, 32))
    (y * torch.randn_like(y)).mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert no_grad == [] and zero == []
    assert net.encoder.stem.conv.weight.grad.abs().sum() > 0


def test_decoder_variants_and_deep_supervision_flag():
    d1, d2 = tiny(decoder="d1"), tiny(decoder="d2", deep_supervision=True)
    assert not hasattr(d1.decoder, "d2") and hasattr(d2.decoder, "low_proj")
    assert d2.decoder.deep_supervision is True and d1.decoder.deep_supervision is False
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.is_tensor(d2.eval()(x))  # one tensor even with the flag on: no DS in the paper
    low_changed = torch.randn(2, 16, 8, 8)
    with torch.no_grad():  # D1 ignores the low-level feature, D2 uses it
        att = torch.randn(2, 64, 4, 4)
        low = torch.randn(2, 16, 8, 8)
        d1e, d2e = d1.decoder.eval(), d2.decoder.eval()
        torch.testing.assert_close(d1e(att, low, (32, 32)), d1e(att, low_changed, (32, 32)))
        assert (d2e(att, low, (32, 32)) - d2e(att, low_changed, (32, 32))).abs().max() > 1e-4


@pytest.mark.parametrize("attention,extra", [("none", 0), ("csa", 0), ("aspp", 0), ("eca", 64)])
def test_compute_conv_feature_map_size(attention, extra):
    net = tiny(attention, num_classes=3).eval()
    a = torch.randn(1, 1, 64, 96)
    net.self_pair_when_odd = True  # one image, paired with itself: hooks count both members
    per_image = conv_output_elements(net, a) // 2
    assert net.compute_conv_feature_map_size((64, 96)) == per_image + extra  # ECA's Conv1d is not hooked
    sizes = [net.compute_conv_feature_map_size((s, s)) for s in (64, 96, 128)]
    assert 0 < sizes[0] < sizes[1] < sizes[2]


def test_arch_kwargs_json_plans_round_trip_and_nnunet_scales():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    kwargs, req = coseg_arch_kwargs(TINY, "eca_aspp", "d1", decoder_channels=16, low_level_channels=8)
    assert json.loads(json.dumps(kwargs)) == kwargs and req == ["conv_op", "norm_op", "nonlin"]
    assert pydoc.locate(NETWORK_CLASS_NAME) is CoSegNet
    assert pydoc.locate(kwargs["norm_op"]) is nn.BatchNorm2d and kwargs["multi_grid"] == [2, 4, 8]
    kwargs, req = json.loads(json.dumps(kwargs)), json.loads(json.dumps(req))  # as read from plans.json
    nets = {ds: get_network_from_plans(NETWORK_CLASS_NAME, kwargs, req, 1, 2, allow_init=True,
                                       deep_supervision=ds) for ds in (True, False)}
    direct = CoSegNet(1, 2, TINY, "eca_aspp", "d1", decoder_channels=16, low_level_channels=8)
    assert list(nets[True].state_dict()) == list(nets[False].state_dict()) == list(direct.state_dict())
    assert nets[True].encoder.stem.nonlin.inplace
    with torch.no_grad():
        assert nets[False].eval()(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    cm = ConfigurationManager({"architecture": {"network_class_name": NETWORK_CLASS_NAME,
                                                "arch_kwargs": kwargs, "_kw_requires_import": req}})
    scales = nnUNetTrainer._get_deep_supervision_scales(
        SimpleNamespace(enable_deep_supervision=True, configuration_manager=cm))
    assert np.allclose(scales, [[1, 1]])
    named, _ = coseg_arch_kwargs()
    assert named["depth"] == "resnet26" and named["attention"] == "csa" and named["decoder"] == "d2"


def test_initialize_is_nnunet_he_init():
    net = tiny("danet")
    assert isinstance(CoSegNet.__dict__["initialize"], staticmethod)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.constant_(m.bias, 1.0)
    net.apply(net.initialize)
    conv = net.encoder.stages[3][0].conv2.conv
    assert conv.weight.std().item() == pytest.approx((2 / (1 + 1e-4) / conv.weight[0].numel()) ** 0.5, rel=0.25)
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    assert net.attention.dual.pam.gamma.item() == 0 and net.attention.dual.cam.gamma.item() == 0
