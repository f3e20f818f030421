"""Dilated residual encoder (DRN / DRN-MG) of the co-segmentation network (co-seg paper Sec. 2.2).

Sec. 2.2: "we employ a pre-trained ResNet-101 [18] and add atrous convolutions to the final
two residual blocks [19], creating feature maps with an output stride of 8 (DRN-101) ... We
also examine using a multi-grid strategy for the encoder (DRN-MG-101)"; Sec. 3: "a
multi-grid strategy (DRN-MG-101) with dilation rates of 2, 4, and 8".

Wiring (ResNet v1.5 bottlenecks from :mod:`nnunet_ulseg.networks.blocks`, stride on the 3x3):
7x7 stride-2 stem -> 3x3 stride-2 max-pool -> stage 1 (stride 4, the **low-level** feature that
decoder D2 takes, DeepLabv3+ [20]) -> stage 2 (stride 8) -> stages 3 and 4 with their strides
replaced by dilation 2 and 4 (stride stays 8: the **high-level** feature). Open choices:

* the first block of a dilated stage keeps the dilation of the stage before it and every later
  block uses the new one: torchvision's ``replace_stride_with_dilation`` (its DeepLabv3
  backbone), so a torchvision ResNet built that way computes exactly what this encoder does;
* multi-grid: the last stage's blocks get the paper's absolute rates ``(2, 4, 8)`` (one per
  block; DeepLabv3 [19] multiplies unit rates by the stage rate, the paper states the rates
  themselves). The last stage must then have as many blocks as rates, which every named
  layout here has (3). ``multi_grid=None`` gives DRN-101 (dilation 4 in the last stage).

Named layouts (:data:`DRN_CONFIGS`): ``resnet101`` ([3, 4, 23, 3], the paper's), ``resnet50``
([3, 4, 6, 3]), ``resnet26`` (ours: [1, 2, 2, 3] bottlenecks at full width, 26 weighted layers
counting the ImageNet classifier; not timm's [2, 2, 2, 2] ``resnet26``, because the last stage
must hold the three multi-grid blocks) and ``resnet_lite`` (ours, for CPU: [1, 1, 1, 3] at a
quarter of the width, channels 64 low / 512 high). Outputs 256 / 2048 channels for the
full-width layouts.

:func:`load_pretrained_drn` reads a LOCAL torchvision/timm-layout ResNet state dict (e.g.
torchvision's ``resnet101`` ImageNet file); dilation changes no weight shape, so a plain
ResNet checkpoint fits. Nothing is downloaded.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Sequence, Type

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.blocks import Bottleneck, ConvNormAct

_LAYOUT_KEYS = {"stem_channels", "layers", "planes"}
_FULL = [64, 128, 256, 512]

#: Named layouts; see the module docstring. ``planes`` is the inner width (outputs are 4x).
DRN_CONFIGS: dict[str, dict] = {
    "resnet101": {"stem_channels": 64, "layers": [3, 4, 23, 3], "planes": list(_FULL)},
    "resnet50": {"stem_channels": 64, "layers": [3, 4, 6, 3], "planes": list(_FULL)},
    "resnet26": {"stem_channels": 64, "layers": [1, 2, 2, 3], "planes": list(_FULL)},
    "resnet_lite": {"stem_channels": 32, "layers": [1, 1, 1, 3], "planes": [16, 32, 64, 128]},
}
#: the paper's multi-grid rates for the last stage (Sec. 3, DRN-MG-101)
MULTI_GRID = (2, 4, 8)


def resolve_drn_config(config: str | dict) -> dict:
    """A validated deep copy of a named (:data:`DRN_CONFIGS`) or explicit layout dict
    ``{"stem_channels", "layers" (4 block counts), "planes" (4 inner widths)}``."""
    if isinstance(config, str):
        if config not in DRN_CONFIGS:
            raise ValueError(f"unknown dilated ResNet depth {config!r}; named layouts: {sorted(DRN_CONFIGS)}")
        config = DRN_CONFIGS[config]
    if not isinstance(config, dict):
        raise TypeError(f"dilated ResNet layout must be a name or a dict, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    if set(cfg) != _LAYOUT_KEYS:
        raise ValueError(f"dilated ResNet layout needs exactly the keys {sorted(_LAYOUT_KEYS)}; unknown: "
                         f"{sorted(set(cfg) - _LAYOUT_KEYS)}, missing: {sorted(_LAYOUT_KEYS - set(cfg))}")
    cfg["layers"] = [int(n) for n in cfg["layers"]]
    cfg["planes"] = [int(n) for n in cfg["planes"]]
    cfg["stem_channels"] = int(cfg["stem_channels"])
    if len(cfg["layers"]) != 4 or len(cfg["planes"]) != 4:
        raise ValueError(f"dilated ResNet layout needs 4 stages, got layers={cfg['layers']} planes={cfg['planes']}")
    if min(cfg["layers"]) < 1 or min(cfg["planes"]) < 1 or cfg["stem_channels"] < 1:
        raise ValueError(f"dilated ResNet layout: blocks, planes and stem_channels must be >= 1, got {cfg}")
    return cfg


def _dilate(layer: ConvNormAct, dilation: int) -> None:
    """Rebuild ``layer.conv`` with ``dilation`` and padding ``dilation * (k - 1) / 2`` (same size)."""
    old = layer.conv
    layer.conv = type(old)(old.in_channels, old.out_channels, old.kernel_size, old.stride,
                           padding=[dilation * (k - 1) // 2 for k in old.kernel_size],
                           dilation=dilation, bias=old.bias is not None)


class DilatedBottleneck(Bottleneck):
    """:class:`~nnunet_ulseg.networks.blocks.Bottleneck` whose 3x3 conv has ``dilation``.

    Same submodules and state-dict keys as the plain block (``conv1``, ``conv2``, ``conv3``,
    ``skip``); only ``conv2.conv``'s dilation and padding differ.
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, planes: int, stride: int = 1,
                 dilation: int = 1, **op_kwargs):
        super().__init__(conv_op, input_channels, planes, stride, **op_kwargs)
        self.dilation = int(dilation)
        if self.dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        if self.dilation != 1:
            _dilate(self.conv2, self.dilation)


