"""Dual attention (position + channel) and scale attention (networks/attention.py)."""
import pytest
import torch
from torch import nn

from nnunet_ulseg.networks.attention import ChannelAttention, DualAttention, PositionAttention, ScaleAttention
from nnunet_ulseg.networks.heads import BaselineHead, DEDecoder, MultiScaleFusion


def test_position_attention_matches_danet_formula():
    torch.manual_seed(0)
    pam = PositionAttention(nn.Conv2d, 16, reduction=8)
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(pam(x), x)  # gamma starts at 0
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    b, c, n = 2, 16, 30
    q = pam.query(x).view(b, -1, n).permute(0, 2, 1)  # b, N, c'
    k = pam.key(x).view(b, -1, n)  # b, c', N
    attn = torch.softmax(torch.bmm(q, k), dim=-1)  # b, N, N; no scaling
    v = pam.value(x).view(b, c, n)
    ref = 0.7 * torch.bmm(v, attn.permute(0, 2, 1)).view_as(x) + x
    torch.testing.assert_close(pam(x), ref)
    assert pam.query.out_channels == 2 and pam.value.out_channels == 16


def test_channel_attention_matches_paper_formula_and_autocast():
    torch.manual_seed(0)
    cam = ChannelAttention(8)
    x = torch.randn(2, 8, 4, 4) * 0.3
    torch.testing.assert_close(cam(x), x)
    with torch.no_grad():
        cam.gamma.fill_(0.5)
    a = x.view(2, 8, -1)
    attn = torch.softmax(torch.bmm(a, a.transpose(1, 2)), dim=-1)  # Eq. 3 of Fu et al.
    torch.testing.assert_close(cam(x), 0.5 * torch.bmm(attn, a).view_as(x) + x)
    big = torch.full((1, 4, 64, 64), 30.0)  # energy 3.7e6 overflows fp16 (inf -> NaN softmax)
    with torch.autocast("cpu", dtype=torch.float16):
        out = ChannelAttention(4)(big)
    assert torch.isfinite(out).all()


def test_dual_attention_sums_both_branches():
    da = DualAttention(nn.Conv2d, 32, norm_op=nn.BatchNorm2d, nonlin=nn.ReLU).eval()
    assert da.output_channels == 8 and da.pam.channels == 8 and da.cam.channels == 8
    x = torch.randn(1, 32, 8, 8)
    y = da(x)
    assert y.shape == (1, 8, 8, 8)
    with torch.no_grad():
        ref = da.pam_out(da.pam(da.pam_in(x))) + da.cam_out(da.cam(da.cam_in(x)))
        torch.testing.assert_close(y, ref)
        for p in da.cam_out.parameters():
            p.zero_()
        torch.testing.assert_close(da(x), da.pam_out(da.pam(da.pam_in(x))))
    n = 64
    convs = 4 * 8 * n + (2 * 1 + 8) * n  # four 3x3 convs + q, k, v
    assert da.compute_conv_feature_map_size((8, 8)) == convs + n * n + 8 * 8


def test_scale_attention_weights_and_wiring():
    torch.manual_seed(0)
    chans = [4, 8, 16, 32]
    sa = ScaleAttention(nn.Conv2d, chans, reduction=16)
    assert sa.hidden == 4 and sa.scale_branch[-1].out_channels == 4 and sa.channel_branch[-1].out_channels == 60
    feats = [torch.randn(2, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate(chans)]
    w, s = sa.attention(feats)
    assert w.shape == (2, 60, 1, 1) and s.shape == (2, 4, 1, 1)
    assert ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(s.sum(1), torch.ones(2, 1, 1))
    assert not torch.allclose(s[0], s[1])  # input-specific
    out = sa(feats)
    start = 0
    for i, (f, o) in enumerate(zip(feats, out)):
        wk = w[:, start:start + chans[i]]
        torch.testing.assert_close(o, f * wk * 4 * s[:, i:i + 1])
        start += chans[i]
    with torch.no_grad():  # uniform scale softmax -> only the channel (SE) weights remain
        sa.scale_branch[-1].weight.zero_()
        sa.scale_branch[-1].bias.zero_()
    out = sa(feats)
    torch.testing.assert_close(out[2], feats[2] * w[:, 12:28])
    with pytest.raises(ValueError, match="4 scales"):
        sa(feats[:3])


def test_fusion_upsamples_and_concatenates():
    fusion = MultiScaleFusion(nn.Conv2d, [2, 3])
    a, b = torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4)
    y = fusion([a, b])
    assert y.shape == (1, 5, 8, 8) and fusion.scale_attention is None
    torch.testing.assert_close(y[:, :2], a)
    torch.testing.assert_close(y[:, 2:], nn.functional.interpolate(b, size=(8, 8), mode="bilinear"))
    assert isinstance(MultiScaleFusion(nn.Conv2d, [2, 3], scale_attention=True).scale_attention, ScaleAttention)


def test_heads_outputs_and_prediction_feedback():
    head = BaselineHead(nn.Conv2d, 6, 3)
    x = torch.randn(1, 6, 8, 8)
    assert head(x).shape == (1, 3, 32, 32)
    head.deep_supervision = True
    out = head(x)
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (1, 3, 32, 32)
    de = DEDecoder(nn.Conv2d, 6, 3, 32, norm_op=nn.BatchNorm2d, nonlin=nn.ReLU, deep_supervision=True)
    assert all(u.conv.kernel_size == (4, 4) and u.conv.stride == (2, 2) and u.conv.out_channels == 32
               for u in de.upconvs)
    assert all(u.conv.in_channels == 32 + 3 for u in de.upconvs)  # features + previous prediction
    assert all(s.conv.kernel_size == (3, 3) and s.conv.out_channels == 32 for s in de.stages)
    outs = de(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 32, 32), (1, 3, 16, 16), (1, 3, 8, 8)]
    # p1 feeds the first deconvolution: changing its bias changes p3
    de.eval()
    de.deep_supervision = False
    before = de(x)
    with torch.no_grad():
        de.seg_layers[0].bias.add_(1.0)
    assert not torch.allclose(before, de(x))
