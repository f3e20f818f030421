"""HRNet backbone: parallel multi-resolution branches with repeated fusion (AHRNet Sec. 2.1).

Structure follows HRNet (Wang et al., TPAMI 2020) and timm's ``hrnet.py`` split
(docs/STYLE.md §7): fusion lives in :class:`HighResolutionModule`, stages and transitions are
built from stage dicts (``networks/configs.py``). Differences from timm, on purpose:

* op types and their kwargs are injected (``conv_op``, ``norm_op`` + ``norm_op_kwargs``,
  ``nonlin`` + ``nonlin_kwargs``), no global BN momentum;
* no list passed in is mutated (timm's module rewrites ``num_in_chs`` and its input list);
* a transition entry for an existing branch is applied to *that* branch (timm and the
  HRNet classification code apply it to the lowest-resolution output; this only differs
  when a stage changes an existing branch's width, which no published config does);
* only the backbone: the classification head (``incre_modules``, ``downsamp_modules``,
  ``final_layer``, ``classifier``) is not built; the output is the list of the four
  multi-resolution features ``F_1..F_4`` (the HRNetV2 representation).

Fusion (HRNet Fig. 3): output ``i`` sums every branch ``j``: identity for ``j == i``;
for ``j > i`` a 1x1 conv + norm to branch ``i``'s width, then upsampling (``nearest`` by
default, as in the ImageNet-pretrained HRNet, so pretrained weights see the features they
were trained with); for ``j < i`` ``i - j`` 3x3 stride-2 convs + norm (nonlinearity between
them, not after the last); the sum goes through the nonlinearity.

2D only: HRNet's ImageNet weights and the paper (2D lesion crops) are 2D; ``conv_op``
other than a ``nn.Conv2d`` subclass raises.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.blocks import BLOCK_TYPES, BlockSequence, ConvNormAct, conv_dim
from nnunet_ulseg.networks.configs import resolve_hrnet_config


def _half(size: Sequence[int], times: int = 1) -> list[int]:
    return [int(s) // (2 ** times) for s in size]


def _area(channels: int, size: Sequence[int]) -> np.int64:
    return np.prod([channels, *size], dtype=np.int64)


class HighResolutionModule(nn.Module):
    """Parallel branches (one block sequence per resolution) + multi-resolution fusion.

    ``input_channels[b]`` / ``num_channels[b]`` / ``num_blocks[b]`` describe branch ``b``
    (resolution ``1/2^b`` of the first branch). ``forward`` takes and returns a list with
    one tensor per branch; every output is fused from all branches (multi-scale output).
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: Sequence[int], num_channels: Sequence[int],
                 num_blocks: Sequence[int], block: str = "basic", norm_op: Type[nn.Module] | None = None,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = None,
                 nonlin_kwargs: dict | None = None, upsample_mode: str = "nearest"):
        super().__init__()
        n = len(num_channels)
        if not (len(input_channels) == len(num_blocks) == n):
            raise ValueError(f"input_channels ({len(input_channels)}), num_channels ({n}) and num_blocks "
                             f"({len(num_blocks)}) need one entry per branch")
        block_type = BLOCK_TYPES[block]
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.branches = nn.ModuleList(
            BlockSequence(block_type, num_blocks[b], conv_op, input_channels[b], num_channels[b], 1, **ops)
            for b in range(n))
        self.output_channels = [br.output_channels for br in self.branches]
        self.upsample_mode = upsample_mode
        self.fuse = nn.ModuleList()
        if n > 1:
            for i in range(n):
                row = nn.ModuleList()
                for j in range(n):
                    row.append(self._fuse_path(conv_op, j, i, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs))
                self.fuse.append(row)
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if (nonlin is not None and n > 1) else nn.Identity()

    def _fuse_path(self, conv_op, j, i, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs) -> nn.Module:
        """Path from branch ``j`` to output ``i``."""
        c = self.output_channels
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        if j == i:
            return nn.Identity()
        if j > i:  # lower resolution -> 1x1 conv + norm, upsampled in forward
            return ConvNormAct(conv_op, c[j], c[i], 1, 1, **norm)
        steps = []
        for k in range(i - j):
            last = k == i - j - 1
            steps.append(ConvNormAct(conv_op, c[j], c[i] if last else c[j], 3, 2, **norm,
                                     nonlin=None if last else nonlin, nonlin_kwargs=nonlin_kwargs))
        return nn.Sequential(*steps)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(t) for branch, t in zip(self.branches, x)]
        if len(x) == 1:
            return x
        out = []
        for i, row in enumerate(self.fuse):
            y = None
            for j, path in enumerate(row):
                z = path(x[j])
                if j > i:
                    z = F.interpolate(z, size=x[i].shape[2:], mode=self.upsample_mode)
                y = z if y is None else y + z
            out.append(self.nonlin(y))
        return out

    def compute_conv_feature_map_size(self, input_sizes: Sequence[Sequence[int]]) -> np.int64:
        total = np.int64(0)
        for branch, size in zip(self.branches, input_sizes):
            total += branch.compute_conv_feature_map_size(size)
        c = self.output_channels
        for i, row in enumerate(self.fuse):
            for j in range(len(row)):
                if j > i:
                    total += _area(c[i], input_sizes[j])
                elif j < i:
                    for k in range(i - j):
                        total += _area(c[i] if k == i - j - 1 else c[j], _half(input_sizes[j], k + 1))
        return total


