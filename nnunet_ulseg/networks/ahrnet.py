"""AHRNet: HRNet + decoder (DE) + dual attention (DA) + scale attention (SA), AHRNet Sec. 2.1.

Data flow (Fig. 1)::

    x -> HRNetBackbone -> [F_1..F_4] (1/4..1/32)
      -> [ScaleAttention] -> upsample to 1/4 + concat         (MultiScaleFusion)
      -> [DualAttention]                                       (self.attention)
      -> DEDecoder -> [p3 (1), p2 (1/2), p1 (1/4)]   or   BaselineHead -> logits (1)

Ablation switches (Table 2): row 1 ``decoder=dual_attention=scale_attention=False``
(HRNet baseline), row 2 ``decoder=True``, row 3 ``+ dual_attention``, row 4 all ``True``
(AHRNet). Other combinations are valid too (DA/SA in front of the baseline head).

nnU-Net contract (docs/STYLE.md §2, §3, §6): keyword constructor ``AHRNet(input_channels,
num_classes, **arch_kwargs, deep_supervision=...)`` as ``get_network_from_plans`` calls it;
``network.decoder.deep_supervision`` switches between the list output (full resolution
first) and one tensor; all heads are always built (identical state dict keys);
``initialize`` is a staticmethod; ``compute_conv_feature_map_size``; ``strides``
describes the outputs so that nnU-Net's ``_get_deep_supervision_scales`` downsamples the
targets to the output resolutions (see :func:`deep_supervision_strides`).

Normalisation default: ``nn.BatchNorm2d`` (HRNet's own choice and what the ImageNet
weights the paper starts from carry statistics for; nnU-Net converts it to SyncBatchNorm
under DDP). ``nn.InstanceNorm2d`` with ``affine=True`` (nnU-Net's default) works too;
pretrained loading then skips the running statistics.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_ulseg.networks.attention import DualAttention
from nnunet_ulseg.networks.heads import BaselineHead, DEDecoder, MultiScaleFusion
from nnunet_ulseg.networks.hrnet import HRNetBackbone

NETWORK_CLASS_NAME = "nnunet_ulseg.networks.ahrnet.AHRNet"
_KW_REQUIRES_IMPORT = ["conv_op", "norm_op", "nonlin"]


def deep_supervision_strides(decoder: bool = True, size_divisor: int = 32, stem_stride: int = 4) -> list[list[int]]:
    """The ``strides`` arch kwarg: AHRNet's output resolution ladder in nnU-Net's terms.

    Entry 0 is the full-resolution output (stride 1); each next entry is the stride from
    one output to the next lower-resolution one; the last entry is the remaining stride to
    the deepest backbone level (1/``size_divisor``), which has no output, just like the
    bottleneck of nnU-Net's U-Net. nnU-Net's ``_get_deep_supervision_scales`` computes
    ``1 / cumprod(strides)[:-1]``, so:

    * DE decoder: ``[[1, 1], [2, 2], [2, 2], [8, 8]]`` -> ``[[1, 1], [.5, .5], [.25, .25]]``
      for ``[p3, p2, p1]``;
    * baseline head: ``[[1, 1], [32, 32]]`` -> ``[[1, 1]]`` (one output);
    * stride-2 stem (``size_divisor`` 16): ``[[1, 1], [2, 2], [8, 8]]`` -> ``[[1, 1], [.5, .5]]``.

    The product over all entries is the patch-size divisor (32, or 16 with a stride-2 stem).
    """
    if decoder:
        return [[1, 1]] + [[2, 2]] * _decoder_levels(stem_stride)[1] + [[size_divisor // stem_stride] * 2]
    return [[1, 1], [size_divisor] * 2]


def _decoder_levels(stem_stride: int) -> tuple[int, int]:
    """``(levels, upsamplings)`` of the DE decoder behind a stem of ``stem_stride`` (4 -> 3 outputs)."""
    ups = {2: 1, 4: 2}.get(int(stem_stride))
    if ups is None:
        raise ValueError(f"stem_stride must be 2 or 4, got {stem_stride}")
    return ups + 1, ups


def deep_supervision_scales(decoder: bool = True, stem_stride: int = 4) -> list[list[float]]:
    """Output resolutions relative to the input, in output order (full resolution first)."""
    if not decoder:
        return [[1.0, 1.0]]
    return [[0.5 ** k] * 2 for k in range(_decoder_levels(stem_stride)[0])]


def _dotted(op: type | None) -> str | None:
    return None if op is None else f"{op.__module__}.{op.__qualname__}"


def ahrnet_arch_kwargs(config: str | dict = "w32", decoder: bool = True, dual_attention: bool = True,
                       scale_attention: bool = True, conv_op: Type[_ConvNd] = nn.Conv2d,
                       norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                       nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None,
                       decoder_channels: int = 32, se_reduction: int = 16,
                       stem_stride: int = 4, edge_head: bool = False) -> tuple[dict, list[str]]:
    """``(arch_kwargs, _kw_requires_import)`` for a plans ``architecture`` block (docs/STYLE.md §3).

    JSON-serialisable: op types become dotted names that ``pydoc.locate`` resolves.
    Defaults: BatchNorm (eps 1e-5, momentum 0.1, affine), ReLU(inplace=True), as in HRNet.
    ``strides`` is :func:`deep_supervision_strides` for the chosen head. ``edge_head`` is written only
    when on, so the plans of every other AHRNet stay as they were.
    """
    from nnunet_ulseg.networks.configs import resolve_hrnet_config
    kwargs = {
        "config": config if isinstance(config, str) else resolve_hrnet_config(config),
        "conv_op": _dotted(conv_op),
        "norm_op": _dotted(norm_op),
        "norm_op_kwargs": dict(norm_op_kwargs) if norm_op_kwargs is not None
        else {"eps": 1e-5, "momentum": 0.1, "affine": True},
        "nonlin": _dotted(nonlin),
        "nonlin_kwargs": dict(nonlin_kwargs) if nonlin_kwargs is not None else {"inplace": True},
        "decoder": bool(decoder),
        "dual_attention": bool(dual_attention),
        "scale_attention": bool(scale_attention),
        "decoder_channels": int(decoder_channels),
        "se_reduction": int(se_reduction),
        "stem_stride": int(stem_stride),
        "strides": deep_supervision_strides(decoder, 32 * stem_stride // 4, stem_stride),
    }
    if edge_head:
        kwargs["edge_head"] = True
    return kwargs, list(_KW_REQUIRES_IMPORT)


class AHRNet(nn.Module):
    """AHRNet (Sec. 2.1) with nnU-Net's dynamic-network-architectures constructor style.

    :param input_channels: image channels (>= 1).
    :param num_classes: output channels (nnU-Net's ``num_segmentation_heads``).
    :param config: HRNet config name (``"w18"``, ``"w32"`` (paper), ``"w48"``) or stage dict.
    :param decoder: DE decoder (Table 2 row 2) instead of the 1x1 baseline head.
    :param dual_attention: DA on the fused 1/4 features (row 3).
    :param scale_attention: SA on F_1..F_4 before fusion (row 4).
    :param deep_supervision: list output ``[p3, p2, p1]`` instead of ``p3``.
    :param strides: must equal :func:`deep_supervision_strides` for ``decoder`` (or be None);
        it is a description of the outputs for nnU-Net, not a knob.
    :param decoder_channels: width of DE's convs (32 in the paper).
    :param se_reduction: SE reduction of the scale-attention branches.
    :param stem_stride: 4 (HRNet, the paper) or 2 (every branch at twice the resolution, for
        small crops; the DE decoder then has two outputs, at 1 and 1/2). See ``HRNetBackbone``.
    :param edge_head: an E²Net-style edge head (E²Net Sec. 2.3, for the weak-label lesion trainers):
        a second head of the decoder's kind with one output channel (``self.edge_decoder``) on the same
        fused features; with deep supervision on its full-resolution edge logits are appended as the
        LAST element of the output list (``[p3, p2, p1, e]``), so ``output[0]`` stays the segmentation
        that nnU-Net's validation reads; off (inference) the output is ``p3`` alone. Default off: no
        extra module, the state dict is unchanged.

    Input height and width must be multiples of ``size_divisor`` (32, or 16 with stem stride 2).
    """

    def __init__(self, input_channels: int, num_classes: int, config: str | dict = "w32",
                 conv_op: Type[_ConvNd] = nn.Conv2d, norm_op: Type[nn.Module] | None = nn.BatchNorm2d,
                 norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = nn.ReLU,
                 nonlin_kwargs: dict | None = None, decoder: bool = True, dual_attention: bool = True,
                 scale_attention: bool = True, deep_supervision: bool = False,
                 strides: Sequence[Sequence[int]] | None = None, decoder_channels: int = 32,
                 se_reduction: int = 16, stem_stride: int = 4, edge_head: bool = False):
        super().__init__()
        if not (isinstance(conv_op, type) and issubclass(conv_op, nn.Conv2d)):
            raise ValueError(f"AHRNet is 2D only: conv_op must be nn.Conv2d, got {conv_op!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.encoder = HRNetBackbone(input_channels, config, conv_op, **ops, stem_stride=stem_stride)
        self.size_divisor = max(self.encoder.output_strides)
        expected = deep_supervision_strides(decoder, self.size_divisor, stem_stride)
        if strides is not None and [[int(s) for s in row] for row in strides] != expected:
            raise ValueError(f"strides {strides!r} do not describe this network's outputs; with "
                             f"decoder={decoder} they must be {expected} (or None)")
        self.strides = expected
        self.num_classes = int(num_classes)
        self.use_decoder, self.use_dual_attention, self.use_scale_attention = \
            bool(decoder), bool(dual_attention), bool(scale_attention)
        self.fusion = MultiScaleFusion(conv_op, self.encoder.output_channels, scale_attention, se_reduction,
                                       nonlin, nonlin_kwargs)
        width = self.fusion.output_channels
        if dual_attention:
            self.attention = DualAttention(conv_op, width, **ops)
            width = self.attention.output_channels
        else:
            self.attention = nn.Identity()
        if decoder:
            self.decoder = DEDecoder(conv_op, width, self.num_classes, decoder_channels, **ops,
                                     deep_supervision=deep_supervision, levels=_decoder_levels(stem_stride)[0])
        else:
            self.decoder = BaselineHead(conv_op, width, self.num_classes, self.encoder.output_strides[0],
                                        deep_supervision=deep_supervision)
        self.use_edge_head = bool(edge_head)
        if edge_head:
            self.edge_decoder = (DEDecoder(conv_op, width, 1, decoder_channels, **ops,
                                           levels=_decoder_levels(stem_stride)[0]) if decoder
                                 else BaselineHead(conv_op, width, 1, self.encoder.output_strides[0]))

    def _check_size(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"AHRNet expects (b, c, h, w) input, got shape {tuple(x.shape)}")
        if any(int(s) % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"AHRNet needs height and width divisible by {self.size_divisor}, got "
                             f"{tuple(x.shape[2:])}; use a patch size that is a multiple of {self.size_divisor}")

    def forward(self, x: torch.Tensor):
        self._check_size(x)
        feats = self.attention(self.fusion(self.encoder(x)))
        out = self.decoder(feats)
        if self.use_edge_head and self.decoder.deep_supervision:
            out = list(out) + [self.edge_decoder(feats)]
        return out

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements (batch 1) of all conv/deconv outputs, the fused map and the DA attention maps."""
        if len(input_size) != 2:
            raise ValueError("give the 2D image size (h, w) without batch or channel axes")
        quarter = [int(s) // self.encoder.output_strides[0] for s in input_size]
        total = self.encoder.compute_conv_feature_map_size(input_size)
        total += self.fusion.compute_conv_feature_map_size(quarter)
        if isinstance(self.attention, DualAttention):
            total += self.attention.compute_conv_feature_map_size(quarter)
        if self.use_edge_head:
            total += self.edge_decoder.compute_conv_feature_map_size(quarter)
        return total + self.decoder.compute_conv_feature_map_size(quarter)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He init (``InitWeights_He(1e-2)``) for convs and deconvs; norms keep
        PyTorch's (weight 1, bias 0) and the DA ``gamma`` stays 0. Pretrained backbone
        weights (:func:`~nnunet_ulseg.networks.pretrained.load_pretrained_hrnet`) are loaded after."""
        InitWeights_He(1e-2)(module)
