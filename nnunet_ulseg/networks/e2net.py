"""E²Net: segmentation branch + edge branch + DCFF + fusion (E²Net Sec. 2, Fig. 2(a)-(c), Table 3).

Data flow of the full model (Fig. 2(c))::

    F_1 = seg_branch.encode(x)        F_2 = edge_branch.encode(x)      # compressed, 32 ch, strides 2..32
    F'_1, F'_2 = dcff(F_1, F_2)                                        # dcff.py, Fig. 2(d)
    s1, D_1 = seg_branch.decoder.decode(F'_1)                          # s^1 and decoder features
    e,  D_2 = edge_branch.decoder.decode(F'_2)                         # e (one edge map per class)
    s2 = decoder.seg_layer(decoder.fuse([D_1[0], D_2[0]]))             # s^2, the fusion step

Both branches are R2UNets (:mod:`nnunet_ulseg.networks.r2unet`) with their own weights
("This branch has the same architecture as the aforementioned R2UNet", "their weights are
not shared"). The fusion step follows Fig. 2(b): "fuse these features by concatenating them
channel-wisely for the final liver and tumor segmentation"; we concatenate the two branches'
full-resolution decoder features and apply one 3x3 conv (+ norm + nonlin, 32 kernels) and a
1x1 head. s^2 is the final result (Sec. 3, "Evaluation Criteria").

Table 3 switches (:data:`TABLE3_ROWS`):

* ``baseline``: ``edge_branch=False`` (R2UNet alone, Sec. 3 "using the model (R2UNet) of the
  first stage as the baseline"): no edge head, no DCFF, no fusion step; s^2 IS s^1.
* ``edge`` / ``dist``: ``edge_branch=True, dcff=False``, Fig. 2(b): the branches only meet in
  the fusion step (concatenation), so s^2 is a real fusion output.
* ``edge_dcff`` / ``dist_dcff``: ``edge_branch=True, dcff=True``, Fig. 2(c), E²Net.

``edge`` and ``dist`` differ only in the edge TARGET (binary edge vs. the edge distance map,
built by the loss), so they build the same network.

nnU-Net contract (docs/STYLE.md §2, §3, §6; fixed with the trainer):

* ``net.decoder.deep_supervision`` True: ``forward(x)`` returns the tuple ``(s2, s1, e)`` of
  logits ``[B, num_classes, H, W]`` at input resolution, in the order of Eq. 3's terms that the
  trainer weights; for the baseline it is ``(s1, s1, None)`` (same tensor twice, no edge),
  so the tuple has the same arity in every row.
* False (inference, nnU-Net's predictor): ``s2`` only, one tensor.
* All layers are built whatever ``deep_supervision`` is, so the state dict does not depend on
  it. ``strides`` is ``[[1, 1], [1, 1], [1, 1], [32, 32]]``: nnU-Net's
  ``_get_deep_supervision_scales`` (``1 / cumprod(strides)[:-1]``) then gives three
  full-resolution scales, one per tuple entry, and the product 32 is the patch divisor.
* ``initialize`` (He, as nnU-Net), ``compute_conv_feature_map_size``; input height and width
  must be multiples of 32.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_ulseg.networks.blocks import ConvNormAct
from nnunet_ulseg.networks.dcff import DeepCrossFeatureFusion
from nnunet_ulseg.networks.r2unet import SIZE_DIVISOR, R2UNet, check_size, r2unet_arch_kwargs

NETWORK_CLASS_NAME = "nnunet_ulseg.networks.e2net.E2Net"
#: three full-resolution outputs (s2, s1, e); the product is the patch-size divisor 32
E2NET_STRIDES = [[1, 1], [1, 1], [1, 1], [SIZE_DIVISOR, SIZE_DIVISOR]]
#: network switches of Table 3's second-stage rows (edge vs. dist is the loss's target choice)
TABLE3_ROWS: dict[str, dict[str, bool]] = {
    "baseline": {"edge_branch": False, "dcff": False},
    "edge": {"edge_branch": True, "dcff": False},
    "dist": {"edge_branch": True, "dcff": False},
    "edge_dcff": {"edge_branch": True, "dcff": True},
    "dist_dcff": {"edge_branch": True, "dcff": True},
}


def e2net_arch_kwargs(backbone: str | dict = "res2net_lite", edge_branch: bool = True, dcff: bool = True,
                      conv_op: Type[_ConvNd] = nn.Conv2d, norm_op: Type[nn.Module] | None = nn.BatchNorm2d,
                      norm_op_kwargs: dict | None = None, nonlin: Type[nn.Module] | None = nn.ReLU,
                      nonlin_kwargs: dict | None = None, channels: int = 32) -> tuple[dict, list[str]]:
    """``(arch_kwargs, _kw_requires_import)`` for a plans ``architecture`` block (docs/STYLE.md §3).

    JSON-serialisable (op types as dotted names for ``pydoc.locate``; defaults in
    :func:`~nnunet_ulseg.networks.r2unet.op_kwargs`). A named ``backbone`` stays a name.
    """
    if dcff and not edge_branch:
        raise ValueError("dcff=True needs edge_branch=True (DCFF fuses the two branches)")
    kwargs, req = r2unet_arch_kwargs(backbone, conv_op, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs, channels)
    kwargs.update({"edge_branch": bool(edge_branch), "dcff": bool(dcff),
                   "strides": [list(r) for r in E2NET_STRIDES]})
    return kwargs, req


class E2NetFusionHead(nn.Module):
    """The fusion step (Fig. 2(b)/(c)) and the output switch nnU-Net toggles (``deep_supervision``).

    It is E2Net's ``decoder`` attribute because nnU-Net's ``set_deep_supervision_enabled``
    sets ``network.decoder.deep_supervision``. With ``fuse`` it owns ``fuse`` (3x3 conv on the
    concatenated full-resolution features, ``2C -> C``) and ``seg_layer`` (1x1 to
    ``num_classes``); without (baseline) it has no parameters and s^2 = s^1.
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int, num_classes: int, fuse: bool,
                 deep_supervision: bool = False, **ops):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.channels, self.num_classes = int(channels), int(num_classes)
        if fuse:
            self.fuse = ConvNormAct(conv_op, 2 * self.channels, self.channels, 3, 1, **ops)
            self.seg_layer = conv_op(self.channels, self.num_classes, 1, 1, 0, bias=True)
        else:
            self.fuse = self.seg_layer = None

    def forward(self, s1: torch.Tensor, e: torch.Tensor | None, seg_features: torch.Tensor,
                edge_features: torch.Tensor | None):
        if self.fuse is None:
            s2 = s1
        else:
            s2 = self.seg_layer(self.fuse(torch.cat([seg_features, edge_features], dim=1)))
        return (s2, s1, e) if self.deep_supervision else s2

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        if self.fuse is None:
            return np.int64(0)
        return np.prod([self.channels + self.num_classes, *input_size], dtype=np.int64)


