"""Deep cross feature fusion (DCFF), E²Net Sec. 2 and Fig. 2(d).

Paper: "for feature of each scale from one branch, we use all equal and larger scale
features from the other branch to refine it ... For F_1^1, its refined feature F'_1^1 is
obtained based on F_1^1 itself and all features F_2 = {F_2^i}. As shown in Fig. 2(d), for
each F_2^i, we first downsample F_1^1 to the same size as F_2^i and concatenate them. Then a
series of operations including concatenation, convolution and upsampling are performed like
the behavior of R2UNet's decoder. Finally, the above resulted feature and F_1^1 are summed
together to obtain F'_1^1. For F_2^1 => F'_2^1, it is similar ... except replacing all
concatenation operations with element-wise multiplication."

Our reading, for the target ``t = F_A^k`` (scale k of branch A) and the sources
``s_j = F_B^j``, j = k..L (the equal and coarser scales of branch B; "larger scale" is the
larger index i, i.e. the coarser maps, since F_2^1 is refined from all F_1^i)::

    q_j  = conv3x3(t↓j ⊕ s_j)                    j = k..L   pairs at the SOURCE resolution
    d_L  = q_L
    d_j  = conv3x3(up(d_{j+1}) ⊕ q_j)             j = L-1..k the R2UNet-decoder-like path
    F'_A^k = t + d_k                                          the sum with the input

* ``t↓j`` is ``t`` average-pooled by ``2^(j-k)`` (kernel = stride, exact because inputs are
  multiples of 32). The paper says "downsample" without naming the operator; pooling is
  parameter-free, and only the target is resized down: the coarser sources are never
  upsampled directly, they reach scale k through the decoder path's upsamplings, which is
  how we read "upsampling ... like R2UNet's decoder" (bilinear x2, as our decoder).
* ``⊕`` is channel concatenation for the segmentation branch (``mode="concat"``, convs take
  2C channels) and element-wise multiplication for the edge branch (``mode="multiply"``,
  convs take C): "replacing ALL concatenation operations", so both the pairing and the
  decoder path's merge multiply. (Sec. 2 also motivates ``F_1 + F_2`` for the segmentation
  features; the DCFF paragraph, which we follow, says concatenation.)
* Every conv is 3x3 -> norm -> nonlin (32 kernels, "decoder-like"), except the last one of
  each refinement (the conv giving ``d_k``), which has no nonlinearity so that the refinement
  summed onto ``t`` can be negative as well as positive (as the last conv before a residual
  sum in ResNet). The paper does not say.
* Both directions read the UNREFINED features of the other branch (the refinement is
  simultaneous and "bidirectional"); the refined features feed each branch's own decoder.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ulseg.networks.blocks import ConvNormAct
from nnunet_ulseg.networks.r2unet import up2

FUSION_MODES = ("concat", "multiply")


def _combine(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    return torch.cat([a, b], dim=1) if mode == "concat" else a * b


def _area(channels: int, size: Sequence[int]) -> np.int64:
    return np.prod([channels, *size], dtype=np.int64)


class ScaleRefinement(nn.Module):
    """Refines one scale ``k`` of one branch with the other branch's scales ``k..L`` (Fig. 2(d)).

    :param num_sources: ``L - k + 1``, the number of equal-and-coarser source scales.
    :param mode: ``"concat"`` (segmentation branch) or ``"multiply"`` (edge branch).

    ``pair_convs[m]`` makes ``q`` for the source ``m`` scales coarser than the target;
    ``merge_convs[m]`` (m = 0..num_sources-2) merges the upsampled path into ``q_{k+m}``.
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int, num_sources: int, mode: str = "concat",
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}")
        if num_sources < 1:
            raise ValueError(f"num_sources must be >= 1, got {num_sources}")
        self.mode, self.channels, self.num_sources = mode, int(channels), int(num_sources)
        width = 2 * self.channels if mode == "concat" else self.channels
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        act = dict(nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)

        def conv(last: bool) -> ConvNormAct:
            return ConvNormAct(conv_op, width, self.channels, 3, 1, **norm, **({} if last else act))

        # the conv producing d_k is the last one: the merge at m = 0, or the only pair conv
        self.pair_convs = nn.ModuleList(conv(last=(num_sources == 1)) for _ in range(num_sources))
        self.merge_convs = nn.ModuleList(conv(last=(m == 0)) for m in range(num_sources - 1))

    def forward(self, target: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(sources) != self.num_sources:
            raise ValueError(f"expected {self.num_sources} source scales, got {len(sources)}")
        pairs = []
        for m, (src, conv) in enumerate(zip(sources, self.pair_convs)):
            down = F.avg_pool2d(target, 2 ** m) if m else target
            if down.shape != src.shape:
                raise ValueError(f"source scale {m} has shape {tuple(src.shape)}, the target pooled by "
                                 f"{2 ** m} has {tuple(down.shape)}: scales must halve one by one")
            pairs.append(conv(_combine(down, src, self.mode)))
        d = pairs[-1]
        for m in range(self.num_sources - 2, -1, -1):
            d = self.merge_convs[m](_combine(up2(d), pairs[m], self.mode))
        return target + d

    def compute_conv_feature_map_size(self, target_size: Sequence[int]) -> np.int64:
        """Conv outputs for a target of spatial size ``target_size``."""
        pairs = sum(_area(self.channels, [int(s) >> m for s in target_size]) for m in range(self.num_sources))
        merges = sum(_area(self.channels, [int(s) >> m for s in target_size]) for m in range(self.num_sources - 1))
        return np.int64(pairs + merges)


class DeepCrossFeatureFusion(nn.Module):
    """DCFF between the segmentation features ``F_1`` and the edge features ``F_2`` (all ``channels`` wide).

    ``forward(seg_feats, edge_feats) -> (refined_seg, refined_edge)``; both inputs are lists
    ordered fine to coarse, each scale half the previous. ``seg_refine[k]`` (concatenation)
    gives ``F'_1^k`` from ``F_1^k`` and ``F_2^{k..L}``; ``edge_refine[k]`` (multiplication)
    gives ``F'_2^k`` from ``F_2^k`` and ``F_1^{k..L}``. Output shapes equal input shapes.
    """

    def __init__(self, conv_op: Type[_ConvNd], channels: int = 32, num_scales: int = 5, **ops):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.channels, self.num_scales = int(channels), int(num_scales)
        self.seg_refine = nn.ModuleList(ScaleRefinement(conv_op, channels, num_scales - k, "concat", **ops)
                                        for k in range(num_scales))
        self.edge_refine = nn.ModuleList(ScaleRefinement(conv_op, channels, num_scales - k, "multiply", **ops)
                                         for k in range(num_scales))

    def forward(self, seg_feats: Sequence[torch.Tensor], edge_feats: Sequence[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not (len(seg_feats) == len(edge_feats) == self.num_scales):
            raise ValueError(f"DCFF needs {self.num_scales} scales per branch, got {len(seg_feats)} "
                             f"and {len(edge_feats)}")
        seg = [r(seg_feats[k], edge_feats[k:]) for k, r in enumerate(self.seg_refine)]
        edge = [r(edge_feats[k], seg_feats[k:]) for k, r in enumerate(self.edge_refine)]
        return seg, edge

    def compute_conv_feature_map_size(self, sizes: Sequence[Sequence[int]]) -> np.int64:
        """``sizes``: spatial size of every scale, fine to coarse."""
        return np.int64(sum(a.compute_conv_feature_map_size(s) + b.compute_conv_feature_map_size(s)
                            for a, b, s in zip(self.seg_refine, self.edge_refine, sizes)))
