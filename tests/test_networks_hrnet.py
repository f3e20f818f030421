"""HRNet building blocks, configs, backbone and pretrained-weight loading (networks/)."""
import copy

import pytest
import torch
from torch import nn

from nnunet_ulseg.networks.ahrnet import AHRNet
from nnunet_ulseg.networks.blocks import BasicBlock, BlockSequence, Bottleneck, ConvNormAct, conv_dim
from nnunet_ulseg.networks.configs import HRNET_CONFIGS, resolve_hrnet_config
from nnunet_ulseg.networks.hrnet import HighResolutionModule, HRNetBackbone, make_stage, make_transition
from nnunet_ulseg.networks.pretrained import load_pretrained_hrnet, timm_to_backbone_key
from network_helpers import conv_output_elements

timm = pytest.importorskip("timm")

TINY = {"stem_channels": 8, "stages": [
    {"block": "bottleneck", "num_modules": 1, "num_blocks": [1], "num_channels": [4]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1], "num_channels": [4, 8]},
    {"block": "basic", "num_modules": 2, "num_blocks": [1, 1, 1], "num_channels": [4, 8, 16]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1, 1, 1], "num_channels": [4, 8, 16, 32]},
]}
OPS = dict(norm_op=nn.BatchNorm2d, norm_op_kwargs={"eps": 1e-5}, nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})



# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("name", ["w18", "w32", "w48"])
def test_named_configs_match_the_published_hrnet(name):
    from timm.models.hrnet import cfg_cls
    ref = cfg_cls[f"hrnet_{name}"]
    ours = resolve_hrnet_config(name)
    assert ours["stem_channels"] == ref["stem_width"]
    for s, stage in enumerate(ours["stages"]):
        r = ref[f"stage{s + 1}"]
        assert stage["block"].upper() == r["block_type"]
        assert stage["num_modules"] == r["num_modules"]
        assert tuple(stage["num_blocks"]) == tuple(r["num_blocks"])
        assert tuple(stage["num_channels"]) == tuple(r["num_channels"])
        assert len(stage["num_channels"]) == r["num_branches"]


def test_resolve_config_copies_and_validates():
    cfg = copy.deepcopy(TINY)
    out = resolve_hrnet_config(cfg)
    out["stages"][1]["num_channels"][0] = 99
    assert cfg == TINY  # the caller's dict is untouched
    resolve_hrnet_config("w32")["stages"][1]["num_channels"][0] = 99
    assert HRNET_CONFIGS["w32"]["stages"][1]["num_channels"][0] == 32
    with pytest.raises(ValueError, match="unknown HRNet config"):
        resolve_hrnet_config("w64")
    with pytest.raises(ValueError, match="unknown"):
        resolve_hrnet_config({**TINY, "fuse_method": "SUM"})
    bad = copy.deepcopy(TINY)
    bad["stages"][2]["num_channels"] = [4, 8]
    bad["stages"][2]["num_blocks"] = [1, 1]
    with pytest.raises(ValueError, match="must have 3 branches"):
        resolve_hrnet_config(bad)
    bad = copy.deepcopy(TINY)
    bad["stages"][1]["num_blocks"] = [1]
    with pytest.raises(ValueError, match="one entry per branch"):
        resolve_hrnet_config(bad)
    bad = copy.deepcopy(TINY)
    bad["stages"][1]["block"] = "dense"
    with pytest.raises(ValueError, match="block must be"):
        resolve_hrnet_config(bad)


# ---------------------------------------------------------------- blocks

