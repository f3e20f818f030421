"""Multi-scale fusion and the two prediction heads of AHRNet (Sec. 2.1, Fig. 1, Table 2).

* :class:`MultiScaleFusion`: ``F_1..F_4`` (optionally weighted by scale attention) are
  upsampled bilinearly to ``F_1``'s resolution (1/4 of the input) and concatenated.
* :class:`BaselineHead` (Table 2 row 1): one 1x1 conv to ``num_classes`` logits at 1/4,
  upsampled bilinearly to the input size.
* :class:`DEDecoder` (Table 2 rows 2-4): the paper's small decoder, see its docstring.

Both heads have the attribute ``deep_supervision`` that nnU-Net's
``set_deep_supervision_enabled`` sets on ``network.decoder`` (docs/STYLE.md §2); with it on,
they return a list with the full-resolution output first, otherwise one tensor. All
layers are always built, so state dicts do not depend on deep supervision. Outputs are
logits (no softmax/sigmoid).
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.attention import ScaleAttention
from nnunet_ulseg.networks.blocks import ConvNormAct


def _area(channels: int, size: Sequence[int]) -> np.int64:
    return np.prod([channels, *size], dtype=np.int64)


class MultiScaleFusion(nn.Module):
    """Upsample every ``F_k`` to ``F_1``'s size (bilinear, ``align_corners=False``) and concatenate.

    With ``scale_attention`` the features are first weighted by :class:`ScaleAttention`
    (``self.scale_attention``; ``None`` otherwise). Output width ``sum(channels)``
    (15C: 270 for W18, 480 for W32).
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: Sequence[int], scale_attention: bool = False,
                 se_reduction: int = 16, nonlin=nn.ReLU, nonlin_kwargs=None):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.output_channels = sum(self.channels)
        self.scale_attention = (ScaleAttention(conv_op, self.channels, se_reduction, nonlin, nonlin_kwargs)
                                if scale_attention else None)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.scale_attention is not None:
            feats = self.scale_attention(feats)
        size = feats[0].shape[2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in feats[1:]], dim=1)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """``input_size`` is F_1's size; counts the concatenated map (+ the SE convs)."""
        total = _area(self.output_channels, input_size)
        if self.scale_attention is not None:
            total += self.scale_attention.compute_conv_feature_map_size()
        return total


class BaselineHead(nn.Module):
    """Table 2 row 1: ``1x1 conv -> logits at 1/4 -> bilinear upsampling to the input size``.

    One output only; with ``deep_supervision`` on it is returned as a one-element list, so
    nnU-Net's deep-supervision scales for this head are ``[[1, 1]]``.
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, num_classes: int,
                 upsample: int = 4, deep_supervision: bool = False):
        super().__init__()
        self.seg_layer = conv_op(input_channels, num_classes, 1, 1, 0, bias=True)
        self.num_classes, self.upsample = num_classes, upsample
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor):
        out = F.interpolate(self.seg_layer(x), scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return [out] if self.deep_supervision else out

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        return _area(self.num_classes, input_size)


class _UpConvNormAct(nn.Module):
    """``ConvTranspose(k=4, s=2, p=1) -> norm -> nonlin``: exactly doubles the spatial size."""

    def __init__(self, conv_op, input_channels, output_channels, norm_op=None, norm_op_kwargs=None,
                 nonlin=None, nonlin_kwargs=None):
        super().__init__()
        if not issubclass(conv_op, nn.Conv2d):
            raise ValueError("the DE decoder is 2D only (conv_op must be nn.Conv2d)")
        self.output_channels = output_channels
        self.conv = nn.ConvTranspose2d(input_channels, output_channels, 4, 2, 1, bias=False)
        self.norm = norm_op(output_channels, **(norm_op_kwargs or {})) if norm_op is not None else nn.Identity()
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x):
        return self.nonlin(self.norm(self.conv(x)))

    def compute_conv_feature_map_size(self, input_size):
        return _area(self.output_channels, [2 * int(s) for s in input_size])


class DEDecoder(nn.Module):
    """The decoder DE of AHRNet (Sec. 2.1, Fig. 1).

    Paper: "two deconvolutional layers with 32 4x4 kernels and a stride of 2 and three
    convolutional layers with 32 3x3 kernels, where the dimensions of feature maps are 1/4,
    1/2, and 1 of the input image, respectively. Another three convolutional layers with a
    1x1 kernel are added to get the corresponding predictions. Each deconvolutional layer
    takes as input the features and the prediction." Our wiring::

        f1 = conv3x3(x)                      # 1/4, 32 ch   (x: fused / DA features)
        p1 = seg1x1(f1)                      # 1/4
        f2 = conv3x3(deconv([f1, p1]))       # 1/2, 32 ch   ([a, b]: channel concat)
        p2 = seg1x1(f2)                      # 1/2
        f3 = conv3x3(deconv([f2, p2]))       # 1,   32 ch
        p3 = seg1x1(f3)                      # 1

    Convs and deconvs are followed by norm + nonlinearity (the paper is silent; this is
    how HRNet's own layers are built); the 1x1 prediction convs have a bias and nothing
    after them. The predictions are logits; the paper's ``p_k`` are their sigmoids.
    Returns ``[p3, p2, p1]`` (full resolution first, nnU-Net's order) with
    ``deep_supervision``, else ``p3``. ``p1`` and ``p2`` feed the deconvolutions, so every
    parameter is used whether or not deep supervision is on.
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, num_classes: int, channels: int = 32,
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None,
                 deep_supervision: bool = False, levels: int = 3):
        """``levels``: outputs at 1, 1/2, ..., 1/2^(levels-1) of the input; 3 is the paper's (input at
        1/4); 2 serves a stride-2 stem (input at 1/2: one deconvolution, outputs [p_1, p_1/2])."""
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.num_classes, self.channels = num_classes, channels
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList([ConvNormAct(conv_op, input_channels, channels, 3, 1, **ops)] + [
            ConvNormAct(conv_op, channels, channels, 3, 1, **ops) for _ in range(levels - 1)])
        self.upconvs = nn.ModuleList([_UpConvNormAct(conv_op, channels + num_classes, channels, **ops)
                                      for _ in range(levels - 1)])
        self.seg_layers = nn.ModuleList([conv_op(channels, num_classes, 1, 1, 0, bias=True)
                                         for _ in range(levels)])

    def forward(self, x: torch.Tensor):
        preds = []
        f = self.stages[0](x)
        preds.append(self.seg_layers[0](f))
        for up, stage, seg in zip(self.upconvs, self.stages[1:], self.seg_layers[1:]):
            f = stage(up(torch.cat([f, preds[-1]], dim=1)))
            preds.append(seg(f))
        return preds[::-1] if self.deep_supervision else preds[-1]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """``input_size`` is the (1/4 or 1/2-resolution) size of the decoder input."""
        total = np.int64(0)
        size = [int(s) for s in input_size]
        for k in range(len(self.seg_layers)):
            if k:
                total += self.upconvs[k - 1].compute_conv_feature_map_size(size)
                size = [2 * s for s in size]
            total += _area(self.channels, size) + _area(self.num_classes, size)
        return total
