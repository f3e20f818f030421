"""Soft IoU loss of AHRNet Eq. 3 (Sec. 2.3) on nnU-Net's two-channel head, honouring the ignore label.

    l_iou(p, g) = 1 - (sum_{i in I} g(i) p(i)) / (sum_{i in I} g(i) + p(i) - g(i) p(i))

Choices where the paper is silent:

- ``I`` is the set of non-ignored pixels of one sample; the loss is computed per sample and averaged
  over the batch (the paper writes it for one image; nnU-Net's default Dice is also per sample,
  ``batch_dice`` off for 2d). A sample in which every pixel is ignored contributes 0.
- A smooth term ``s = 1e-5`` (nnU-Net's Dice smooth, ``_build_loss``) is added to numerator and
  denominator: ``1 - (sum gp + s) / (sum (g + p - gp) + s)``. An empty lesion with an empty
  prediction gives 1 - s/s = 0 (not NaN); a confident all-background prediction (softmax p ~ 1e-13
  per pixel) on an all-background target gives ~0. The term is too small to bias non-empty samples.
- p = softmax(logits)[:, 1] (see ``_common``), computed in float32.
"""
from typing import Optional

import torch
from torch import nn

from nnunet_ulseg.losses._common import (check_logits_target, foreground_log_probs, fp32_region,
                                         spatial_axes, split_target)


class SoftIoULoss(nn.Module):
    def __init__(self, ignore_label: Optional[int] = 2, smooth: float = 1e-5):
        """Eq. 3 IoU loss per sample, batch mean; ``forward(logits (B,2,*sp), target (B,1,*sp))`` -> float32 scalar."""
        super().__init__()
        self.ignore_label = ignore_label
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target)
        with fp32_region(logits.device.type):
            p, _, _ = foreground_log_probs(logits)
            g, valid = split_target(target, self.ignore_label)
            p = torch.where(valid, p, torch.zeros_like(p))
            g = g * valid
            axes = spatial_axes(p)
            intersection = (g * p).sum(axes)
            union = (g + p - g * p).sum(axes)
            iou = (intersection + self.smooth) / (union + self.smooth)
            return (1 - iou).mean()
