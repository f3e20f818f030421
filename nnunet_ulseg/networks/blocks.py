"""Convolution building blocks with injected op types (dynamic-network-architectures style).

HRNet (Wang et al., TPAMI 2020; AHRNet Sec. 2.1 uses it as the backbone) is built from
ResNet basic and bottleneck blocks. timm and the HRNet reference code hard-code
``nn.Conv2d``/``nn.BatchNorm2d`` with a module-level momentum; here every op type and its
kwargs are constructor arguments, as in dynamic-network-architectures (docs/STYLE.md §6, §7).

Every block has ``compute_conv_feature_map_size(input_size)``: the number of elements
(batch size 1) in the outputs of its convolutions, the quantity nnU-Net's planner sums for
its VRAM estimate. Norm and nonlinearity outputs are not counted, as in DNA.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
from torch import nn
from torch.nn.modules.conv import _ConvNd


def _spatial(input_size: Sequence[int], stride: Sequence[int]) -> list[int]:
    return [int(i) // int(s) for i, s in zip(input_size, stride)]


def _as_tuple(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value}")
    return value


def conv_dim(conv_op: Type[_ConvNd]) -> int:
    """Spatial dimensionality of a convolution type (``nn.Conv2d`` -> 2)."""
    for dim, op in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
        if issubclass(conv_op, op):
            return dim
    raise ValueError(f"conv_op must be a subclass of nn.Conv1d/2d/3d, got {conv_op!r}")


class ConvNormAct(nn.Module):
    """``conv -> norm -> nonlin`` with same padding; ``norm_op``/``nonlin`` may be None.

    Submodules are named ``conv``, ``norm`` and ``nonlin`` (absent ones are ``nn.Identity``),
    so a checkpoint's keys read ``<name>.conv.weight`` / ``<name>.norm.running_mean``.
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, output_channels: int,
                 kernel_size: int | Sequence[int] = 3, stride: int | Sequence[int] = 1,
                 conv_bias: bool = False, norm_op: Type[nn.Module] | None = None,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = None,
                 nonlin_kwargs: dict | None = None):
        super().__init__()
        dim = conv_dim(conv_op)
        kernel_size = _as_tuple(kernel_size, dim, "kernel_size")
        self.stride = _as_tuple(stride, dim, "stride")
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.conv = conv_op(input_channels, output_channels, kernel_size, self.stride,
                            padding=[(k - 1) // 2 for k in kernel_size], bias=conv_bias)
        self.norm = norm_op(output_channels, **(norm_op_kwargs or {})) if norm_op is not None else nn.Identity()
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x):
        return self.nonlin(self.norm(self.conv(x)))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        return np.prod([self.output_channels, *_spatial(input_size, self.stride)], dtype=np.int64)


class _ResidualBlock(nn.Module):
    """Shared plumbing: a projection shortcut (1x1 conv + norm) where shape changes."""

    expansion = 1

    def _make_skip(self, conv_op, input_channels, output_channels, stride, norm_op, norm_op_kwargs):
        if any(s != 1 for s in _as_tuple(stride, conv_dim(conv_op), "stride")) or input_channels != output_channels:
            return ConvNormAct(conv_op, input_channels, output_channels, 1, stride,
                               norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        return nn.Identity()

    def _skip_size(self, input_size) -> np.int64:
        if isinstance(self.skip, ConvNormAct):
            return self.skip.compute_conv_feature_map_size(input_size)
        return np.int64(0)


class BasicBlock(_ResidualBlock):
    """ResNet basic block (two 3x3 convs), as in HRNet stages 2-4.

    ``output_channels`` is the block's output width (``expansion = 1``). The stride sits
    on the first conv; the shortcut is a 1x1 conv + norm when stride or width change.
    """

    expansion = 1

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, output_channels: int,
                 stride: int | Sequence[int] = 1, norm_op: Type[nn.Module] | None = None,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = None,
                 nonlin_kwargs: dict | None = None):
        super().__init__()
        self.input_channels, self.output_channels = input_channels, output_channels
        self.conv1 = ConvNormAct(conv_op, input_channels, output_channels, 3, stride,
                                 norm_op=norm_op, norm_op_kwargs=norm_op_kwargs,
                                 nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.conv2 = ConvNormAct(conv_op, output_channels, output_channels, 3, 1,
                                 norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        self.skip = self._make_skip(conv_op, input_channels, output_channels, stride, norm_op, norm_op_kwargs)
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return self.nonlin(out + self.skip(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        out_size = _spatial(input_size, self.conv1.stride)
        return (self.conv1.compute_conv_feature_map_size(input_size)
                + self.conv2.compute_conv_feature_map_size(out_size) + self._skip_size(input_size))


class Bottleneck(_ResidualBlock):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, ``expansion = 4``), as in HRNet stage 1.

    ``planes`` is the inner width; the output width is ``planes * 4``. The stride sits on
    the 3x3 conv (ResNet v1.5, as in timm/torchvision).
    """

    expansion = 4

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, planes: int,
                 stride: int | Sequence[int] = 1, norm_op: Type[nn.Module] | None = None,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = None,
                 nonlin_kwargs: dict | None = None):
        super().__init__()
        out = planes * self.expansion
        self.input_channels, self.output_channels = input_channels, out
        act = dict(nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        self.conv1 = ConvNormAct(conv_op, input_channels, planes, 1, 1, **norm, **act)
        self.conv2 = ConvNormAct(conv_op, planes, planes, 3, stride, **norm, **act)
        self.conv3 = ConvNormAct(conv_op, planes, out, 1, 1, **norm)
        self.skip = self._make_skip(conv_op, input_channels, out, stride, norm_op, norm_op_kwargs)
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x):
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.nonlin(out + self.skip(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        out_size = _spatial(input_size, self.conv2.stride)
        return (self.conv1.compute_conv_feature_map_size(input_size)
                + self.conv2.compute_conv_feature_map_size(input_size)
                + self.conv3.compute_conv_feature_map_size(out_size) + self._skip_size(input_size))


#: block names used in stage configs (``networks/configs.py``)
BLOCK_TYPES: dict[str, type[_ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class BlockSequence(nn.Sequential):
    """``num_blocks`` residual blocks of one type; only the first changes width/stride."""

    def __init__(self, block: type[_ResidualBlock], num_blocks: int, conv_op: Type[_ConvNd],
                 input_channels: int, channels: int, stride: int | Sequence[int] = 1, **op_kwargs):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        blocks = [block(conv_op, input_channels, channels, stride, **op_kwargs)]
        for _ in range(1, num_blocks):
            blocks.append(block(conv_op, blocks[-1].output_channels, channels, 1, **op_kwargs))
        super().__init__(*blocks)
        self.output_channels = blocks[-1].output_channels

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        total = np.int64(0)
        for b in self:
            total += b.compute_conv_feature_map_size(input_size)
            input_size = _spatial(input_size, b.conv1.stride if isinstance(b, BasicBlock) else b.conv2.stride)
        return total