class E2Net(nn.Module):
    """E²Net (Sec. 2, Fig. 2(c)) and its Table 3 ablations, DNA constructor style.

    :param input_channels: image channels (>= 1).
    :param num_classes: output channels of s^1, e and s^2 (one edge map per class).
    :param backbone: Res2Net layout of both branches (``"res2net50_26w_4s"``: the paper's
        Res2Net-50; ``"res2net_lite"``: CPU default), see :mod:`nnunet_ulseg.networks.res2net`.
    :param edge_branch: build the edge branch and the fusion step (Table 3 ``+ edge``/``+ dist``).
    :param dcff: refine both branches' features with DCFF (``+ DCFF``); needs ``edge_branch``.
    :param channels: width of compression, decoders, DCFF and fusion (32 in the paper).
    :param deep_supervision: ``(s2, s1, e)`` instead of ``s2``.
    :param strides: must equal :data:`E2NET_STRIDES` (or be None); describes the outputs for
        nnU-Net, not a knob.

    Submodules: ``seg_branch``, ``edge_branch`` (or None), ``dcff`` (or None), ``decoder``
    (:class:`E2NetFusionHead`).
    """

    def __init__(self, input_channels: int, num_classes: int, backbone: str | dict = "res2net_lite",
                 edge_branch: bool = True, dcff: bool = True, conv_op: Type[_ConvNd] = nn.Conv2d,
                 norm_op: Type[nn.Module] | None = nn.BatchNorm2d, norm_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = nn.ReLU, nonlin_kwargs: dict | None = None,
                 channels: int = 32, deep_supervision: bool = False,
                 strides: Sequence[Sequence[int]] | None = None):
        super().__init__()
        if dcff and not edge_branch:
            raise ValueError("dcff=True needs edge_branch=True (DCFF fuses the two branches)")
        if strides is not None and [[int(s) for s in row] for row in strides] != E2NET_STRIDES:
            raise ValueError(f"strides {strides!r} do not describe E2Net's outputs (s2, s1, e); they "
                             f"must be {E2NET_STRIDES} (or None)")
        self.strides = [list(r) for r in E2NET_STRIDES]
        ops = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        branch = dict(backbone=backbone, conv_op=conv_op, **ops, channels=channels)
        self.seg_branch = R2UNet(input_channels, num_classes, **branch)
        self.edge_branch = R2UNet(input_channels, num_classes, **branch) if edge_branch else None
        levels = len(self.seg_branch.encoder.output_channels)
        self.dcff = DeepCrossFeatureFusion(conv_op, int(channels), levels, **ops) if dcff else None
        self.decoder = E2NetFusionHead(conv_op, int(channels), num_classes, bool(edge_branch),
                                       deep_supervision, **ops)
        self.num_classes, self.channels = int(num_classes), int(channels)

    def forward(self, x: torch.Tensor):
        check_size(x, "E2Net")
        f_seg = self.seg_branch.encode(x)
        if self.edge_branch is None:
            s1, d_seg = self.seg_branch.decoder.decode(f_seg)
            return self.decoder(s1, None, d_seg[0], None)
        f_edge = self.edge_branch.encode(x)
        if self.dcff is not None:
            f_seg, f_edge = self.dcff(f_seg, f_edge)
        s1, d_seg = self.seg_branch.decoder.decode(f_seg)
        e, d_edge = self.edge_branch.decoder.decode(f_edge)
        return self.decoder(s1, e, d_seg[0], d_edge[0])

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements (batch 1) of all conv outputs: branches, DCFF and the fusion step."""
        if len(input_size) != 2:
            raise ValueError("give the 2D image size (h, w) without batch or channel axes")
        total = self.seg_branch.compute_conv_feature_map_size(input_size)
        if self.edge_branch is not None:
            total += self.edge_branch.compute_conv_feature_map_size(input_size)
        if self.dcff is not None:
            total += self.dcff.compute_conv_feature_map_size(self.seg_branch.feature_sizes(input_size))
        return total + self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He init (``InitWeights_He(1e-2)``) for every conv; norms keep PyTorch's.
        Pretrained Res2Net weights go into both backbones afterwards
        (:func:`~nnunet_ulseg.networks.res2net.load_pretrained_res2net`)."""
        InitWeights_He(1e-2)(module)
