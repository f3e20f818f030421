"""Deep-supervision weights and the image-aware deep-supervision wrapper.

One place for the per-output weights, so that no trainer pastes nnU-Net's weight block
again (docs/STYLE.md §1), including its DDP case.  The wrapper also keeps the mean loss
components of each output (the per-output loss's ``last_record``), so trainers log them
without knowing how many outputs there are or in which order the loss was called.
"""
from __future__ import annotations

from typing import Dict, Sequence

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
    the trainer sets right before each step (:class:`~nnunet_ulseg.training.weak.nnUNetTrainerWeak`).
    Outputs and targets may be lists (deep supervision on) or single tensors.

    Components: after each evaluated output ``i`` the per-output loss's ``last_record`` (a
    dict of detached scalar tensors, if the loss has one) is added to running sums kept per
    output index (0 = highest resolution); zero-weight outputs are not evaluated and so not
    recorded.  :meth:`pop_component_means` returns the means since the last pop and resets.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        if self.weights is not None and not any(w != 0 for w in self.weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.image: torch.Tensor | None = None
        self._sums: Dict[int, Dict[str, torch.Tensor]] = {}
        self._counts: Dict[int, int] = {}

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
        for i, (w, out, tgt) in enumerate(zip(weights, outputs, targets)):
            if w == 0:
                continue
            if hasattr(self.loss, "last_record"):
                self.loss.last_record = None  # never count a stale record twice
            term = w * self.loss(out, tgt, image)
            self._record(i)
            total = term if total is None else total + term
        return total

    def _record(self, index: int) -> None:
        record = getattr(self.loss, "last_record", None)
        if not record:
            return
        sums = self._sums.setdefault(index, {})
        for key, value in record.items():
            value = value.detach()
            sums[key] = value if key not in sums else sums[key] + value
        self._counts[index] = self._counts.get(index, 0) + 1

    def pop_component_means(self) -> Dict[int, Dict[str, float]]:
        """``{output index: {component: mean}}`` over the calls since the last pop; clears the sums."""
        means = {i: {k: float(v) / self._counts[i] for k, v in sums.items()} for i, sums in sorted(self._sums.items())}
        self._sums, self._counts = {}, {}
        return means
