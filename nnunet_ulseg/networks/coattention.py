"""Co-attention in the bottleneck of the co-segmentation network (co-seg paper Sec. 2.2-2.3).

The pair's high-level features ``f_a, f_b`` (stride 8, shared encoder) are attended jointly
and ``forward(f_a, f_b) -> (g_a, g_b)``. Variants (the paper's Tables 1 and 3, switch
``attention``):

* ``csa`` (default, "CA = SE, SA = MSA"): a Squeeze-and-Excitation vector per image [21] and a
  mean spatial attention map per image; Fig. 1: "we extract channel attention and spatial
  attention maps independently and apply them through element-wise multiplication",
  ``g = f * c * s``;
* ``eca``: the SE vector replaced by ECA [22] (1D conv over the pooled channels, adaptive
  kernel size), MSA kept;
* ``aspp``: SE kept, the spatial map from an ASPP [19] head ("SA = ASPP");
* ``eca_aspp``: ECA and ASPP (Table 3's "next-best ... ECA ... with the ASPP spatial attention");
* ``danet``: DANet's position and channel attention modules [23] ("CSA = DANet"), our
  :mod:`nnunet_ulseg.networks.attention` PAM/CAM run over the pair's joint positions;
* ``none``: identity, the plain Siamese baseline (the pair does not interact).

How the pair interacts (the paper: the channel module enhances shared information "by
preserving channels that contribute the most to both feature maps"; the spatial module
"captures spatial details"). Open choices, stated here once:

* channel attention is where the images meet. ``channel_fusion="mean"`` (default) applies
  the mean ``(c_a + c_b) / 2`` of both images' vectors to both (a channel must matter for the
  pair, as in the fused channel attention of Chen et al. [16]); ``"cross"`` applies ``c_b``
  to ``f_a`` and ``c_a`` to ``f_b`` (each image selects the other's channels, [16]'s CA);
* spatial attention is per image (the two lesions sit at unrelated positions). MSA is the
  channel mean at each position, standardised over the image's positions and squashed with
  a sigmoid, ``s = sigmoid((m - mean(m)) / (std(m) + eps))``: parameter-free as "calculate
  the mean value at each spatial location over all feature maps" says, and in (0, 1)
  whatever the feature scale (a raw sigmoid of non-negative ReLU features would sit >= 0.5);
* DANet: each image gets its own 3x3 conv-norm-act in/out (shared weights), PAM and CAM see
  the concatenation of both images' positions, so CAM's channel affinity sums over the pair
  and PAM lets each position attend to positions of both images.

Every variant is symmetric: swapping the inputs swaps the outputs (up to float rounding).
"""
from __future__ import annotations

import math
from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.attention import ChannelAttention, PositionAttention
from nnunet_ulseg.networks.blocks import ConvNormAct

#: attention switch -> (channel module, spatial module); ``danet``/``none`` are separate
_CHANNEL_SPATIAL = {"csa": ("se", "msa"), "eca": ("eca", "msa"), "aspp": ("se", "aspp"),
                    "eca_aspp": ("eca", "aspp")}
ATTENTION_VARIANTS = (*_CHANNEL_SPATIAL, "danet", "none")
CHANNEL_FUSIONS = ("mean", "cross")