class DilatedResNet(nn.Module):
    """Dilated ResNet encoder, output stride 8 (Sec. 2.2); ``forward(x) -> (low, high)``.

    :param input_channels: image channels (>= 1).
    :param depth: a :data:`DRN_CONFIGS` name or an explicit layout dict.
    :param multi_grid: dilation of each block of the last stage (``(2, 4, 8)``, DRN-MG), or
        None (every block dilation 4, DRN). Its length must equal the last stage's block count.

    ``low`` is stage 1's output (stride 4, ``low_channels``), ``high`` stage 4's (stride 8,
    ``high_channels``). ``dilations`` lists every block's 3x3 dilation per stage, e.g.
    ``[[1], [1], [1], [2, 4, 8]]`` for ``resnet_lite``. Submodules ``stem``, ``pool``, ``stages``
    (four ``nn.Sequential`` of :class:`DilatedBottleneck`). 2D only, as the paper.
    """

    output_strides = (4, 8)

    def __init__(self, input_channels: int, depth: str | dict = "resnet26",
                 multi_grid: Sequence[int] | None = MULTI_GRID, conv_op: Type[_ConvNd] = nn.Conv2d,
                 norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None):
        super().__init__()
        if not (isinstance(conv_op, type) and issubclass(conv_op, nn.Conv2d)):
            raise ValueError(f"DilatedResNet is 2D only: conv_op must be nn.Conv2d, got {conv_op!r}")
        if int(input_channels) < 1:
            raise ValueError(f"input_channels must be >= 1, got {input_channels}")
        cfg = self.config = resolve_drn_config(depth)
        self.multi_grid = None if multi_grid is None else [int(d) for d in multi_grid]
        if self.multi_grid is not None and len(self.multi_grid) != cfg["layers"][3]:
            raise ValueError(f"multi_grid {self.multi_grid} needs one rate per block of the last stage "
                             f"({cfg['layers'][3]} blocks in layout {cfg})")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.stem = ConvNormAct(conv_op, int(input_channels), cfg["stem_channels"], 7, 2, **ops)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList()
        self.dilations: list[list[int]] = []
        width, previous = cfg["stem_channels"], 1
        for s, (blocks, planes) in enumerate(zip(cfg["layers"], cfg["planes"])):
            stage_dilation = {2: 2, 3: 4}.get(s, 1)  # strides of stages 3 and 4 become dilation
            rates = [previous] + [stage_dilation] * (blocks - 1)  # torchvision's rule, see module doc
            if s == 3 and self.multi_grid is not None:
                rates = list(self.multi_grid)
            stride = 2 if s == 1 else 1
            seq = []
            for b, d in enumerate(rates):
                seq.append(DilatedBottleneck(conv_op, width, planes, stride if b == 0 else 1, d, **ops))
                width = seq[-1].output_channels
            self.stages.append(nn.Sequential(*seq))
            self.dilations.append(rates)
            previous = stage_dilation
        self.low_channels = 4 * cfg["planes"][0]
        self.high_channels = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.stages[0](self.pool(self.stem(x)))
        high = low
        for stage in self.stages[1:]:
            high = stage(high)
        return low, high

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements (batch 1) of every conv output of the encoder for a 2D ``input_size``."""
        total = self.stem.compute_conv_feature_map_size(input_size)
        size = [int(s) // 4 for s in input_size]
        for stage in self.stages:
            for block in stage:
                total += block.compute_conv_feature_map_size(size)
                size = [s // st for s, st in zip(size, block.conv2.stride)]
        return total


_BLOCK_PARTS = {"conv1": "conv1.conv", "bn1": "conv1.norm", "conv2": "conv2.conv", "bn2": "conv2.norm",
                "conv3": "conv3.conv", "bn3": "conv3.norm", "downsample.0": "skip.conv",
                "downsample.1": "skip.norm"}
_HEAD_PREFIXES = ("fc.", "classifier.", "head.")


def torchvision_to_drn_key(key: str) -> str | None:
    """Our encoder key for a torchvision/timm ResNet key, or None (classifier, unknown).

    ``conv1``/``bn1`` -> ``stem.conv``/``stem.norm``; ``layer{L}.{b}.<part>`` ->
    ``stages.{L-1}.{b}.<part>`` with ``conv{n}/bn{n} -> conv{n}.conv/.norm`` and
    ``downsample.0/1 -> skip.conv/.norm``.
    """
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if m:
        return f"stem.{'conv' if m.group(1) == 'conv1' else 'norm'}.{m.group(2)}"
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)", key)
    if not m:
        return None
    return f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{_BLOCK_PARTS[m.group(3)]}.{m.group(4)}"


def load_pretrained_drn(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Copy ImageNet ResNet weights from a LOCAL file into ``model``'s :class:`DilatedResNet`.

    ``model`` is a :class:`DilatedResNet` or holds one (``CoSegNet.encoder``: the Siamese
    branches share it, so one copy serves both images). File formats and the first-conv
    adaptation (RGB kernel averaged over RGB for another channel count) are those of
    :mod:`nnunet_ulseg.networks.pretrained`. Returns ``{"matched", "missing", "unexpected",
    "skipped_head", "skipped_stats", "missing_keys", "unexpected_keys"}``. Shape mismatches
    (another depth or width) always raise; with ``strict`` so do missing or unexpected tensors.
    """
    from nnunet_ulseg.networks.pretrained import map_state_dict

    found = [m for m in model.modules() if isinstance(m, DilatedResNet)]
    if not found:
        raise TypeError(f"{type(model).__name__} holds no DilatedResNet")
    encoder = found[0]
    new, report = map_state_dict(path, encoder.state_dict(), torchvision_to_drn_key, "stem.conv.weight",
                                 "encoder", "wrong ResNet depth/width?", strict, head_prefixes=_HEAD_PREFIXES)
    encoder.load_state_dict(new, strict=False)
    return report
