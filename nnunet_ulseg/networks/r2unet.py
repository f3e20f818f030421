"""R2UNet: Res2Net encoder, 32-channel compression, UNet-like decoder (E²Net Sec. 2, Fig. 2(a)).

Paper: "we pad two convolutional layers with 32 1x1 and 3x3 kernels to each feature F^i to
compress it to 32 channels. All compressed features are sent to a decoder similar to UNet
except all convolutional layers having 32 kernels." Our wiring (``C`` = ``channels`` = 32)::

    [F^1..F^5] = Res2NetBackbone(x)                      # strides 2, 4, 8, 16, 32
    c_i = conv3x3(conv1x1(F^i))                          # C channels each   (self.compress)
    d_5 = c_5
    d_i = conv3x3(conv3x3([up(d_{i+1}), c_i]))  i=4..1   # UNet level: 2 convs, [a, b] concat
    d_0 = conv3x3(up(d_1))                               # full resolution
    logits = seg1x1(d_0)

Open choices, documented: ``up`` is bilinear x2 upsampling (``align_corners=False``), the
paper names no learned upsampling and DCFF (``dcff.py``) upsamples the same way; each UNet
level has UNet's two 3x3 convs; F^1 sits at stride 2, so one more x2 upsampling and a 3x3
conv bring the decoder to the input resolution, where the 1x1 head gives logits (the paper's
s is their sigmoid). Every conv is conv -> norm -> nonlin except the head (bias, nothing after).

The stages are exposed for E²Net, which refines the compressed features of two R2UNets
with DCFF before decoding them and fuses their full-resolution decoder features:
:meth:`R2UNet.encode` (the compressed ``[c_1..c_5]``) and
:meth:`R2UNetDecoder.decode` (logits and the per-scale decoder features ``[d_0..d_5]``).

nnU-Net contract as AHRNet (docs/STYLE.md §2, §3, §6): ``network.decoder.deep_supervision``
on -> ``[logits]`` (one full-resolution output, ``strides`` ``[[1, 1], [32, 32]]``), off -> the
tensor; ``initialize``; ``compute_conv_feature_map_size``. Height and width must be multiples
of 32.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_ulseg.networks.blocks import ConvNormAct
from nnunet_ulseg.networks.res2net import Res2NetBackbone

NETWORK_CLASS_NAME = "nnunet_ulseg.networks.r2unet.R2UNet"
SIZE_DIVISOR = 32
#: nnU-Net ``strides``: one full-resolution output; the product (32) is the patch divisor
R2UNET_STRIDES = [[1, 1], [SIZE_DIVISOR, SIZE_DIVISOR]]
KW_REQUIRES_IMPORT = ["conv_op", "norm_op", "nonlin"]


def _area(channels: int, size: Sequence[int]) -> np.int64:
    return np.prod([channels, *size], dtype=np.int64)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, the decoder's and DCFF's upsampling."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def check_size(x: torch.Tensor, name: str, divisor: int = SIZE_DIVISOR) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(b, c, h, w)`` with ``h``, ``w`` multiples of ``divisor``."""
    if x.ndim != 4:
        raise ValueError(f"{name} expects (b, c, h, w) input, got shape {tuple(x.shape)}")
    if any(int(s) % divisor for s in x.shape[2:]):
        raise ValueError(f"{name} needs height and width divisible by {divisor}, got {tuple(x.shape[2:])}; "
                         f"use a patch size that is a multiple of {divisor}")


def dotted(op: type | None) -> str | None:
    """``module.QualName`` of an op type, for plans ``arch_kwargs`` (``pydoc.locate`` reads it back)."""
    return None if op is None else f"{op.__module__}.{op.__qualname__}"


def op_kwargs(conv_op: Type[_ConvNd], norm_op: Type[nn.Module] | None, norm_op_kwargs: dict | None,
              nonlin: Type[nn.Module] | None, nonlin_kwargs: dict | None) -> dict:
    """The JSON op entries of an R2UNet/E2Net ``arch_kwargs``. Defaults as AHRNet's: BatchNorm
    (eps 1e-5, momentum 0.1, affine; Res2Net's own norm, whose ImageNet statistics the pretrained
    weights carry), ReLU(inplace=True)."""
    return {"conv_op": dotted(conv_op), "norm_op": dotted(norm_op),
            "norm_op_kwargs": dict(norm_op_kwargs) if norm_op_kwargs is not None
            else {"eps": 1e-5, "momentum": 0.1, "affine": True},
            "nonlin": dotted(nonlin),
            "nonlin_kwargs": dict(nonlin_kwargs) if nonlin_kwargs is not None else {"inplace": True}}


def r2unet_arch_kwargs(backbone: str | dict = "res2net_lite", conv_op: Type[_ConvNd] = nn.Conv2d,
                       norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                       nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None,
                       channels: int = 32) -> tuple[dict, list[str]]:
    """``(arch_kwargs, _kw_requires_import)`` of R2UNet (stage 1) for a plans ``architecture`` block."""
    from nnunet_ulseg.networks.res2net import resolve_res2net_config
    kwargs = {"backbone": backbone if isinstance(backbone, str) else resolve_res2net_config(backbone),
              **op_kwargs(conv_op, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs),
              "channels": int(channels), "strides": [list(r) for r in R2UNET_STRIDES]}
    return kwargs, list(KW_REQUIRES_IMPORT)


