"""E²Net networks: Res2Net block and backbone, R2UNet, DCFF, E2Net (networks/res2net.py, r2unet.py,
dcff.py, e2net.py; E²Net Sec. 2, Fig. 2, Table 3)."""
import json
import pydoc
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_ulseg.networks.blocks import Bottleneck
from nnunet_ulseg.networks.dcff import DeepCrossFeatureFusion, ScaleRefinement
from nnunet_ulseg.networks.e2net import (E2NET_STRIDES, NETWORK_CLASS_NAME, TABLE3_ROWS, E2Net,
                                         e2net_arch_kwargs)
from nnunet_ulseg.networks.r2unet import NETWORK_CLASS_NAME as R2UNET_CLASS_NAME
from nnunet_ulseg.networks.r2unet import R2UNET_STRIDES, R2UNet, r2unet_arch_kwargs
from nnunet_ulseg.networks.res2net import (RES2NET_CONFIGS, Bottle2neck, Res2NetBackbone,
                                           load_pretrained_res2net, resolve_res2net_config)
from network_helpers import conv_output_elements

OPS = dict(norm_op=nn.BatchNorm2d, norm_op_kwargs={"eps": 1e-5, "momentum": 0.1, "affine": True},
           nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})
TINY = {"stem_channels": 8, "layers": [1, 2, 1, 1], "planes": [8, 8, 16, 16], "base_width": 26, "scale": 4}


def e2net(row="dist_dcff", **kw):
    return E2Net(kw.pop("input_channels", 1), kw.pop("num_classes", 2), kw.pop("backbone", TINY),
                 **TABLE3_ROWS[row], **kw)


# ---------------------------------------------------------------- Res2Net block and backbone

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("scale", [1, 2, 4, 6])
def test_bottle2neck_shapes_and_group_widths(stride, scale):
    block = Bottle2neck(nn.Conv2d, 24, 16, stride, base_width=26, scale=scale, **OPS)
    w = 16 * 26 // 64  # floor(planes * base_width / 64) = 6
    assert block.width == w and block.conv1.output_channels == w * scale
    assert len(block.convs) == max(1, scale - 1) and block.conv3.input_channels == w * scale
    assert block.is_stage and (block.pool is not None) == (scale > 1)  # width 24 -> 64 changes
    out = block(torch.randn(2, 24, 32, 32))
    assert out.shape == (2, 64, 32 // stride, 32 // stride)


def test_scale_one_is_a_plain_bottleneck():
    """scale = 1 with base width 64: exactly ResNet's bottleneck (same weights -> same output)."""
    torch.manual_seed(0)
    ours = Bottle2neck(nn.Conv2d, 32, 16, 2, base_width=64, scale=1, **OPS).eval()
    plain = Bottleneck(nn.Conv2d, 32, 16, 2, **OPS).eval()
    assert ours.width == 16 and len(ours.convs) == 1 and ours.pool is None
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in plain.parameters())
    for m in ours.modules():  # non-trivial norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5), m.weight.data.uniform_(0.5, 1.5)
    plain.load_state_dict({k.replace("convs.0.", "conv2."): v for k, v in ours.state_dict().items()})
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x))


