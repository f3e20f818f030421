"""Dual attention (DA, Fu et al. CVPR 2019) and scale attention (SA, AHRNet Fig. 2).

AHRNet Sec. 2.1 uses DA "to model the global contextual information in F_i" and SA "to
effectively combine the multi-scale features by treating them input-specifically with
learnable scale attention vectors", built from "two branches ... similar to SE block".
The paper gives no further detail; the wiring chosen here is stated per class.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.blocks import ConvNormAct


class PositionAttention(nn.Module):
    """DANet position attention module (PAM), Fu et al. Sec. 3.2, Eq. 1-2.

    ``B, C = 1x1 convs to in/reduction channels`` (query, key; the key conv has no bias,
    which the softmax would cancel), ``D = 1x1 conv`` (value, full width); ``S = softmax_j(B_i . C_j)`` over all positions (no 1/sqrt(d) scaling, as in
    DANet); ``out = gamma * (D S^T) + x`` with ``gamma`` a learnable scalar initialised to 0.
    Computed with ``F.scaled_dot_product_attention(scale=1)``, which is numerically the
    same product but, on GPU, can use fused kernels that never store the N x N map.
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int, reduction: int = 8):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.channels, self.inner = channels, inner
        self.query = conv_op(channels, inner, 1)
        self.key = conv_op(channels, inner, 1, bias=False)  # a key bias only shifts each row of
        # the energy by a constant (q_i . b), which the softmax removes: it would never get a gradient
        self.value = conv_op(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # b, 1, N, inner
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # b, 1, N, c
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # b, 1, N, c
        out = out.squeeze(1).transpose(1, 2).reshape(x.shape)
        return self.gamma * out + x

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        n = int(np.prod(input_size, dtype=np.int64))
        return np.int64((2 * self.inner + self.channels) * n + n * n)  # q, k, v + attention map


class ChannelAttention(nn.Module):
    """DANet channel attention module (CAM), Fu et al. Sec. 3.3, Eq. 3-4.

    ``X = softmax_j(A_i . A_j)`` over channels of the reshaped input ``A`` (C x N),
    ``out = gamma * (X A) + x``, ``gamma`` initialised to 0. We follow the paper's Eq. 3;
    the DANet code's ``max(energy) - energy`` before the softmax (which amounts to
    ``softmax(-energy)``) is not reproduced. The C x C energy sums over all positions, so it
    is computed in float32 even under autocast (fp16 would overflow on large maps).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.flatten(2)  # b, C, N
        with torch.autocast(device_type=x.device.type, enabled=False):
            a32 = a.float()
            attn = torch.softmax(torch.bmm(a32, a32.transpose(1, 2)), dim=-1)
            out = torch.bmm(attn, a32).to(x.dtype)
        return self.gamma * out.reshape(x.shape) + x

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        return np.int64(self.channels * self.channels)  # the attention map; no convs


class DualAttention(nn.Module):
    """DANet head without its classifiers: PAM and CAM branches summed (Fu et al. Fig. 2).

    Each branch: 3x3 conv-norm-act ``in -> inter`` (``inter = in // 4`` as in DANet), the
    attention module, 3x3 conv-norm-act ``inter -> inter``; the output is the element-wise
    sum of both branches (``inter`` channels). DANet's per-branch auxiliary classifiers are
    not built (AHRNet's outputs come from its decoder).
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, inter_channels: int | None = None,
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None, pam_reduction: int = 8):
        super().__init__()
        inter = int(inter_channels) if inter_channels else max(input_channels // 4, 1)
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.input_channels, self.output_channels = input_channels, inter
        self.pam_in = ConvNormAct(conv_op, input_channels, inter, 3, 1, **ops)
        self.pam = PositionAttention(conv_op, inter, pam_reduction)
        self.pam_out = ConvNormAct(conv_op, inter, inter, 3, 1, **ops)
        self.cam_in = ConvNormAct(conv_op, input_channels, inter, 3, 1, **ops)
        self.cam = ChannelAttention(inter)
        self.cam_out = ConvNormAct(conv_op, inter, inter, 3, 1, **ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pam_out(self.pam(self.pam_in(x))) + self.cam_out(self.cam(self.cam_in(x)))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        total = np.int64(0)
        for m in (self.pam_in, self.pam, self.pam_out, self.cam_in, self.cam, self.cam_out):
            total += m.compute_conv_feature_map_size(input_size)
        return total


class ScaleAttention(nn.Module):
    """Scale attention (AHRNet Fig. 2): two SE-style branches weight the features F_k.

    Our wiring (the paper only says "two branches ... similar to SE block" producing
    input-specific scale attention vectors):

    * descriptor ``d``: global average pool of every ``F_k``, concatenated (sum C_k values);
    * branch 1 (channel vector): ``1x1 conv d -> h, nonlin, 1x1 conv h -> sum C_k, sigmoid``,
      one weight per channel of every scale (SE on the stacked multi-scale features);
    * branch 2 (scale vector): ``1x1 conv d -> h, nonlin, 1x1 conv h -> K, softmax over the
      K scales``, one weight per scale;
    * output ``F_k' = F_k * w_k * (K * s_k)``: the factor ``K`` makes a uniform scale
      softmax leave the features at the branch-1 scale (``K * 1/K = 1``).

    ``h = max(sum C_k // reduction, 4)`` (SE's reduction 16). The weights are constant
    over space, so weighting before or after upsampling to 1/4 is the same; we weight
    first (cheaper). Both branches see the same pooled descriptor (scale-aware context).
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: Sequence[int], reduction: int = 16,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None):
        super().__init__()
        self.channels = [int(c) for c in channels]
        total = sum(self.channels)
        hidden = max(total // reduction, 4)
        self.hidden = hidden
        act = (lambda: nonlin(**(nonlin_kwargs or {}))) if nonlin is not None else nn.Identity
        self.channel_branch = nn.Sequential(conv_op(total, hidden, 1), act(), conv_op(hidden, total, 1))
        self.scale_branch = nn.Sequential(conv_op(total, hidden, 1), act(), conv_op(hidden, len(self.channels), 1))

    def attention(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel weights (b, sum C_k, 1, 1) in (0, 1) and scale weights (b, K, 1, 1) summing to 1."""
        d = torch.cat([F.adaptive_avg_pool2d(f, 1) for f in feats], dim=1)
        return torch.sigmoid(self.channel_branch(d)), torch.softmax(self.scale_branch(d), dim=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} scales, got {len(feats)}")
        w, s = self.attention(feats)
        k = len(feats)
        w = torch.split(w, self.channels, dim=1)
        return [f * wk * (k * s[:, i:i + 1]) for i, (f, wk) in enumerate(zip(feats, w))]

    def compute_conv_feature_map_size(self, input_size=None) -> np.int64:
        return np.int64(2 * self.hidden + sum(self.channels) + len(self.channels))  # 1x1 spatial convs
