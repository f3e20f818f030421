"""Binary cross entropy of AHRNet Eq. 3 (Sec. 2.3) on nnU-Net's two-channel head, honouring the ignore label.

    l_bce(p, g) = -1/|I| sum_{i in I} [g(i) log p(i) + (1 - g(i)) log(1 - p(i))]

Choices where the paper is silent:

- ``I`` is the set of non-ignored pixels (target != ignore_label) of the whole batch, pooled: the sum
  over the batch divided by the number of non-ignored pixels in the batch. This is how nnU-Net's
  cross entropy with ``ignore_index`` reduces (``DC_and_CE_loss``), so our BCE and nnU-Net's CE have
  the same scale per pixel.
- p = softmax(logits)[:, 1] (see ``_common``); ``log p`` and ``log(1 - p)`` come from ``log_softmax``,
  so the loss is finite for any finite logits (no clamping of p).
- With no valid pixel in the batch the loss is 0, still a tensor connected to ``logits`` (DDP needs
  every parameter in the graph; nnU-Net instead skips CE, which it can because Dice stays connected).
"""
from typing import Optional

import torch
from torch import nn

from nnunet_ulseg.losses._common import (check_logits_target, foreground_log_probs, fp32_region,
                                         split_target)


class MaskedBCELoss(nn.Module):
    def __init__(self, ignore_label: Optional[int] = 2):
        """Eq. 3 BCE over non-ignored pixels; ``forward(logits (B,2,*sp), target (B,1,*sp))`` -> float32 scalar."""
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_target(logits, target)
        with fp32_region(logits.device.type):
            _, log_p, log_q = foreground_log_probs(logits)
            g, valid = split_target(target, self.ignore_label)
            pixel_loss = -(g * log_p + (1 - g) * log_q)
            # where() rather than a product: zero gradient at ignored pixels even for extreme logits
            pixel_loss = torch.where(valid, pixel_loss, torch.zeros_like(pixel_loss))
            return pixel_loss.sum() / valid.sum().clamp_min(1)
