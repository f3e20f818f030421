"""E²Net's objectives (Sec. 2.4): Eq. 3 for stage 2, ``l_1st = IoU + BCE`` for stage 1.

    l_2nd = l_IoU(g_m, s1) + l_BCE(g_m, s1) + l_IoU(g_m, s2) + l_BCE(g_m, s2) + 4 * l_BCE(g_e, e)   (Eq. 3)

``g_m`` are the liver and tumour masks, ``g_e`` their edge distance maps (``losses/edge.py``), ``s1``
the segmentation branch, ``e`` the edge branch and ``s2`` the fusion output. The weights are
constructor arguments (``s1_weight``, ``s2_weight``, ``edge_weight``; the paper's 1, 1, 4).

Inputs (nnU-Net's region-based training, ``training/e2net.py``):

- ``outputs``: the tuple ``(s2, s1, e)`` of logits (B, R, H, W) that ``E2Net`` returns with deep
  supervision on; ``s1`` or ``e`` may be None (the baseline has no edge branch; an ``s1`` that is the
  very tensor ``s2``, as ``E2Net(edge_branch=False)`` returns it, is counted once), and a single tensor
  or one-element list is read as ``s2`` alone (deep supervision off, or stage 1's R2UNet): then the
  loss is IoU + BCE of it, which is ``l_1st``.
- ``target``: nnU-Net's region target (B, R, H, W) of 0/1 floats, one channel per region (liver = label
  in {1, 2}, tumour = label 2), plus a last channel that marks ignored pixels when the dataset has an
  ignore label (``has_ignore_channel``; nnU-Net's ``DC_and_BCE_loss`` convention). A list (nnU-Net's
  deep-supervision targets) is read at its first, full-resolution entry: every E²Net output is at full
  resolution.

Why not ``bce.py``/``iou.py``: those read AHRNet's two-channel softmax head and hard labels; here every
region has its own sigmoid channel (the paper's per-object BCE and IoU, Eq. 1-2) and the edge target is
soft. The reductions are theirs: BCE is the mean over valid pixels of the batch (Eq. 1 writes a sum,
which only rescales it by the pixel count and would make the 4x edge weight meaningless against IoU),
IoU is computed per sample and per channel, then averaged, with nnU-Net's Dice smooth 1e-5. Ignored
pixels count in neither term; the edge target is computed from the region masks with ignored pixels
removed from the object.

Logging: every forward sets ``last_record`` (detached, unweighted components, ``"total"`` = the weighted
sum) and adds it to running sums that :meth:`E2NetLoss.pop_means` returns and resets; a term whose output
is absent is recorded as 0.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from nnunet_ulseg.losses._common import fp32_region, spatial_axes
from nnunet_ulseg.losses.edge import EDGE_KINDS, NORMALISATIONS, edge_targets, masked_sigmoid_bce


def sigmoid_iou(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None,
                smooth: float = 1e-5) -> torch.Tensor:
    """Eq. 2 on sigmoid outputs, ``1 - (sum g p + s) / (sum (g + p - g p) + s)`` per sample and channel, mean."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    with fp32_region(logits.device.type):
        p, g = torch.sigmoid(logits.float()), target.float()
        if valid is not None:
            valid = valid.expand_as(p)
            p = torch.where(valid, p, torch.zeros_like(p))
            g = g * valid
        axes = spatial_axes(p)
        iou = ((g * p).sum(axes) + smooth) / ((g + p - g * p).sum(axes) + smooth)
        return (1 - iou).mean()