def _group_extents(block, channels, size=15):
    """Side of the nonzero square in each group of conv3's input for a centred impulse (linear block)."""
    seen = {}
    block.conv3.register_forward_pre_hook(lambda _m, inp: seen.__setitem__("x", inp[0]))
    x = torch.zeros(1, channels, size, size)
    x[..., size // 2, size // 2] = 1.0
    with torch.no_grad():
        block(x)
    groups = torch.split(seen["x"][0], block.width, dim=0)
    return [int((g.abs().sum(0).sum(0) > 0).sum()) for g in groups]


def test_hierarchical_split_grows_the_receptive_field():
    """Res2Net Eq. 1: y_i = K_i(x_i + y_{i-1}) -> group i sees (2i+1)x(2i+1); the last group is x_s.
    A 'stage' block does not chain its groups and average-pools the last one."""
    torch.manual_seed(0)
    lin = dict(norm_op=None, nonlin=None)  # linear block: supports are exact
    normal = Bottle2neck(nn.Conv2d, 64, 16, 1, base_width=64, scale=4, **lin)
    assert not normal.is_stage
    assert _group_extents(normal, 64) == [3, 5, 7, 1]
    stage = Bottle2neck(nn.Conv2d, 32, 16, 1, base_width=64, scale=4, **lin)
    assert stage.is_stage and _group_extents(stage, 32) == [3, 3, 3, 3]


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_backbone_strides_and_channels(size):
    net = Res2NetBackbone(1, "res2net_lite", **OPS).eval()
    assert net.output_strides == [2, 4, 8, 16, 32] and net.output_channels == [32, 64, 128, 256, 512]
    with torch.no_grad():
        feats = net(torch.randn(2, 1, *size))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, size[0] // s, size[1] // s)
                                                 for c, s in zip(net.output_channels, net.output_strides)]
    x = torch.randn(1, 1, *size)
    assert net.compute_conv_feature_map_size(size) == conv_output_elements(net, x)


def test_configs_are_validated_and_not_mutated():
    assert RES2NET_CONFIGS["res2net50_26w_4s"] == {"stem_channels": 64, "layers": [3, 4, 6, 3],
                                                   "planes": [64, 128, 256, 512], "base_width": 26, "scale": 4}
    cfg = dict(TINY)
    resolved = resolve_res2net_config(cfg)
    resolved["layers"].append(9)
    assert cfg == TINY
    with pytest.raises(ValueError, match="unknown Res2Net config"):
        resolve_res2net_config("res2net101")
    with pytest.raises(ValueError, match="4 stages"):
        resolve_res2net_config({**TINY, "layers": [1, 1, 1]})
    with pytest.raises(ValueError, match="unknown"):
        resolve_res2net_config({**TINY, "depth": 50})


def test_res2net50_matches_timm_and_loads_its_checkpoint(tmp_path):
    """Our Res2Net-50 26w_4s with timm's weights gives timm's five feature maps exactly."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("res2net50_26w_4s", pretrained=False).eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.1, 0.1)
    path = tmp_path / "res2net50_26w_4s.pth"
    torch.save(ref.state_dict(), path)
    ours = Res2NetBackbone(3, "res2net50_26w_4s", **OPS).eval()
    report = load_pretrained_res2net(ours, path)
    assert report["missing"] == 0 and report["unexpected"] == 0 and report["skipped_head"] == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = ref.act1(ref.bn1(ref.conv1(x)))
        expected = [out]
        out = ref.maxpool(out)
        for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
            out = layer(out)
            expected.append(out)
        for a, b in zip(ours(x), expected):
            torch.testing.assert_close(a, b)
    # one-channel CT: the RGB kernel is averaged; both E2Net backbones get the weights
    net = E2Net(1, 2, "res2net50_26w_4s", edge_branch=True, dcff=False)
    report = load_pretrained_res2net(net, path)
    assert report["backbones"] == 2
    torch.testing.assert_close(net.seg_branch.encoder.stem.conv.weight, ref.conv1.weight.mean(1, keepdim=True))
    torch.testing.assert_close(net.edge_branch.encoder.stages[3][2].conv3.conv.weight, ref.layer4[2].conv3.weight)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_res2net(Res2NetBackbone(1, "res2net_lite"), path)
    with pytest.raises(FileNotFoundError):
        load_pretrained_res2net(net, tmp_path / "absent.pth")


# ---------------------------------------------------------------- R2UNet

def test_r2unet_outputs_and_decoder_features():
    net = R2UNet(1, 3, TINY, **OPS).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        feats = net.encode(x)
        logits, dec = net.decoder.decode(feats)
        assert [tuple(f.shape[1:]) for f in feats] == [(32, 64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
        assert [tuple(d.shape[1:]) for d in dec] == [(32, 64 // s, 96 // s) for s in (1, 2, 4, 8, 16, 32)]
        assert logits.shape == (2, 3, 64, 96)
        torch.testing.assert_close(net(x), logits)
        net.decoder.deep_supervision = True
        out = net(x)
    assert isinstance(out, list) and len(out) == 1
    torch.testing.assert_close(out[0], logits)
    assert net.compute_conv_feature_map_size((64, 96)) == conv_output_elements(net, x[:1])
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 64, 48))


def test_r2unet_plans_round_trip():
    """Stage 1's network from plans: one full-resolution output, [logits] with deep supervision."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs, req = r2unet_arch_kwargs(TINY, norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": True})
    kwargs, req = json.loads(json.dumps(kwargs)), json.loads(json.dumps(req))
    assert kwargs["strides"] == R2UNET_STRIDES and pydoc.locate(R2UNET_CLASS_NAME) is R2UNet
    nets = {ds: get_network_from_plans(R2UNET_CLASS_NAME, kwargs, req, 1, 2, allow_init=True,
                                       deep_supervision=ds) for ds in (True, False)}
    assert list(nets[True].state_dict()) == list(nets[False].state_dict())
    assert isinstance(nets[True].encoder.stem.norm, nn.InstanceNorm2d)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out = nets[True].eval()(x)
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="strides"):
        R2UNet(1, 2, TINY, strides=E2NET_STRIDES)


