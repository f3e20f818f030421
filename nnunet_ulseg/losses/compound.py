"""Training losses of one output: l_seg + 0.1 l_rls (AHRNet Sec. 2.3, Eq. 2 and 3).

``WeakSegLoss``: AHRNet's ``l_seg = l_bce + l_iou``. ``DiceCERLSLoss``: nnU-Net's own Dice + CE
(``DC_and_CE_loss`` with its ignore handling, as ``nnUNetTrainer._build_loss`` builds it) as l_seg, so
that RLS can be measured against nnU-Net's default (AHRNet Table 1 "nnUNet" vs "nnUNet+RLS").

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

Logging: every forward sets ``last_record``, the detached components of that call as tensors
(``"seg"`` = the unweighted l_seg of the output, then the loss's ``components``); the deep-supervision
wrapper (``nnunet_ulseg.training.ds.ImageDeepSupervision``) reads it after each output and keeps the
per-output means, so no trainer has to decode a history. ``WeakSegLoss`` also keeps its own bounded
history (``last_components`` as floats, ``pop_components()`` every call since the last pop) for direct
use. Values stay detached tensors until read, so recording costs no GPU synchronisation.
"""
from collections import deque
from typing import Dict, List, Optional

import torch
from torch import nn

from nnunet_ulseg.losses.bce import MaskedBCELoss
from nnunet_ulseg.losses.iou import SoftIoULoss
from nnunet_ulseg.losses.level_set import RegionalLevelSetLoss


def _with_rls(loss: nn.Module, seg: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
              image: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(seg + loss.rls_weight * l_rls, detached l_rls)`` while ``loss.use_rls``, else ``(seg, 0)``."""
    if not loss.use_rls:
        return seg, torch.zeros((), device=logits.device)
    if image is None:
        raise ValueError(f"{type(loss).__name__}.use_rls is on but no image was passed to forward")
    rls = loss.rls(logits, target, image)
    return seg + loss.rls_weight * rls, rls.detach()


class WeakSegLoss(nn.Module):
    #: components recorded per call besides ``"seg"`` (= bce + iou)
    components = ("bce", "iou", "rls")

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
        self.last_record: Optional[Dict[str, torch.Tensor]] = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                image: Optional[torch.Tensor] = None) -> torch.Tensor:
        bce = self.bce(logits, target)
        iou = self.iou(logits, target)
        total, rls_record = _with_rls(self, bce + iou, logits, target, image)
        record = {"bce": bce.detach(), "iou": iou.detach(), "rls": rls_record}
        self._records.append(record)
        self.last_record = {"seg": record["bce"] + record["iou"], **record}
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


class DiceCERLSLoss(nn.Module):
    #: components recorded per call besides ``"seg"`` (= weight_ce * ce + weight_dice * dice)
    components = ("dice", "ce", "rls")

    def __init__(self, seg: nn.Module, rls_weight: float = 0.1, use_rls: bool = False, region: str = "rls",
                 lambda1: float = 1.0, lambda2: float = 3.0, ignore_label: Optional[int] = 2,
                 detach_means: bool = True, normalize_intensity: bool = True):
        """nnU-Net's Dice + CE of one output (+ rls_weight * l_rls when ``use_rls``).

        ``seg`` is the ``DC_and_CE_loss`` that ``nnUNetTrainer._build_loss`` builds (unwrapped from its
        deep-supervision wrapper); its ``dc`` and ``ce`` modules (``dc`` possibly ``torch.compile``d) are
        called here exactly as ``DC_and_CE_loss.forward`` calls them, so that Dice and CE can be logged
        apart; the sum is the same number (tested). ``forward(logits, target, image or None)``.
        """
        super().__init__()
        for name in ("dc", "ce", "weight_dice", "weight_ce", "ignore_label"):
            if not hasattr(seg, name):
                raise TypeError(f"seg must be nnU-Net's DC_and_CE_loss (no attribute {name!r}), got {type(seg).__name__}")
        self.seg = seg
        self.rls = RegionalLevelSetLoss(lambda1, lambda2, region, ignore_label, detach_means=detach_means,
                                        normalize_intensity=normalize_intensity)
        self.rls_weight = rls_weight
        self.use_rls = use_rls
        self.last_record: Optional[Dict[str, torch.Tensor]] = None

    def dice_and_ce(self, logits: torch.Tensor, target: torch.Tensor):
        """``(dice_loss, ce_loss)`` as ``DC_and_CE_loss.forward`` computes them (0 where it skips one)."""
        seg = self.seg
        if seg.ignore_label is not None:
            mask = target != seg.ignore_label
            target_dice = torch.where(mask, target, 0)
            num_fg = mask.sum()
        else:
            target_dice, mask, num_fg = target, None, None
        dc = seg.dc(logits, target_dice, loss_mask=mask) if seg.weight_dice != 0 else logits.new_zeros(())
        ce = seg.ce(logits, target[:, 0]) if seg.weight_ce != 0 and (seg.ignore_label is None or num_fg > 0) \
            else logits.new_zeros(())
        return dc, ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                image: Optional[torch.Tensor] = None) -> torch.Tensor:
        dc, ce = self.dice_and_ce(logits, target)
        seg = self.seg.weight_ce * ce + self.seg.weight_dice * dc
        total, rls_record = _with_rls(self, seg, logits, target, image)
        self.last_record = {"seg": seg.detach().float(), "dice": dc.detach().float(), "ce": ce.detach().float(),
                            "rls": rls_record}
        return total