def split_region_target(target, has_ignore_channel: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(g, valid)`` from nnU-Net's region target: g (B, R, *sp) float32, valid (B, 1, *sp) bool or None."""
    if isinstance(target, (list, tuple)):
        target = target[0]
    if target.ndim < 3:
        raise ValueError(f"target must be (B, R, *spatial), got shape {tuple(target.shape)}")
    if not has_ignore_channel:
        return target.float(), None
    if target.shape[1] < 2:
        raise ValueError(f"has_ignore_channel needs at least one region channel before it, got {tuple(target.shape)}")
    valid = target[:, -1:] < 0.5
    return target[:, :-1].float() * valid, valid


def _unpack(outputs) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    if isinstance(outputs, torch.Tensor):
        return outputs, None, None
    if not isinstance(outputs, (list, tuple)) or not 1 <= len(outputs) <= 3 or outputs[0] is None:
        raise ValueError("outputs must be a tensor (s2) or the tuple (s2, s1, e) of E2Net (s1, e may be None), "
                         f"got {type(outputs).__name__} of length {len(outputs) if hasattr(outputs, '__len__') else '?'}")
    s2, s1, e = (list(outputs) + [None, None])[:3]
    return s2, s1, e


class E2NetLoss(nn.Module):
    #: recorded components (unweighted) besides ``"total"``
    components = ("iou_s1", "bce_s1", "iou_s2", "bce_s2", "bce_e")

    def __init__(self, s1_weight: float = 1.0, s2_weight: float = 1.0, edge_weight: float = 4.0,
                 edge_kind: str = "dist", normalise: str = "component", has_ignore_channel: bool = False,
                 iou_smooth: float = 1e-5):
        """Eq. 3; ``forward(outputs, target)`` -> float32 scalar. ``edge_kind`` "dist" (E²Net) or "edge" (binary)."""
        super().__init__()
        if edge_kind not in EDGE_KINDS:
            raise ValueError(f"edge_kind must be one of {EDGE_KINDS}, got {edge_kind!r}")
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
        self.s1_weight, self.s2_weight, self.edge_weight = float(s1_weight), float(s2_weight), float(edge_weight)
        self.edge_kind, self.normalise = edge_kind, normalise
        self.has_ignore_channel = bool(has_ignore_channel)
        self.iou_smooth = iou_smooth
        self.last_record: Optional[Dict[str, torch.Tensor]] = None
        self._sums: Dict[str, torch.Tensor] = {}
        self._count = 0

    def seg_terms(self, logits: torch.Tensor, g: torch.Tensor, valid) -> Tuple[torch.Tensor, torch.Tensor]:
        if logits.shape != g.shape:
            raise ValueError(f"output {tuple(logits.shape)} does not match the region target {tuple(g.shape)} "
                             "(one output channel per region)")
        return sigmoid_iou(logits, g, valid, self.iou_smooth), masked_sigmoid_bce(logits, g, valid)

    def edge_target(self, g: torch.Tensor) -> torch.Tensor:
        """``g_e`` of Eq. 3 from the (augmented) region masks ``g`` (B, R, *sp)."""
        return edge_targets(g, self.edge_kind, self.normalise)

    def forward(self, outputs, target) -> torch.Tensor:
        s2, s1, e = _unpack(outputs)
        g, valid = split_region_target(target, self.has_ignore_channel)
        zero = torch.zeros((), device=s2.device)
        iou2, bce2 = self.seg_terms(s2, g, valid)
        total = self.s2_weight * (iou2 + bce2)
        iou1 = bce1 = bce_e = zero
        if s1 is not None and s1 is not s2:  # E2Net's baseline returns (s1, s1, None): count it once
            iou1, bce1 = self.seg_terms(s1, g, valid)
            total = total + self.s1_weight * (iou1 + bce1)
        if e is not None:
            if e.shape != g.shape:
                raise ValueError(f"edge output {tuple(e.shape)} does not match the region target {tuple(g.shape)}")
            bce_e = masked_sigmoid_bce(e, self.edge_target(g), valid)
            total = total + self.edge_weight * bce_e
        values = (iou1, bce1, iou2, bce2, bce_e)
        self.last_record = {k: v.detach() for k, v in zip(self.components, values)}
        self.last_record["total"] = total.detach()
        for k, v in self.last_record.items():
            self._sums[k] = v if k not in self._sums else self._sums[k] + v
        self._count += 1
        return total

    def pop_means(self) -> Dict[str, float]:
        """Mean of every recorded component since the last pop (empty if none); resets the sums."""
        means = {k: float(v) / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means
