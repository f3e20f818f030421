"""Res2Net backbone (Gao et al., TPAMI 2019), the encoder of R2UNet and E²Net (E²Net Sec. 2).

E²Net Sec. 2, "Coarse Liver Segmentation": "We use Res2Net-50 as the backbone to extract
multi-scale features ... F = {F^i | i = 1..5}. The size of F^i is H/2^i x W/2^i x C_i."
The five scales are the stem output (stride 2) and the four residual stages (strides 4, 8,
16, 32), as in Res2Net/ResNet: 7x7 stride-2 conv -> [F^1] -> 3x3 stride-2 max-pool ->
stage 1 -> [F^2] -> stage 2 -> [F^3] -> stage 3 -> [F^4] -> stage 4 -> [F^5].

:class:`Bottle2neck` is our own implementation of the Res2Net bottleneck (Res2Net Sec. 3.1,
Fig. 2): a 1x1 conv to ``scale * w`` channels, a split into ``scale`` groups ``x_1..x_s`` of
width ``w``, hierarchical 3x3 convs ``y_1 = K_1(x_1)``, ``y_i = K_i(x_i + y_{i-1})`` for
``1 < i < s``, ``y_s = x_s`` (Res2Net's Eq. 1 written with the untouched group last, as the
authors' code and timm order it), concatenation, a 1x1 conv to ``4 * planes``, residual.
The first block of a stage (the ``stage`` block type of the Res2Net code, where stride or
width change) feeds every group straight into its own strided 3x3 conv (no hierarchical
sum, since the groups' resolutions would differ) and average-pools the untouched group
(3x3, same stride, padding 1, zero padding counted) so that it matches the strided outputs.
With ``scale = 1`` there is one 3x3 conv over the whole width: a plain ResNet bottleneck.

Differences from the reference code, on purpose: op types and kwargs are injected
(docs/STYLE.md §6), the shortcut is the ResNet-B projection (1x1 strided conv + norm, as
``res2net50_26w_4s``; the ``v1b`` variants' avg-pool shortcut is not built), and only the
backbone exists (no classifier). :func:`load_pretrained_res2net` reads a LOCAL ImageNet
checkpoint in the authors'/timm's key layout; nothing is downloaded.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Sequence, Type

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.blocks import ConvNormAct, _spatial

_LAYOUT_KEYS = {"stem_channels", "layers", "planes", "base_width", "scale"}


def _res2net50(base_width: int, scale: int) -> dict:
    return {"stem_channels": 64, "layers": [3, 4, 6, 3], "planes": [64, 128, 256, 512],
            "base_width": base_width, "scale": scale}


#: Named layouts. ``res2net50_26w_4s`` is the paper's Res2Net-50 (Res2Net Table 2; E²Net
#: Sec. 2); the other ``res2net50_*`` are the published width/scale variants. ``res2net_lite``
#: is ours, for CPU runs: one block per stage, a quarter of the width (outputs 32, 64, 128,
#: 256, 512 channels), still scale 4 with hierarchical 3x3 convs.
RES2NET_CONFIGS: dict[str, dict] = {
    "res2net50_26w_4s": _res2net50(26, 4),
    "res2net50_26w_6s": _res2net50(26, 6),
    "res2net50_26w_8s": _res2net50(26, 8),
    "res2net50_48w_2s": _res2net50(48, 2),
    "res2net50_14w_8s": _res2net50(14, 8),
    "res2net_lite": {"stem_channels": 32, "layers": [1, 1, 1, 1], "planes": [16, 32, 64, 128],
                     "base_width": 26, "scale": 4},
}


def resolve_res2net_config(config: str | dict) -> dict:
    """A validated deep copy of a named (:data:`RES2NET_CONFIGS`) or explicit layout dict.

    A layout is ``{"stem_channels", "layers" (blocks per stage), "planes" (per stage; output
    width is 4x), "base_width", "scale"}``; four stages (the five feature scales of Sec. 2).
    The caller's dict is never mutated; unknown or missing keys raise ``ValueError``.
    """
    if isinstance(config, str):
        if config not in RES2NET_CONFIGS:
            raise ValueError(f"unknown Res2Net config {config!r}; named configs: {sorted(RES2NET_CONFIGS)}")
        config = RES2NET_CONFIGS[config]
    if not isinstance(config, dict):
        raise TypeError(f"Res2Net config must be a name or a dict, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    if set(cfg) != _LAYOUT_KEYS:
        raise ValueError(f"Res2Net config needs exactly the keys {sorted(_LAYOUT_KEYS)}; unknown: "
                         f"{sorted(set(cfg) - _LAYOUT_KEYS)}, missing: {sorted(_LAYOUT_KEYS - set(cfg))}")
    cfg["layers"] = [int(n) for n in cfg["layers"]]
    cfg["planes"] = [int(n) for n in cfg["planes"]]
    if len(cfg["layers"]) != 4 or len(cfg["planes"]) != 4:
        raise ValueError(f"Res2Net config needs 4 stages (strides 4..32), got layers={cfg['layers']} "
                         f"planes={cfg['planes']}")
    if min(cfg["layers"]) < 1 or min(cfg["planes"]) < 1 or int(cfg["stem_channels"]) < 1:
        raise ValueError(f"Res2Net config: blocks, planes and stem_channels must be >= 1, got {cfg}")
    if int(cfg["scale"]) < 1 or math.floor(min(cfg["planes"]) * cfg["base_width"] / 64.0) < 1:
        raise ValueError(f"Res2Net config: scale must be >= 1 and planes * base_width / 64 >= 1, got {cfg}")
    cfg["stem_channels"], cfg["base_width"], cfg["scale"] = \
        int(cfg["stem_channels"]), int(cfg["base_width"]), int(cfg["scale"])
    return cfg


class Bottle2neck(nn.Module):
    """The Res2Net bottleneck (Res2Net Sec. 3.1); see the module docstring for the wiring.

    :param planes: inner reference width; the output has ``4 * planes`` channels.
    :param base_width: the group width is ``w = floor(planes * base_width / 64)`` (26 -> w = 26
        for 64 planes, Res2Net-50 26w).
    :param scale: number of groups ``s``; ``s - 1`` 3x3 convs (one for ``s = 1``).
    :param stride: on every 3x3 conv (and the untouched group's average pool) of a ``stage``
        block, and on the 1x1 shortcut.

    Submodules: ``conv1`` (1x1), ``convs`` (the 3x3s), ``pool`` (stage blocks with ``s > 1``
    only), ``conv3`` (1x1, no nonlinearity), ``skip`` (projection or identity), ``nonlin``.
    """

    expansion = 4

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, planes: int, stride: int = 1,
                 base_width: int = 26, scale: int = 4, norm_op: Type[nn.Module] | None = None,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = None,
                 nonlin_kwargs: dict | None = None):
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.width = int(math.floor(planes * (base_width / 64.0)))
        if self.width < 1:
            raise ValueError(f"group width floor({planes} * {base_width} / 64) must be >= 1")
        self.scale, self.stride = int(scale), int(stride)
        self.input_channels, self.output_channels = input_channels, planes * self.expansion
        #: a Res2Net 'stage' block: stride or width change, groups are not chained
        self.is_stage = self.stride != 1 or input_channels != self.output_channels
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        act = dict(nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.conv1 = ConvNormAct(conv_op, input_channels, self.width * self.scale, 1, 1, **norm, **act)
        self.convs = nn.ModuleList(ConvNormAct(conv_op, self.width, self.width, 3, self.stride, **norm, **act)
                                   for _ in range(max(1, self.scale - 1)))
        self.pool = (nn.AvgPool2d(3, self.stride, 1) if self.is_stage and self.scale > 1 else None)
        self.conv3 = ConvNormAct(conv_op, self.width * self.scale, self.output_channels, 1, 1, **norm)
        self.skip = (ConvNormAct(conv_op, input_channels, self.output_channels, 1, self.stride, **norm)
                     if self.is_stage else nn.Identity())
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.conv1(x), self.width, dim=1)
        outs = []
        for i, conv in enumerate(self.convs):
            inp = groups[i] if (i == 0 or self.is_stage) else outs[-1] + groups[i]
            outs.append(conv(inp))
        if self.scale > 1:
            outs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        out = self.conv3(torch.cat(outs, dim=1))
        return self.nonlin(out + self.skip(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        out_size = _spatial(input_size, [self.stride] * len(input_size))
        total = self.conv1.compute_conv_feature_map_size(input_size)
        total += sum(c.compute_conv_feature_map_size(input_size) for c in self.convs)
        total += self.conv3.compute_conv_feature_map_size(out_size)
        if isinstance(self.skip, ConvNormAct):
            total += self.skip.compute_conv_feature_map_size(input_size)
        return total


class Res2NetBackbone(nn.Module):
    """Res2Net encoder returning the five feature scales ``[F^1..F^5]`` of E²Net Sec. 2.

    ``output_strides`` = ``[2, 4, 8, 16, 32]``; ``output_channels`` = ``[stem_channels,
    4 * planes[0], ..., 4 * planes[3]]`` (64, 256, 512, 1024, 2048 for Res2Net-50).
    Submodules: ``stem`` (7x7 stride-2 conv + norm + nonlin), ``pool`` (3x3 stride-2 max-pool,
    padding 1), ``stages`` (four ``nn.Sequential`` of :class:`Bottle2neck`; stage 1 has stride 1,
    the others 2). 2D only, as the paper and the ImageNet weights.
    """

    def __init__(self, input_channels: int, config: str | dict = "res2net_lite",
                 conv_op: Type[_ConvNd] = nn.Conv2d, norm_op: Type[nn.Module] | None = nn.BatchNorm2d,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = nn.ReLU,
                 nonlin_kwargs: dict | None = None):
        super().__init__()
        if not (isinstance(conv_op, type) and issubclass(conv_op, nn.Conv2d)):
            raise ValueError(f"Res2NetBackbone is 2D only: conv_op must be nn.Conv2d, got {conv_op!r}")
        if int(input_channels) < 1:
            raise ValueError(f"input_channels must be >= 1, got {input_channels}")
        self.config = resolve_res2net_config(config)
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        cfg = self.config
        self.stem = ConvNormAct(conv_op, int(input_channels), cfg["stem_channels"], 7, 2, **ops)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList()
        width = cfg["stem_channels"]
        for s, (blocks, planes) in enumerate(zip(cfg["layers"], cfg["planes"])):
            seq = []
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                seq.append(Bottle2neck(conv_op, width, planes, stride, cfg["base_width"], cfg["scale"], **ops))
                width = seq[-1].output_channels
            self.stages.append(nn.Sequential(*seq))
        self.output_channels = [cfg["stem_channels"]] + [4 * p for p in cfg["planes"]]
        self.output_strides = [2, 4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        out = self.pool(feats[0])
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return feats

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        total = self.stem.compute_conv_feature_map_size(input_size)
        size = [int(s) // 4 for s in input_size]
        for stage in self.stages:
            for block in stage:
                total += block.compute_conv_feature_map_size(size)
                size = [s // block.stride for s in size]
        return total


_BLOCK_PARTS = {"conv1": "conv1.conv", "bn1": "conv1.norm", "conv3": "conv3.conv", "bn3": "conv3.norm",
                "downsample.0": "skip.conv", "downsample.1": "skip.norm"}
_HEAD_PREFIXES = ("fc.", "classifier.", "head.")


def res2net_key(key: str) -> str | None:
    """Our backbone key for a key of the authors'/timm's Res2Net checkpoint, or None.

    ``conv1``/``bn1`` -> ``stem.conv``/``stem.norm``; ``layer{L}.{b}.<part>`` ->
    ``stages.{L-1}.{b}.<part>`` with ``conv1/bn1 -> conv1.conv/.norm``, ``convs.k/bns.k ->
    convs.k.conv/.norm``, ``conv3/bn3 -> conv3.conv/.norm``, ``downsample.0/1 -> skip.conv/.norm``.
    """
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if m:
        return f"stem.{'conv' if m.group(1) == 'conv1' else 'norm'}.{m.group(2)}"
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(.+)\.(\w+)", key)
    if not m:
        return None
    prefix, part, leaf = f"stages.{int(m.group(1)) - 1}.{m.group(2)}", m.group(3), m.group(4)
    if part in _BLOCK_PARTS:
        return f"{prefix}.{_BLOCK_PARTS[part]}.{leaf}"
    g = re.fullmatch(r"(convs|bns)\.(\d+)", part)
    if g:
        return f"{prefix}.convs.{g.group(2)}.{'conv' if g.group(1) == 'convs' else 'norm'}.{leaf}"
    return None


def _backbones(model: nn.Module) -> list[Res2NetBackbone]:
    found = [m for m in model.modules() if isinstance(m, Res2NetBackbone)]
    if not found:
        raise TypeError(f"{type(model).__name__} holds no Res2NetBackbone")
    return found


def load_pretrained_res2net(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Copy ImageNet Res2Net weights from a LOCAL file into every Res2Net backbone of ``model``.

    E²Net trains both branches from the same initialisation and keeps their weights separate
    (Sec. 2, "their weights are not shared"), so an :class:`E2Net` gets the file in both its
    segmentation and edge backbones. File formats and the first-conv adaptation (RGB kernel
    averaged over RGB for a channel count other than 3) are those of
    :mod:`nnunet_ulseg.networks.pretrained`. Returns ``{"backbones", "matched", "missing",
    "unexpected", "skipped_head", "skipped_stats", "missing_keys", "unexpected_keys"}`` for one
    backbone. Shape mismatches (a different layout) always raise; with ``strict`` so do missing
    or unexpected tensors.
    """
    from nnunet_ulseg.networks.pretrained import map_state_dict

    backbones = _backbones(model)
    new, report = map_state_dict(path, backbones[0].state_dict(), res2net_key, "stem.conv.weight", "backbone",
                                 "wrong Res2Net layout?", strict, head_prefixes=_HEAD_PREFIXES)
    for backbone in backbones:
        backbone.load_state_dict(new, strict=False)
    return {"backbones": len(backbones), **report}