class FeatureCompression(nn.ModuleList):
    """One ``1x1 conv -> 3x3 conv`` (each + norm + nonlin) per backbone scale, to ``channels``."""

    def __init__(self, conv_op: Type[_ConvNd], input_channels: Sequence[int], channels: int = 32, **ops):
        super().__init__(nn.Sequential(ConvNormAct(conv_op, int(c), channels, 1, 1, **ops),
                                       ConvNormAct(conv_op, channels, channels, 3, 1, **ops))
                         for c in input_channels)
        self.channels = channels

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [m(f) for m, f in zip(self, feats)]

    def compute_conv_feature_map_size(self, sizes: Sequence[Sequence[int]]) -> np.int64:
        """``sizes``: the spatial size of every scale."""
        return np.int64(sum(2 * _area(self.channels, s) for s in sizes))


class R2UNetDecoder(nn.Module):
    """The UNet-like 32-channel decoder (see the module docstring) and the 1x1 head.

    ``stages[i]`` (i = 0..levels-2) merges the upsampled coarser map with the skip ``c_{i+1}``
    (two 3x3 convs, ``2C -> C -> C``), ``stages[-1]`` is the full-resolution 3x3 conv.
    """

    def __init__(self, conv_op: Type[_ConvNd], num_classes: int, channels: int = 32, levels: int = 5,
                 deep_supervision: bool = False, **ops):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.channels, self.num_classes, self.levels = channels, int(num_classes), levels
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList(nn.Sequential(ConvNormAct(conv_op, 2 * channels, channels, 3, 1, **ops),
                                                  ConvNormAct(conv_op, channels, channels, 3, 1, **ops))
                                    for _ in range(levels - 1))
        self.stages.append(ConvNormAct(conv_op, channels, channels, 3, 1, **ops))
        self.seg_layer = conv_op(channels, self.num_classes, 1, 1, 0, bias=True)

    def decode(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits, [d_0 (input resolution), d_1 (1/2), ..., d_L (coarsest)])`` from ``[c_1..c_L]``."""
        if len(feats) != self.levels:
            raise ValueError(f"the decoder needs {self.levels} feature scales, got {len(feats)}")
        d = feats[-1]
        out = [d]
        for i in range(self.levels - 2, -1, -1):
            d = self.stages[i](torch.cat([up2(d), feats[i]], dim=1))
            out.append(d)
        d = self.stages[-1](up2(d))
        out.append(d)
        return self.seg_layer(d), out[::-1]

    def forward(self, feats: Sequence[torch.Tensor]):
        logits = self.decode(feats)[0]
        return [logits] if self.deep_supervision else logits

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """``input_size`` is the network input's (h, w)."""
        total = np.int64(0)
        for i in range(1, self.levels):  # merge levels at 1/2 .. 1/2^(levels-1)
            total += 2 * _area(self.channels, [int(s) >> i for s in input_size])
        return total + _area(self.channels, input_size) + _area(self.num_classes, input_size)


class R2UNet(nn.Module):
    """R2UNet (E²Net Sec. 2, Fig. 2(a)): stage 1's coarse liver network and E²Net's branches.

    :param input_channels: image channels (>= 1).
    :param num_classes: output channels.
    :param backbone: Res2Net layout name (``"res2net50_26w_4s"`` is the paper's Res2Net-50,
        ``"res2net_lite"`` the CPU one) or layout dict, see :mod:`nnunet_ulseg.networks.res2net`.
    :param channels: width of the compression and the decoder (32 in the paper).
    :param deep_supervision: ``[logits]`` instead of ``logits``.
    :param strides: must equal :data:`R2UNET_STRIDES` (or be None); a description of the
        output for nnU-Net, not a knob.
    """

    def __init__(self, input_channels: int, num_classes: int, backbone: str | dict = "res2net_lite",
                 conv_op: Type[_ConvNd] = nn.Conv2d, norm_op: Type[nn.Module] | None = nn.BatchNorm2d,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = nn.ReLU,
                 nonlin_kwargs: dict | None = None, channels: int = 32, deep_supervision: bool = False,
                 strides: Sequence[Sequence[int]] | None = None):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if strides is not None and [[int(s) for s in row] for row in strides] != R2UNET_STRIDES:
            raise ValueError(f"strides {strides!r} do not describe R2UNet's output; they must be "
                             f"{R2UNET_STRIDES} (or None)")
        self.strides = [list(r) for r in R2UNET_STRIDES]
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.encoder = Res2NetBackbone(input_channels, backbone, conv_op, **ops)
        self.compress = FeatureCompression(conv_op, self.encoder.output_channels, int(channels), **ops)
        self.decoder = R2UNetDecoder(conv_op, num_classes, int(channels), len(self.encoder.output_channels),
                                     deep_supervision, **ops)
        self.num_classes, self.channels = int(num_classes), int(channels)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The compressed features ``[c_1..c_5]`` (``channels`` each, strides 2..32)."""
        check_size(x, type(self).__name__)
        return self.compress(self.encoder(x))

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encode(x))

    def feature_sizes(self, input_size: Sequence[int]) -> list[list[int]]:
        """Spatial size of each backbone scale for an input of ``input_size``."""
        return [[int(s) // st for s in input_size] for st in self.encoder.output_strides]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements (batch 1) of all conv outputs: backbone, compression, decoder and head."""
        if len(input_size) != 2:
            raise ValueError("give the 2D image size (h, w) without batch or channel axes")
        return (self.encoder.compute_conv_feature_map_size(input_size)
                + self.compress.compute_conv_feature_map_size(self.feature_sizes(input_size))
                + self.decoder.compute_conv_feature_map_size(input_size))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He init (``InitWeights_He(1e-2)``); pretrained Res2Net weights
        (:func:`~nnunet_ulseg.networks.res2net.load_pretrained_res2net`) are loaded after."""
        InitWeights_He(1e-2)(module)
