"""Deep-supervision weights and the image-aware deep-supervision wrapper.

One place for the per-output weights, so that no trainer pastes nnU-Net's weight block
again (STYLE.md §1), including its DDP case.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def deep_supervision_weights(n_outputs: int, scheme: str = "nnunet", ddp: bool = False,
                             compiled: bool = False) -> np.ndarray:
    """Per-output loss weights, highest resolution first.

    * ``"nnunet"``: nnU-Net's ``1/2^i``, the lowest-resolution output switched off, then
      normalised to sum 1.  Under DDP without ``torch.compile`` the switched-off weight is
      1e-6 instead of 0: DDP otherwise reports the last head's parameters as unused.
    * ``"equal"``: the AHRNet paper's plain sum over its outputs (Sec. 2.3), all weights 1.
    """
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
    if scheme == "equal":
        return np.ones(n_outputs)
    if scheme != "nnunet":
        raise ValueError(f"unknown deep-supervision weight scheme {scheme!r} (use 'nnunet' or 'equal')")
    weights = np.array([1 / (2 ** i) for i in range(n_outputs)])
    if n_outputs > 1:
        weights[-1] = 1e-6 if (ddp and not compiled) else 0.0
    return weights / weights.sum()


class ImageDeepSupervision(nn.Module):
    """Apply a per-output loss ``loss(output, target, image)`` over deep-supervision outputs.

    nnU-Net's ``train_step`` calls ``self.loss(output, target)``; losses that also need the
    network input (the regional level set, AHRNet Eq. 2) read it from :attr:`image`, which
    the trainer sets right before each step (:class:`~nnunet_ulseg.training.weak.WeakLossMixin`).
    Outputs and targets may be lists (deep supervision on) or single tensors.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        if self.weights is not None and not any(w != 0 for w in self.weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.image: torch.Tensor | None = None

    def forward(self, outputs, targets) -> torch.Tensor:
        if not isinstance(outputs, (list, tuple)):
            outputs, targets = [outputs], [targets]
        if len(outputs) != len(targets):
            raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets")
        weights = self.weights if self.weights is not None else (1.0,) * len(outputs)
        if len(weights) < len(outputs):
            raise ValueError(f"{len(weights)} deep-supervision weights for {len(outputs)} outputs")
        image = self.image
        if image is not None:
            image = image.to(outputs[0].device, non_blocking=True)
        total = None
        for w, out, tgt in zip(weights, outputs, targets):
            if w == 0:
                continue
            term = w * self.loss(out, tgt, image)
            total = term if total is None else total + term
        return total