class SEChannel(nn.Module):
    """SE channel vector [21]: GAP -> 1x1 conv C -> C/r -> nonlin -> 1x1 conv -> sigmoid, (N, C, 1, 1)."""

    def __init__(self, conv_op: Type[_ConvNd], channels: int, reduction: int = 16,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None):
        super().__init__()
        self.channels, self.hidden = channels, max(channels // reduction, 4)
        act = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()
        self.fc = nn.Sequential(conv_op(channels, self.hidden, 1), act, conv_op(self.hidden, channels, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(F.adaptive_avg_pool2d(f, 1)))

    def compute_conv_feature_map_size(self, input_size=None) -> np.int64:
        return np.int64(self.hidden + self.channels)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest above ``|log2(C) / gamma + b / gamma|``."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECAChannel(nn.Module):
    """ECA channel vector [22]: GAP, a 1D conv of size :func:`eca_kernel_size` across channels
    (no bias, zero padding), sigmoid; (N, C, 1, 1). The conv is ``nn.Conv1d`` whatever the
    image dimensionality: it runs along the channel axis."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels, self.kernel_size = channels, eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(f, 1).flatten(1).unsqueeze(1)  # N, 1, C
        return torch.sigmoid(self.conv(y)).reshape(f.shape[0], -1, 1, 1)

    def compute_conv_feature_map_size(self, input_size=None) -> np.int64:
        return np.int64(self.channels)


class MeanSpatial(nn.Module):
    """MSA: sigmoid of the standardised channel mean, (N, 1, H, W); no parameters (see module doc)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = f.mean(dim=1, keepdim=True)
        mu = m.mean(dim=(2, 3), keepdim=True)
        sd = m.std(dim=(2, 3), keepdim=True, unbiased=False)
        return torch.sigmoid((m - mu) / (sd + self.eps))

    def compute_conv_feature_map_size(self, input_size=None) -> np.int64:
        return np.int64(0)


class ASPPSpatial(nn.Module):
    """ASPP spatial attention (SA = ASPP): DeepLabv3's ASPP [19] reduced to one sigmoid map.

    Branches (``inner`` channels each): a 1x1 conv-norm-act, one 3x3 conv-norm-act per rate in
    ``rates`` and an image-pooling branch (GAP, 1x1 conv + nonlin, broadcast; no norm, which a
    1x1 map of batch 1 could not train); concatenated, a 1x1 conv-norm-act to ``inner``, a 1x1
    conv to one channel, sigmoid -> (N, 1, H, W). Default rates ``(3, 6, 9)``: DeepLabv3's
    (12, 24, 36) for 65x65 maps at output stride 8 scaled to the 16x16 maps of 128-pixel crops.
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int, inner: int | None = None,
                 rates: Sequence[int] = (3, 6, 9), norm_op=None, norm_op_kwargs=None, nonlin=None,
                 nonlin_kwargs=None):
        super().__init__()
        inner = int(inner) if inner else min(256, max(channels // 8, 16))
        self.channels, self.inner, self.rates = channels, inner, [int(r) for r in rates]
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.branches = nn.ModuleList([ConvNormAct(conv_op, channels, inner, 1, 1, **ops)])
        for r in self.rates:
            branch = ConvNormAct(conv_op, channels, inner, 3, 1, **ops)
            branch.conv = conv_op(channels, inner, 3, 1, padding=r, dilation=r, bias=False)
            self.branches.append(branch)
        self.pool_conv = ConvNormAct(conv_op, channels, inner, 1, 1, conv_bias=True, nonlin=nonlin,
                                     nonlin_kwargs=nonlin_kwargs)
        self.project = ConvNormAct(conv_op, inner * (len(self.rates) + 2), inner, 1, 1, **ops)
        self.out = conv_op(inner, 1, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_conv(F.adaptive_avg_pool2d(f, 1)).expand(-1, -1, *f.shape[2:])
        feats = [b(f) for b in self.branches] + [pooled]
        return torch.sigmoid(self.out(self.project(torch.cat(feats, dim=1))))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        n = int(np.prod(input_size, dtype=np.int64))
        return np.int64(self.inner * n * (len(self.branches) + 1) + self.inner + n)


class PairDualAttention(nn.Module):
    """CSA = DANet for a pair: per-image 3x3 conv-norm-act in (``inter = C // 4`` as DANet),
    :class:`PositionAttention` and :class:`ChannelAttention` on the pair's joint positions
    (the two maps side by side along the width: both modules use only 1x1 convs and
    all-position sums, so nothing leaks across the seam and the order does not matter),
    per-image 3x3 conv-norm-act out, branches summed (``inter`` channels)."""

    def __init__(self, conv_op: Type[_ConvNd], channels: int, norm_op=None, norm_op_kwargs=None,
                 nonlin=None, nonlin_kwargs=None, pam_reduction: int = 8):
        super().__init__()
        inter = max(channels // 4, 1)
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.input_channels, self.output_channels = channels, inter
        self.pam_in = ConvNormAct(conv_op, channels, inter, 3, 1, **ops)
        self.pam = PositionAttention(conv_op, inter, pam_reduction)
        self.pam_out = ConvNormAct(conv_op, inter, inter, 3, 1, **ops)
        self.cam_in = ConvNormAct(conv_op, channels, inter, 3, 1, **ops)
        self.cam = ChannelAttention(inter)
        self.cam_out = ConvNormAct(conv_op, inter, inter, 3, 1, **ops)

    @staticmethod
    def _joint(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``x`` holds a's then b's features along the batch; run ``module`` on [a | b] side by side."""
        a, b = x.chunk(2, dim=0)
        ya, yb = module(torch.cat([a, b], dim=-1)).split(a.shape[-1], dim=-1)
        return torch.cat([ya, yb], dim=0)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([fa, fb], dim=0)
        y = (self.pam_out(self._joint(self.pam, self.pam_in(x)))
             + self.cam_out(self._joint(self.cam, self.cam_in(x))))
        return y.chunk(2, dim=0)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Per image: its convs, its share of the q/k/v maps, half the joint (2n)^2 PAM map, the CAM map."""
        n = int(np.prod(input_size, dtype=np.int64))
        convs = sum(m.compute_conv_feature_map_size(input_size)
                    for m in (self.pam_in, self.pam_out, self.cam_in, self.cam_out))
        qkv = (2 * self.pam.inner + self.pam.channels) * n
        return np.int64(convs + qkv + 2 * n * n + self.output_channels ** 2)


class CoAttention(nn.Module):
    """The pair's bottleneck attention; ``forward(f_a, f_b) -> (g_a, g_b)``; see the module doc.

    :param attention: one of :data:`ATTENTION_VARIANTS`.
    :param channel_fusion: ``"mean"`` or ``"cross"`` (channel-spatial variants only).
    :param reduction: SE reduction (16, as SENet).
    :param aspp_rates: ASPP dilation rates (``aspp`` variants).

    ``output_channels`` is the attended width (``channels``; ``channels // 4`` for ``danet``).
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int, attention: str = "csa",
                 channel_fusion: str = "mean", reduction: int = 16, aspp_rates: Sequence[int] = (3, 6, 9),
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None):
        super().__init__()
        if attention not in ATTENTION_VARIANTS:
            raise ValueError(f"unknown co-attention {attention!r}; choose one of {list(ATTENTION_VARIANTS)}")
        if channel_fusion not in CHANNEL_FUSIONS:
            raise ValueError(f"unknown channel_fusion {channel_fusion!r}; choose one of {list(CHANNEL_FUSIONS)}")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.attention, self.channel_fusion = attention, channel_fusion
        self.input_channels = self.output_channels = int(channels)
        self.channel = self.spatial = self.dual = None
        if attention == "danet":
            self.dual = PairDualAttention(conv_op, channels, **ops)
            self.output_channels = self.dual.output_channels
        elif attention in _CHANNEL_SPATIAL:
            ca, sa = _CHANNEL_SPATIAL[attention]
            self.channel = (SEChannel(conv_op, channels, reduction, nonlin, nonlin_kwargs) if ca == "se"
                            else ECAChannel(channels))
            self.spatial = MeanSpatial() if sa == "msa" else ASPPSpatial(conv_op, channels, rates=aspp_rates, **ops)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fa.shape != fb.shape:
            raise ValueError(f"co-attention needs equally shaped pair features, got {tuple(fa.shape)} "
                             f"and {tuple(fb.shape)}")
        if self.dual is not None:
            return self.dual(fa, fb)
        if self.channel is None:
            return fa, fb
        x = torch.cat([fa, fb], dim=0)
        ca, cb = self.channel(x).chunk(2, dim=0)
        sa, sb = self.spatial(x).chunk(2, dim=0)
        if self.channel_fusion == "mean":
            ca = cb = 0.5 * (ca + cb)
        else:  # cross: each image is weighted by the other's channel vector
            ca, cb = cb, ca
        return fa * ca * sa, fb * cb * sb

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Per image, at the bottleneck size ``input_size``."""
        if self.dual is not None:
            return self.dual.compute_conv_feature_map_size(input_size)
        if self.channel is None:
            return np.int64(0)
        return np.int64(self.channel.compute_conv_feature_map_size(input_size)
                        + self.spatial.compute_conv_feature_map_size(input_size))