def make_transition(conv_op: Type[_ConvNd], previous_channels: Sequence[int], channels: Sequence[int],
                     norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None) -> nn.ModuleList:
    """HRNet transition between stages: one entry per branch of the next stage.

    Existing branch ``i``: ``nn.Identity`` if its width is unchanged, else a 3x3 conv-norm-act
    (wrapped in ``nn.Sequential``). New branch ``i >= len(previous_channels)``: a chain of
    3x3 stride-2 conv-norm-acts from the previous lowest-resolution branch, one per
    resolution step (only the last changes the width), as in HRNet.
    """
    ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
    n_prev = len(previous_channels)
    entries = nn.ModuleList()
    for i, c in enumerate(channels):
        if i < n_prev:
            if c == previous_channels[i]:
                entries.append(nn.Identity())
            else:
                entries.append(nn.Sequential(ConvNormAct(conv_op, previous_channels[i], c, 3, 1, **ops)))
        else:
            steps, c_in = [], previous_channels[-1]
            for k in range(i + 1 - n_prev):
                c_out = c if k == i - n_prev else c_in
                steps.append(ConvNormAct(conv_op, c_in, c_out, 3, 2, **ops))
                c_in = c_out
            entries.append(nn.Sequential(*steps))
    return entries


def make_stage(conv_op: Type[_ConvNd], stage: dict, input_channels: Sequence[int],
               upsample_mode: str = "nearest", **op_kwargs) -> nn.Sequential:
    """``stage["num_modules"]`` :class:`HighResolutionModule`\\ s in sequence (list in, list out)."""
    modules, chans = [], list(input_channels)
    for _ in range(int(stage["num_modules"])):
        modules.append(HighResolutionModule(conv_op, chans, stage["num_channels"], stage["num_blocks"],
                                            stage["block"], upsample_mode=upsample_mode, **op_kwargs))
        chans = modules[-1].output_channels
    seq = nn.Sequential(*modules)
    seq.output_channels = chans
    return seq


