"""Co-segmentation network: Siamese dilated ResNet, co-attention, decoder D1/D2 (co-seg paper Sec. 2.2).

Sec. 2.2: "The model consists of a Siamese encoder and decoder and utilizes an attention module
in the bottleneck layers. Using a pair of images as input, the model produces a mask for each
lesion." Encoder: :class:`~nnunet_ulseg.networks.dilated_resnet.DilatedResNet` (DRN / DRN-MG,
output stride 8), one set of weights for both images. Bottleneck:
:class:`~nnunet_ulseg.networks.coattention.CoAttention` (CSA default; Table 1/3 variants).
Decoders (Table 2), our reading of "D1 ... adopted from [16] with ... less convolutional layers"
and "D2 ... adopted from [20] [DeepLabv3+] and takes in both the attended and lower level
feature maps":

* D1: two 3x3 conv-norm-act on the attended stride-8 feature (``decoder_channels``), a 1x1
  classifier, bilinear upsampling x8;
* D2: D1's two convs, their output upsampled x2 to stride 4 and concatenated with the
  low-level feature projected by a 1x1 conv-norm-act to ``low_level_channels`` (48, as
  DeepLabv3+), two 3x3 conv-norm-act, 1x1 classifier, bilinear upsampling x4.

The paper's DCRF post-processing is not part of the network (and is not used with D2).

nnU-Net contract (docs/STYLE.md §2, §3, §6): keyword constructor as ``get_network_from_plans``
calls it; ``initialize`` staticmethod (He init); ``compute_conv_feature_map_size``;
``.decoder.deep_supervision`` exists for ``set_deep_supervision_enabled``, but the paper has
no deep supervision, so the output is always ONE tensor (``strides`` ``[[1, 1], [8, 8]]``
describes that single output, nnU-Net scales ``[[1, 1]]``).

Pair contract (with the co-segmentation trainer): ``forward(x)`` takes ``x`` of shape
``(2N, C, H, W)`` where samples ``2i`` and ``2i + 1`` form a pair and returns logits
``(2N, num_classes, H, W)``, sample ``2i``'s informed by ``2i + 1`` and vice versa. An odd batch
raises unless ``self_pair_when_odd`` is set (nnU-Net's predictor feeds single patches): then
the last, unpaired image is paired with itself. ``forward_pair(a, b) -> (y_a, y_b)``.
H and W must be multiples of 8.
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
from nnunet_ulseg.networks.coattention import CoAttention
from nnunet_ulseg.networks.dilated_resnet import MULTI_GRID, DilatedResNet, resolve_drn_config

NETWORK_CLASS_NAME = "nnunet_ulseg.networks.coseg.CoSegNet"
_KW_REQUIRES_IMPORT = ["conv_op", "norm_op", "nonlin"]
DECODERS = ("d1", "d2")
#: the single output's stride ladder in nnU-Net's terms (full resolution, then the divisor 8)
COSEG_STRIDES = [[1, 1], [8, 8]]


class CoSegDecoder(nn.Module):
    """D1 or D2 (see the module doc); ``forward(attended, low, out_size) -> logits``.

    Submodules: ``d1`` (two 3x3 conv-norm-act), for D2 also ``low_proj`` (1x1) and ``d2`` (two
    3x3 conv-norm-act), ``classifier`` (1x1 conv with bias). ``deep_supervision`` is stored
    for nnU-Net and changes nothing (one output).
    """

    def __init__(self, conv_op: Type[_ConvNd], high_channels: int, low_channels: int, num_classes: int,
                 decoder: str = "d2", decoder_channels: int = 256, low_level_channels: int = 48,
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None,
                 deep_supervision: bool = False):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {list(DECODERS)}")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        w = int(decoder_channels)
        self.kind, self.deep_supervision = decoder, bool(deep_supervision)
        self.d1 = nn.Sequential(ConvNormAct(conv_op, high_channels, w, 3, 1, **ops),
                                ConvNormAct(conv_op, w, w, 3, 1, **ops))
        if decoder == "d2":
            self.low_proj = ConvNormAct(conv_op, low_channels, int(low_level_channels), 1, 1, **ops)
            self.d2 = nn.Sequential(ConvNormAct(conv_op, w + int(low_level_channels), w, 3, 1, **ops),
                                    ConvNormAct(conv_op, w, w, 3, 1, **ops))
        self.classifier = conv_op(w, int(num_classes), 1)

    def forward(self, attended: torch.Tensor, low: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        y = self.d1(attended)
        if self.kind == "d2":
            y = F.interpolate(y, size=low.shape[2:], mode="bilinear", align_corners=False)
            y = self.d2(torch.cat([y, self.low_proj(low)], dim=1))
        return F.interpolate(self.classifier(y), size=tuple(out_size), mode="bilinear", align_corners=False)

    def compute_conv_feature_map_size(self, high_size: Sequence[int], low_size: Sequence[int]) -> np.int64:
        total = sum(m.compute_conv_feature_map_size(high_size) for m in self.d1)
        size = high_size
        if self.kind == "d2":
            total += self.low_proj.compute_conv_feature_map_size(low_size)
            total += sum(m.compute_conv_feature_map_size(low_size) for m in self.d2)
            size = low_size
        return np.int64(total + self.classifier.out_channels * int(np.prod(size, dtype=np.int64)))


def _dotted(op: type | None) -> str | None:
    return None if op is None else f"{op.__module__}.{op.__qualname__}"


def coseg_arch_kwargs(depth: str | dict = "resnet26", attention: str = "csa", decoder: str = "d2",
                      multi_grid: Sequence[int] | None = MULTI_GRID, channel_fusion: str = "mean",
                      conv_op: Type[_ConvNd] = nn.Conv2d, norm_op: Type[nn.Module] | None = nn.BatchNorm2d,
                      norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = nn.ReLU,
                      nonlin_kwargs: dict | None = None, decoder_channels: int = 256,
                      low_level_channels: int = 48, se_reduction: int = 16,
                      aspp_rates: Sequence[int] = (3, 6, 9)) -> tuple[dict, list[str]]:
    """``(arch_kwargs, _kw_requires_import)`` for a plans ``architecture`` block (docs/STYLE.md §3).

    JSON-serialisable: op types become dotted names that ``pydoc.locate`` resolves, an explicit
    layout dict is validated. Defaults: BatchNorm (eps 1e-5, momentum 0.1, affine; what the
    ImageNet ResNet weights carry statistics for), ReLU(inplace=True).
    """
    kwargs = {
        "depth": depth if isinstance(depth, str) else resolve_drn_config(depth),
        "attention": str(attention),
        "decoder": str(decoder),
        "multi_grid": None if multi_grid is None else [int(d) for d in multi_grid],
        "channel_fusion": str(channel_fusion),
        "conv_op": _dotted(conv_op),
        "norm_op": _dotted(norm_op),
        "norm_op_kwargs": dict(norm_op_kwargs) if norm_op_kwargs is not None
        else {"eps": 1e-5, "momentum": 0.1, "affine": True},
        "nonlin": _dotted(nonlin),
        "nonlin_kwargs": dict(nonlin_kwargs) if nonlin_kwargs is not None else {"inplace": True},
        "decoder_channels": int(decoder_channels),
        "low_level_channels": int(low_level_channels),
        "se_reduction": int(se_reduction),
        "aspp_rates": [int(r) for r in aspp_rates],
        "strides": [list(s) for s in COSEG_STRIDES],
    }
    return kwargs, list(_KW_REQUIRES_IMPORT)


class CoSegNet(nn.Module):
    """The co-segmentation network (Sec. 2.2) with nnU-Net's DNA constructor style.

    :param input_channels: image channels (>= 1).
    :param num_classes: output channels (nnU-Net's ``num_segmentation_heads``).
    :param depth: encoder layout (``resnet101`` paper, ``resnet50``, ``resnet26``, ``resnet_lite``
        or a dict; :data:`~nnunet_ulseg.networks.dilated_resnet.DRN_CONFIGS`).
    :param attention: ``csa`` (default), ``eca``, ``aspp``, ``eca_aspp``, ``danet``, ``none``.
    :param decoder: ``d2`` (DeepLabv3+-style, Table 3) or ``d1``.
    :param multi_grid: last-stage dilations (``(2, 4, 8)``, DRN-MG) or None (DRN).
    :param channel_fusion: ``mean`` or ``cross``; see :mod:`~nnunet_ulseg.networks.coattention`.
    :param deep_supervision: stored on ``decoder``; the output is one tensor regardless.
    :param strides: must be ``[[1, 1], [8, 8]]`` or None (a description for nnU-Net, not a knob).
    """

    size_divisor = 8

    def __init__(self, input_channels: int, num_classes: int, depth: str | dict = "resnet26",
                 attention: str = "csa", decoder: str = "d2", multi_grid: Sequence[int] | None = MULTI_GRID,
                 channel_fusion: str = "mean", conv_op: Type[_ConvNd] = nn.Conv2d,
                 norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None,
                 decoder_channels: int = 256, low_level_channels: int = 48, se_reduction: int = 16,
                 aspp_rates: Sequence[int] = (3, 6, 9), deep_supervision: bool = False,
                 strides: Sequence[Sequence[int]] | None = None):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if strides is not None and [[int(s) for s in row] for row in strides] != COSEG_STRIDES:
            raise ValueError(f"strides {strides!r} do not describe CoSegNet's single stride-1 output; "
                             f"they must be {COSEG_STRIDES} (or None)")
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.strides = [list(s) for s in COSEG_STRIDES]
        self.num_classes = int(num_classes)
        #: pair an odd batch's last image with itself instead of raising (single-image inference)
        self.self_pair_when_odd = False
        self.encoder = DilatedResNet(input_channels, depth, multi_grid, conv_op, **ops)
        self.attention = CoAttention(conv_op, self.encoder.high_channels, attention, channel_fusion,
                                     se_reduction, aspp_rates, **ops)
        self.decoder = CoSegDecoder(conv_op, self.attention.output_channels, self.encoder.low_channels,
                                    self.num_classes, decoder, decoder_channels, low_level_channels, **ops,
                                    deep_supervision=deep_supervision)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"CoSegNet expects (2N, c, h, w) input, got shape {tuple(x.shape)}")
        if any(int(s) % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"CoSegNet needs height and width divisible by {self.size_divisor}, got "
                             f"{tuple(x.shape[2:])}; use a patch size that is a multiple of {self.size_divisor}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an interleaved pair batch ``[a_0, b_0, a_1, b_1, ...]`` (see the module doc)."""
        self._check(x)
        n = x.shape[0]
        if n % 2:
            if not self.self_pair_when_odd:
                raise ValueError(f"CoSegNet needs an even batch of interleaved pairs (2i with 2i+1), got "
                                 f"batch size {n}; set self_pair_when_odd = True to pair the last image "
                                 f"with itself")
            x = torch.cat([x, x[-1:]], dim=0)
        low, high = self.encoder(x)
        ga, gb = self.attention(high[0::2], high[1::2])
        attended = torch.stack([ga, gb], dim=1).flatten(0, 1)  # back to the interleaved order
        return self.decoder(attended, low, x.shape[2:])[:n]

    def forward_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_a, y_b)`` for two equally shaped batches ``a``, ``b`` (``a[i]`` paired with ``b[i]``)."""
        if a.shape != b.shape:
            raise ValueError(f"forward_pair needs equally shaped inputs, got {tuple(a.shape)} and {tuple(b.shape)}")
        y = self(torch.stack([a, b], dim=1).flatten(0, 1))
        return y[0::2], y[1::2]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements (batch 1, i.e. per image) of all conv outputs plus the attention maps."""
        if len(input_size) != 2:
            raise ValueError("give the 2D image size (h, w) without batch or channel axes")
        low = [int(s) // 4 for s in input_size]
        high = [int(s) // 8 for s in input_size]
        return np.int64(self.encoder.compute_conv_feature_map_size(input_size)
                        + self.attention.compute_conv_feature_map_size(high)
                        + self.decoder.compute_conv_feature_map_size(high, low))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He init (``InitWeights_He(1e-2)``) for convs; norms keep PyTorch's; DANet's
        ``gamma`` stays 0. Pretrained encoder weights
        (:func:`~nnunet_ulseg.networks.dilated_resnet.load_pretrained_drn`) are loaded after."""
        InitWeights_He(1e-2)(module)