def test_conv_norm_act_and_sizes():
    assert conv_dim(nn.Conv2d) == 2 and conv_dim(nn.Conv3d) == 3
    c = ConvNormAct(nn.Conv2d, 3, 5, 3, 2, **OPS)
    assert isinstance(c.norm, nn.BatchNorm2d) and isinstance(c.nonlin, nn.ReLU) and c.conv.bias is None
    y = c(torch.randn(1, 3, 16, 12))
    assert y.shape == (1, 5, 8, 6) and (y >= 0).all()
    assert c.compute_conv_feature_map_size((16, 12)) == y.numel()
    bare = ConvNormAct(nn.Conv2d, 3, 5, 1)
    assert isinstance(bare.norm, nn.Identity) and isinstance(bare.nonlin, nn.Identity)
    assert (bare(-torch.ones(1, 3, 4, 4) * 100) < 0).any()  # no activation


def test_basic_block_residual_wiring():
    blk = BasicBlock(nn.Conv2d, 4, 4, 1, **OPS).eval()
    assert isinstance(blk.skip, nn.Identity)
    for conv in (blk.conv1.conv, blk.conv2.conv):
        nn.init.zeros_(conv.weight)
    x = torch.randn(2, 4, 8, 8)
    # residual branch is zero (BN in eval with zero mean, beta 0) -> relu(x)
    torch.testing.assert_close(blk(x), torch.relu(x))
    down = BasicBlock(nn.Conv2d, 4, 6, 2, **OPS)
    assert isinstance(down.skip, ConvNormAct) and down.skip.conv.stride == (2, 2)
    assert down(x).shape == (2, 6, 4, 4)


def test_bottleneck_expansion_and_stride_on_3x3():
    blk = Bottleneck(nn.Conv2d, 8, 4, 2, **OPS)
    assert blk.output_channels == 16 and blk.conv3.conv.out_channels == 16
    assert blk.conv1.conv.stride == (1, 1) and blk.conv2.conv.stride == (2, 2)
    assert blk.conv2.conv.kernel_size == (3, 3) and blk.conv1.conv.kernel_size == (1, 1)
    x = torch.randn(1, 8, 8, 8)
    assert blk(x).shape == (1, 16, 4, 4)
    assert blk.compute_conv_feature_map_size((8, 8)) == conv_output_elements(blk, x)
    seq = BlockSequence(Bottleneck, 3, nn.Conv2d, 8, 4, 1, **OPS)
    assert seq.output_channels == 16 and isinstance(seq[1].skip, nn.Identity)
    assert seq.compute_conv_feature_map_size((8, 8)) == conv_output_elements(seq, x)
    with pytest.raises(ValueError, match="num_blocks"):
        BlockSequence(Bottleneck, 0, nn.Conv2d, 8, 4)


# ---------------------------------------------------------------- HRNet module / transitions

def test_high_resolution_module_fusion_paths_and_no_mutation():
    chans = [4, 8, 16]
    m = HighResolutionModule(nn.Conv2d, chans, [4, 8, 16], [1, 1, 1], "basic", **OPS)
    assert chans == [4, 8, 16]
    assert isinstance(m.fuse[1][1], nn.Identity)
    assert isinstance(m.fuse[0][2], ConvNormAct) and m.fuse[0][2].conv.kernel_size == (1, 1)
    down = m.fuse[2][0]  # 1/4 -> 1/16: two stride-2 3x3 convs, ReLU only between them
    assert len(down) == 2 and all(s.conv.stride == (2, 2) for s in down)
    assert isinstance(down[0].nonlin, nn.ReLU) and isinstance(down[1].nonlin, nn.Identity)
    assert down[0].conv.out_channels == 4 and down[1].conv.out_channels == 16
    xs = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate(chans)]
    ids = [id(t) for t in xs]
    out = m(xs)
    assert [id(t) for t in xs] == ids
    assert [tuple(o.shape) for o in out] == [(1, 4, 16, 16), (1, 8, 8, 8), (1, 16, 4, 4)]
    assert m.compute_conv_feature_map_size([(16, 16), (8, 8), (4, 4)]) == conv_output_elements(m, xs)


