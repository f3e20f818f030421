"""AHRNet's training loss for one output: l_seg term + 0.1 l_rls (Sec. 2.3, Eq. 2 and 3).

The paper's ``l_seg = sum_{k=1..3} [l_bce(p_k, g_k) + l_iou(p_k, g_k)]`` sums over the three outputs
p1, p2, p3 at 1/4, 1/2 and 1 of the input. nnU-Net's networks return a deep-supervision list with the
highest resolution first (so the paper's p3, p2, p1 = list[0], list[1], list[2]) and its data loader
hands over the targets nearest-downsampled to each output's size (ignore label preserved).
``WeakSegLoss`` is the loss of ONE output; the sum over outputs is done by nnU-Net's
``DeepSupervisionWrapper`` (or an equivalent), which zips its list arguments::

    loss = DeepSupervisionWrapper(WeakSegLoss(...), weights)
    total = loss(outputs, targets, [data] * len(outputs))   # the image is resized inside

Weights: the paper's plain sum is weights (1, 1, 1) over its three outputs. nnU-Net's default is
1/2^i over its outputs, last set to 0 (1e-6 under DDP), normalised to sum 1; with three outputs that
is (2/3, 1/3, 0) and drops the paper's p1. The choice of weights belongs to the trainer's one
deep-supervision helper, not to this module. The paper is silent on which outputs get l_rls; here it
is applied to every output the wrapper passes, with the same weight.

Schedule (Sec. 2.3): l_rls is off (``use_rls=False``) until l_seg has converged, then on with weight
0.1. The trainer flips ``use_rls`` (an attribute, also reachable as ``wrapper.loss.use_rls``) at its
switch epoch. Turning RLS on adds no parameter to the graph (it depends on the logits only), so DDP's
view of used parameters does not change.

Logging: every forward records its detached components; ``last_components`` gives the latest as
floats, ``pop_components()`` every call since the last pop (one per deep-supervision output, highest
resolution first under the wrapper). Values are kept as detached tensors and converted to floats only
when read, so recording costs no GPU synchronisation.
"""
from collections import deque
from typing import Dict, List, Optional

import torch
from torch import nn

from nnunet_ulseg.losses.bce import MaskedBCELoss
from nnunet_ulseg.losses.iou import SoftIoULoss
from nnunet_ulseg.losses.level_set import RegionalLevelSetLoss


class WeakSegLoss(nn.Module):
    def __init__(self, rls_weight: float = 0.1, use_rls: bool = False, region: str = "rls",
                 lambda1: float = 1.0, lambda2: float = 3.0, ignore_label: Optional[int] = 2,
                 iou_smooth: float = 1e-5, detach_means: bool = True, normalize_intensity: bool = True,
                 max_records: int = 64):
        """l_bce + l_iou (+ rls_weight * l_rls when ``use_rls``) of one output.

        ``forward(logits (B,2,*sp), target (B,1,*sp), image (B,C,*sp_in) or None)`` -> float32 scalar.
        ``image`` is needed only while ``use_rls`` is on. ``region``: "rls" (I', AHRNet) or "image" (LS).
        ``max_records`` bounds the component history if nobody pops it.
        """
        super().__init__()
        self.bce = MaskedBCELoss(ignore_label)
        self.iou = SoftIoULoss(ignore_label, iou_smooth)
        self.rls = RegionalLevelSetLoss(lambda1, lambda2, region, ignore_label, detach_means=detach_means,
                                        normalize_intensity=normalize_intensity)
        self.rls_weight = rls_weight
        self.use_rls = use_rls
        self._records = deque(maxlen=max_records)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                image: Optional[torch.Tensor] = None) -> torch.Tensor:
        bce = self.bce(logits, target)
        iou = self.iou(logits, target)
        total = bce + iou
        if self.use_rls:
            if image is None:
                raise ValueError("WeakSegLoss.use_rls is on but no image was passed to forward")
            rls = self.rls(logits, target, image)
            total = total + self.rls_weight * rls
            rls_record = rls.detach()
        else:
            rls_record = torch.zeros((), device=bce.device)
        self._records.append({"bce": bce.detach(), "iou": iou.detach(), "rls": rls_record})
        return total

    @property
    def last_components(self) -> Dict[str, float]:
        """Unweighted components {'bce', 'iou', 'rls'} of the latest forward as floats (rls 0.0 while off)."""
        if not self._records:
            return {}
        return {k: float(v) for k, v in self._records[-1].items()}

    def pop_components(self) -> List[Dict[str, float]]:
        """Components of every forward since the last pop, oldest first, as floats; clears the record."""
        out = [{k: float(v) for k, v in rec.items()} for rec in self._records]
        self._records.clear()
        return out