class HRNetBackbone(nn.Module):
    """HRNet feature extractor returning ``[F_1, ..., F_n]`` at strides 4, 8, ..., 2^(n+1).

    ``stem_stride`` 4 is HRNet's (two stride-2 stem convs).  2 makes the second stem conv
    stride 1, so every branch has twice the resolution (strides 2, 4, ...): for small lesion
    crops (64 px, where the stride-4 branch is 16 x 16 px) at 4x the backbone's compute.  The
    paper (128-256 px crops) always uses 4; the weights are the same tensors either way.

    Submodules: ``stem`` (two 3x3 conv-norm-acts), ``stages[0]`` (stage 1: a block
    sequence), ``stages[1:]`` (sequences of :class:`HighResolutionModule`) and
    ``transitions[t]`` between ``stages[t]`` and ``stages[t + 1]``. ``config`` is a name in
    ``HRNET_CONFIGS`` or a stage dict (see ``networks/configs.py``). Attributes
    ``output_channels`` / ``output_strides`` describe the returned features; the op types are
    stored for the heads (as DNA's encoders do).
    """

    def __init__(self, input_channels: int, config: str | dict = "w32", conv_op: Type[_ConvNd] = nn.Conv2d,
                 norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None,
                 upsample_mode: str = "nearest", stem_stride: int = 4):
        super().__init__()
        if stem_stride not in (2, 4):
            raise ValueError(f"stem_stride must be 2 or 4, got {stem_stride}")
        if conv_dim(conv_op) != 2 or not issubclass(conv_op, nn.Conv2d):
            raise ValueError(f"HRNetBackbone is 2D only (conv_op must be nn.Conv2d), got {conv_op.__name__}")
        if int(input_channels) < 1:
            raise ValueError(f"input_channels must be >= 1, got {input_channels}")
        cfg = resolve_hrnet_config(config)
        self.config = cfg
        self.conv_op, self.norm_op, self.nonlin = conv_op, norm_op, nonlin
        self.norm_op_kwargs = dict(norm_op_kwargs or {})
        self.nonlin_kwargs = dict(nonlin_kwargs or {})
        ops = dict(norm_op=norm_op, norm_op_kwargs=self.norm_op_kwargs, nonlin=nonlin,
                   nonlin_kwargs=self.nonlin_kwargs)
        stem = int(cfg["stem_channels"])
        self.stem = nn.Sequential(ConvNormAct(conv_op, input_channels, stem, 3, 2, **ops),
                                  ConvNormAct(conv_op, stem, 64, 3, stem_stride // 2, **ops))
        self.stem_stride = int(stem_stride)
        first = cfg["stages"][0]
        self.stages = nn.ModuleList([BlockSequence(BLOCK_TYPES[first["block"]], first["num_blocks"][0], conv_op,
                                                   64, first["num_channels"][0], 1, **ops)])
        self.transitions = nn.ModuleList()
        chans = [self.stages[0].output_channels]
        for stage in cfg["stages"][1:]:
            expansion = BLOCK_TYPES[stage["block"]].expansion
            self.transitions.append(make_transition(conv_op, chans, [c * expansion for c in stage["num_channels"]],
                                                    **ops))
            self.stages.append(make_stage(conv_op, stage, [c * expansion for c in stage["num_channels"]],
                                          upsample_mode, **ops))
            chans = self.stages[-1].output_channels
        self.input_channels = int(input_channels)
        self.output_channels = list(chans)
        self.output_strides = [self.stem_stride * 2 ** k for k in range(len(chans))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stages[0](self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages[1:]):
            inputs = [t(feats[i] if i < len(feats) else feats[-1]) for i, t in enumerate(transition)]
            feats = stage(inputs)
        return feats

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        total = self.stem[0].compute_conv_feature_map_size(input_size)
        size = _half(input_size)
        total += self.stem[1].compute_conv_feature_map_size(size)
        if self.stem_stride == 4:
            size = _half(size)
        total += self.stages[0].compute_conv_feature_map_size(size)
        sizes = [size]
        for transition, stage in zip(self.transitions, self.stages[1:]):
            n_prev = len(sizes)
            new_sizes = []
            for i, t in enumerate(transition):
                if i < n_prev:
                    new_sizes.append(sizes[i])
                    if not isinstance(t, nn.Identity):
                        total += t[0].compute_conv_feature_map_size(sizes[i])
                else:
                    src = sizes[-1]
                    for step in t:
                        total += step.compute_conv_feature_map_size(src)
                        src = _half(src)
                    new_sizes.append(src)
            sizes = new_sizes
            for module in stage:
                total += module.compute_conv_feature_map_size(sizes)
        return total