def test_high_resolution_module_sums_all_branches():
    m = HighResolutionModule(nn.Conv2d, [2, 2], [2, 2], [1, 1], "basic", nonlin=None)
    for br in m.branches:  # make branches identity: zero convs, no norm
        for p in br.parameters():
            nn.init.zeros_(p)
    nn.init.zeros_(m.fuse[1][0][0].conv.weight)
    w = torch.zeros(2, 2, 1, 1)
    w[0, 0] = w[1, 1] = 1.0
    m.fuse[0][1].conv.weight.data.copy_(w)
    hi, lo = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    out = m([hi, lo])
    torch.testing.assert_close(out[0], hi + nn.functional.interpolate(lo, size=(4, 4), mode="nearest"))
    torch.testing.assert_close(out[1], lo)


def test_transition_entries():
    t = make_transition(nn.Conv2d, [4, 8], [4, 6, 16], **OPS)
    assert isinstance(t[0], nn.Identity)
    assert t[1][0].conv.stride == (1, 1) and t[1][0].conv.out_channels == 6
    assert t[2][0].conv.stride == (2, 2) and t[2][0].conv.in_channels == 8 and t[2][0].conv.out_channels == 16
    two_new = make_transition(nn.Conv2d, [4], [4, 8, 16], **OPS)
    assert len(two_new[2]) == 2 and two_new[2][0].conv.out_channels == 4


def test_stage_chains_modules():
    stage = make_stage(nn.Conv2d, {"block": "basic", "num_modules": 3, "num_blocks": [1, 2],
                                   "num_channels": [4, 8]}, [4, 8], **OPS)
    assert len(stage) == 3 and stage.output_channels == [4, 8]
    assert len(stage[0].branches[1]) == 2


def test_backbone_outputs_sizes_and_feature_map_size():
    bb = HRNetBackbone(2, TINY, **OPS)
    assert bb.output_channels == [4, 8, 16, 32] and bb.output_strides == [4, 8, 16, 32]
    x = torch.randn(1, 2, 64, 96)
    feats = bb(x)
    assert [tuple(f.shape) for f in feats] == [(1, 4, 16, 24), (1, 8, 8, 12), (1, 16, 4, 6), (1, 32, 2, 3)]
    assert bb.compute_conv_feature_map_size((64, 96)) == conv_output_elements(bb, x)
    with pytest.raises(ValueError, match="2D only"):
        HRNetBackbone(1, TINY, conv_op=nn.Conv3d)
    with pytest.raises(ValueError, match="input_channels"):
        HRNetBackbone(0, TINY)


def test_backbone_existing_branch_width_change_uses_that_branch():
    cfg = copy.deepcopy(TINY)
    cfg["stages"][2]["num_channels"] = [6, 8, 16]
    cfg["stages"][3]["num_channels"] = [6, 8, 16, 32]
    bb = HRNetBackbone(1, cfg, **OPS)
    feats = bb(torch.randn(1, 1, 64, 64))
    assert tuple(feats[0].shape) == (1, 6, 16, 16)  # 1/4 branch stays at 1/4


def test_w18_backbone_matches_timm_parameter_count():
    ours = sum(p.numel() for p in HRNetBackbone(3, "w18").parameters())
    ref = timm.create_model("hrnet_w18", pretrained=False)
    head = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
    assert ours == sum(p.numel() for n, p in ref.named_parameters() if not n.startswith(head))


# ---------------------------------------------------------------- pretrained weights