# ---------------------------------------------------------------- DCFF

def _pyramid(batch=2, channels=32, size=(64, 96), levels=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size[0] >> k, size[1] >> k, generator=g) for k in range(levels)]


@pytest.mark.parametrize("mode", ["concat", "multiply"])
def test_dcff_scale_refinement_shapes_at_every_scale(mode):
    feats_a, feats_b = _pyramid(seed=1), _pyramid(seed=2)
    for k in range(5):
        ref = ScaleRefinement(nn.Conv2d, 32, 5 - k, mode, **OPS).eval()
        assert len(ref.pair_convs) == 5 - k and len(ref.merge_convs) == 4 - k
        assert ref.pair_convs[0].input_channels == (64 if mode == "concat" else 32)
        with torch.no_grad():
            out = ref(feats_a[k], feats_b[k:])
        assert out.shape == feats_a[k].shape
    with pytest.raises(ValueError, match="source scales"):
        ScaleRefinement(nn.Conv2d, 32, 2, mode)(feats_a[0], feats_b[:3])
    with pytest.raises(ValueError, match="mode"):
        ScaleRefinement(nn.Conv2d, 32, 2, "add")


def test_dcff_shapes_sources_and_sizes():
    dcff = DeepCrossFeatureFusion(nn.Conv2d, 32, 5, **OPS).eval()
    seg, edge = _pyramid(seed=3), _pyramid(seed=4)
    with torch.no_grad():
        seg2, edge2 = dcff(seg, edge)
    assert [t.shape for t in seg2] == [t.shape for t in seg] and [t.shape for t in edge2] == [t.shape for t in edge]
    assert all(r.mode == "concat" for r in dcff.seg_refine) and all(r.mode == "multiply" for r in dcff.edge_refine)
    # each scale k reads only the other branch's scales >= k ("equal and larger scale features")
    k = 2
    for j in range(5):
        changed = list(edge)
        changed[j] = changed[j] + 1.0
        with torch.no_grad():
            seg3, _ = dcff(seg, changed)
        assert torch.equal(seg3[k], seg2[k]) == (j < k)
    # counted conv outputs equal the hooked ones
    total, hooks = [0], [m.register_forward_hook(lambda _m, _i, o: total.__setitem__(0, total[0] + o.numel()))
                         for m in dcff.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        dcff([t[:1] for t in seg], [t[:1] for t in edge])
    for h in hooks:
        h.remove()
    assert dcff.compute_conv_feature_map_size([t.shape[2:] for t in seg]) == total[0]


def test_dcff_multiply_with_zero_source_is_identity_concat_is_not():
    """Without norm/bias, multiplying by a zero source zeroes the refinement: F' = F. Concatenation
    still passes the target through the convs, so F' != F."""
    torch.manual_seed(0)
    lin = dict(norm_op=None, nonlin=nn.ReLU)
    target, zeros = torch.randn(1, 8, 32, 32), [torch.zeros(1, 8, 32 >> m, 32 >> m) for m in range(3)]
    mult = ScaleRefinement(nn.Conv2d, 8, 3, "multiply", **lin)
    cat = ScaleRefinement(nn.Conv2d, 8, 3, "concat", **lin)
    with torch.no_grad():
        assert torch.equal(mult(target, zeros), target)
        assert not torch.allclose(cat(target, zeros), target)


# ---------------------------------------------------------------- E2Net

@pytest.mark.parametrize("row", list(TABLE3_ROWS))
def test_e2net_outputs_for_every_table3_row(row):
    net = e2net(row, num_classes=3, deep_supervision=True).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        out = net(x)
        assert isinstance(out, tuple) and len(out) == 3
        s2, s1, e = out
        assert s2.shape == s1.shape == (2, 3, 64, 96)
        if row == "baseline":
            assert e is None and s2 is s1 and net.edge_branch is None and net.dcff is None
        else:
            assert e.shape == (2, 3, 64, 96) and not torch.equal(s2, s1)
            assert (net.dcff is not None) == row.endswith("dcff")
        net.decoder.deep_supervision = False  # nnU-Net's set_deep_supervision_enabled(False)
        single = net(x)
    assert torch.is_tensor(single)
    torch.testing.assert_close(single, s2)


def test_edge_and_dist_rows_build_the_same_network_and_rows_grow():
    assert TABLE3_ROWS["edge"] == TABLE3_ROWS["dist"] and TABLE3_ROWS["edge_dcff"] == TABLE3_ROWS["dist_dcff"]
    counts = {r: sum(p.numel() for p in e2net(r).parameters()) for r in ("baseline", "edge", "edge_dcff")}
    base, edge, full = e2net("baseline"), e2net("edge"), e2net("edge_dcff")
    branch = sum(p.numel() for p in base.seg_branch.parameters())
    assert counts["baseline"] == branch
    assert counts["edge"] == 2 * branch + sum(p.numel() for p in edge.decoder.parameters())
    assert counts["edge_dcff"] - counts["edge"] == sum(p.numel() for p in full.dcff.parameters()) > 0


@pytest.mark.parametrize("row", ["baseline", "edge", "dist_dcff"])
def test_deep_supervision_on_off_same_state_dict_and_s2(row):
    torch.manual_seed(0)
    on, off = e2net(row, deep_supervision=True), e2net(row, deep_supervision=False)
    assert list(on.state_dict()) == list(off.state_dict())
    off.load_state_dict(on.state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(off.eval()(x), on.eval()(x)[0])


def test_gradient_reaches_both_branches_in_the_full_model():
    torch.manual_seed(0)
    net = e2net("dist_dcff", deep_supervision=True).train()
    net.apply(net.initialize)
    s2, s1, e = net(torch.randn(2, 1, 64, 64))
    sum((o * torch.randn_like(o)).mean() for o in (s2, s1, e)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    # inference output s2 alone still trains both encoders (through DCFF and the fusion step)
    net.zero_grad(set_to_none=True)
    net.decoder.deep_supervision = False
    net(torch.randn(2, 1, 64, 64)).mean().backward()
    for branch in (net.seg_branch, net.edge_branch):
        assert branch.encoder.stem.conv.weight.grad.abs().sum() > 0
        assert branch.decoder.seg_layer.weight.grad is None  # s1/e heads are not on s2's path


def test_compute_conv_feature_map_size_counts_convs_and_grows():
    for row in ("baseline", "edge", "edge_dcff"):
        net = e2net(row).eval()
        x = torch.randn(1, 1, 64, 96)
        assert net.compute_conv_feature_map_size((64, 96)) == conv_output_elements(net, x)
        sizes = [net.compute_conv_feature_map_size((s, s)) for s in (64, 96, 128, 256)]
        assert 0 < sizes[0] < sizes[1] < sizes[2] < sizes[3]
    with pytest.raises(ValueError, match="2D"):
        net.compute_conv_feature_map_size((1, 64, 64))


def test_bad_inputs_and_arguments_raise():
    net = e2net("edge_dcff")
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 64, 80))
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        net(torch.randn(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="needs edge_branch"):
        E2Net(1, 2, TINY, edge_branch=False, dcff=True)
    with pytest.raises(ValueError, match="2D only"):
        E2Net(1, 2, TINY, conv_op=nn.Conv3d)
    with pytest.raises(ValueError, match="strides"):
        E2Net(1, 2, TINY, strides=[[1, 1], [32, 32]])
    with pytest.raises(ValueError, match="num_classes"):
        E2Net(1, 0, TINY)
    with pytest.raises(TypeError):
        E2Net(1, 2, TINY, dropout_op=None)  # unknown kwargs are rejected


def test_initialize_is_nnunet_he_init():
    net = e2net("edge_dcff")
    assert isinstance(E2Net.__dict__["initialize"], staticmethod)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.constant_(m.bias, 1.0)
    net.apply(net.initialize)
    conv = net.dcff.seg_refine[0].pair_convs[0].conv
    assert conv.weight.std().item() == pytest.approx((2 / (1 + 1e-4) / conv.weight[0].numel()) ** 0.5, rel=0.25)
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)


@pytest.mark.parametrize("row", ["baseline", "dist_dcff"])
def test_arch_kwargs_get_network_from_plans_and_ds_scales(row):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    kwargs, req = e2net_arch_kwargs(TINY, **TABLE3_ROWS[row])
    kwargs, req = json.loads(json.dumps(kwargs)), json.loads(json.dumps(req))  # as read from plans.json
    assert req == ["conv_op", "norm_op", "nonlin"] and pydoc.locate(NETWORK_CLASS_NAME) is E2Net
    assert pydoc.locate(kwargs["norm_op"]) is nn.BatchNorm2d and kwargs["strides"] == E2NET_STRIDES
    assert e2net_arch_kwargs("res2net50_26w_4s")[0]["backbone"] == "res2net50_26w_4s"
    nets = {ds: get_network_from_plans(NETWORK_CLASS_NAME, kwargs, req, 1, 2, allow_init=True,
                                       deep_supervision=ds) for ds in (True, False)}
    assert list(nets[True].state_dict()) == list(nets[False].state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert isinstance(nets[True].eval()(x), tuple) and torch.is_tensor(nets[False].eval()(x))
    assert nets[True].seg_branch.encoder.stem.nonlin.inplace
    cm = ConfigurationManager({"architecture": {"network_class_name": NETWORK_CLASS_NAME,
                                                "arch_kwargs": kwargs, "_kw_requires_import": req}})
    scales = nnUNetTrainer._get_deep_supervision_scales(
        SimpleNamespace(enable_deep_supervision=True, configuration_manager=cm))
    assert np.allclose(scales, [[1, 1]] * 3)  # one full-resolution target per (s2, s1, e)
    assert int(np.prod(np.array(kwargs["strides"]), axis=0)[0]) == 32
    with pytest.raises(ValueError, match="needs edge_branch"):
        e2net_arch_kwargs(TINY, edge_branch=False, dcff=True)