@pytest.fixture(scope="module")
def timm_w18(tmp_path_factory):
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18", pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics so that copying them is checked
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("w") / "hrnet_w18.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_key_mapping_examples():
    assert timm_to_backbone_key("conv1.weight") == "stem.0.conv.weight"
    assert timm_to_backbone_key("bn2.running_var") == "stem.1.norm.running_var"
    assert timm_to_backbone_key("layer1.0.downsample.1.weight") == "stages.0.0.skip.norm.weight"
    assert timm_to_backbone_key("layer1.3.bn3.bias") == "stages.0.3.conv3.norm.bias"
    assert timm_to_backbone_key("transition1.0.0.weight") == "transitions.0.0.0.conv.weight"
    assert timm_to_backbone_key("transition2.2.0.1.bias") == "transitions.1.2.0.norm.bias"
    assert (timm_to_backbone_key("stage3.2.branches.1.3.conv2.weight")
            == "stages.2.2.branches.1.3.conv2.conv.weight")
    assert timm_to_backbone_key("stage4.0.fuse_layers.0.3.1.weight") == "stages.3.0.fuse.0.3.norm.weight"
    assert timm_to_backbone_key("stage4.0.fuse_layers.3.0.2.0.weight") == "stages.3.0.fuse.3.0.2.conv.weight"
    for head in ("classifier.weight", "final_layer.0.weight", "incre_modules.0.0.conv1.weight"):
        assert timm_to_backbone_key(head) is None


def test_load_timm_w18_into_ahrnet_exactly(timm_w18, tmp_path):
    ref, path = timm_w18
    src = ref.state_dict()
    for file in (path, tmp_path / "w18.safetensors"):
        if file.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in src.items()}, str(file))
        model = AHRNet(3, 2, "w18")
        model.apply(model.initialize)
        report = load_pretrained_hrnet(model, file)
        ours = model.encoder.state_dict()
        assert report["matched"] == len(ours) and report["missing"] == 0 and report["unexpected"] == 0
        assert report["skipped_head"] == sum(1 for k in src if timm_to_backbone_key(k) is None)
        for key, tensor in src.items():
            mapped = timm_to_backbone_key(key)
            if mapped is not None:
                assert torch.equal(ours[mapped], tensor), key
    # the loaded backbone computes exactly timm's multi-resolution features
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem = ref.act2(ref.bn2(ref.conv2(ref.act1(ref.bn1(ref.conv1(x))))))
        for a, b in zip(ref.stages(stem), model.encoder(x)):
            torch.testing.assert_close(a, b)


def test_load_adapts_first_conv_and_reports(timm_w18, tmp_path):
    ref, path = timm_w18
    rgb = ref.conv1.weight.detach()
    for c in (1, 2):
        bb = HRNetBackbone(c, "w18")
        load_pretrained_hrnet(bb, path)
        torch.testing.assert_close(bb.stem[0].conv.weight, rgb.mean(1, keepdim=True).repeat(1, c, 1, 1))
    inst = HRNetBackbone(1, "w18", norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": True})
    rep = load_pretrained_hrnet(inst, path)
    n_bn = sum(1 for m in ref.modules() if isinstance(m, nn.BatchNorm2d)) - sum(
        1 for n, m in ref.named_modules() if isinstance(m, nn.BatchNorm2d)
        and n.startswith(("incre_modules", "downsamp_modules", "final_layer")))
    assert rep["skipped_stats"] == 3 * n_bn and rep["missing"] == 0
    partial = {k: v for k, v in ref.state_dict().items() if not k.startswith("stage4.")}
    partial["extra.weight"] = torch.zeros(1)
    p2 = tmp_path / "partial.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in partial.items()}}, p2)
    with pytest.raises(ValueError, match="missing"):
        load_pretrained_hrnet(HRNetBackbone(3, "w18"), p2)
    rep = load_pretrained_hrnet(HRNetBackbone(3, "w18"), p2, strict=False)
    assert rep["missing"] > 0 and rep["unexpected"] == 1 and rep["unexpected_keys"] == ["extra.weight"]
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained_hrnet(HRNetBackbone(3, TINY), path)
    with pytest.raises(FileNotFoundError):
        load_pretrained_hrnet(HRNetBackbone(3, TINY), tmp_path / "nope.pth")
    with pytest.raises(TypeError):
        load_pretrained_hrnet(nn.Linear(1, 1), path)
