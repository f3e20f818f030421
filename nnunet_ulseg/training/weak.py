"""Weak-label training (AHRNet Sec. 2.2-2.3) as an ``nnUNetTrainer`` mixin.

* Loss: ``l_seg = BCE + IoU`` (Eq. 3) on ``p = softmax[:, 1]`` over the deep-supervision
  outputs, plus ``0.1 * l_rls`` (Eq. 2) once the schedule switches it on.  Ignore-label
  pixels are excluded by every term (:mod:`nnunet_ulseg.losses`).
* Schedule: "we do not add l_rls for training until the model converges using only
  l_seg".  The paper gives no epoch; we switch at ``floor(rls_start_fraction * num_epochs)``
  (default half way).  A 1-epoch run therefore uses RLS from the start, which is what a
  smoke test wants.  On resume the switch is re-derived from the epoch, so it survives a
  restart.
* Deep-supervision weights: nnU-Net's own (:func:`~nnunet_ulseg.training.ds.deep_supervision_weights`)
  for nnU-Net's U-Net, whose 5-6 outputs reach 1/32 resolution; the paper's plain sum
  applies to AHRNet's three outputs (set ``ds_weight_scheme = "equal"``).
* Logging: the mean unweighted BCE, IoU and RLS of the highest-resolution output are
  written to the training log and to nnU-Net's logger (keys ``train_bce``, ``train_iou``,
  ``train_rls``, checkpointed with it) every epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import distributed as dist

from nnunet_ulseg.losses import WeakSegLoss
from nnunet_ulseg.training.ds import ImageDeepSupervision, deep_supervision_weights

COMPONENTS = ("bce", "iou", "rls")


class WeakLossMixin:
    """Put first in the bases: ``class nnUNetTrainerRLS(WeakLossMixin, nnUNetTrainer)``."""

    #: add the regional level set term after the l_seg phase
    use_rls: bool = False
    #: "rls": I' = pseudo mask scaled x2 about its centre; "image": whole image (paper's LS row)
    rls_region: str = "rls"
    #: fraction of the epochs trained with l_seg only
    rls_start_fraction: float = 0.5
    rls_weight: float = 0.1
    rls_lambda1: float = 1.0
    rls_lambda2: float = 3.0
    ds_weight_scheme: str = "nnunet"

    def _build_loss(self):
        ignore = self.label_manager.ignore_label
        if self.label_manager.has_regions or len(self.label_manager.foreground_labels) != 1:
            raise ValueError(
                f"{type(self).__name__} trains one lesion class (labels background/lesion[/ignore]); "
                f"this dataset has foreground labels {self.label_manager.foreground_labels}"
            )
        if self.enable_deep_supervision:
            n = len(self._get_deep_supervision_scales())
            weights = deep_supervision_weights(n, self.ds_weight_scheme, ddp=self.is_ddp,
                                               compiled=self._do_i_compile())
        else:
            n, weights = 1, None
        # the component history is popped every epoch; size it so one epoch never overflows
        records = (self.num_iterations_per_epoch + self.num_val_iterations_per_epoch + 1) * n
        loss = WeakSegLoss(rls_weight=self.rls_weight, use_rls=False, region=self.rls_region,
                           lambda1=self.rls_lambda1, lambda2=self.rls_lambda2, ignore_label=ignore,
                           max_records=records)
        return ImageDeepSupervision(loss, weights)

    @property
    def rls_start_epoch(self) -> int:
        return int(np.floor(self.rls_start_fraction * self.num_epochs))

    def _weak_loss(self) -> WeakSegLoss:
        return self.loss.loss

    def on_train_start(self):
        super().on_train_start()
        local = self.logger.local_logger.my_fantastic_logging
        for name in COMPONENTS:
            local.setdefault(f"train_{name}", [])
        if self.use_rls:
            self.print_to_log_file(f"RLS ({self.rls_region}) on from epoch {self.rls_start_epoch} "
                                   f"of {self.num_epochs}, weight {self.rls_weight}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        rls_on = self.use_rls and self.current_epoch >= self.rls_start_epoch
        loss = self._weak_loss()
        if rls_on and not loss.use_rls:
            self.print_to_log_file(f"regional level set loss switched on (region {self.rls_region})")
        loss.use_rls = rls_on
        loss.pop_components()

    def train_step(self, batch: dict) -> dict:
        self.loss.image = batch["data"]
        try:
            return super().train_step(batch)
        finally:
            self.loss.image = None

    def validation_step(self, batch: dict) -> dict:
        self.loss.image = batch["data"]
        try:
            return super().validation_step(batch)
        finally:
            self.loss.image = None

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        records = self._weak_loss().pop_components()
        n_out = max(1, sum(1 for w in (self.loss.weights or (1.0,)) if w != 0))
        top = records[::n_out]  # highest-resolution output of each step
        means = np.array([np.mean([r[k] for r in top]) if top else np.nan for k in COMPONENTS])
        if self.is_ddp:
            t = torch.tensor(means, device=self.device, dtype=torch.float64)
            dist.all_reduce(t)
            means = (t / dist.get_world_size()).cpu().numpy()
        for name, value in zip(COMPONENTS, means):
            self.logger.log(f"train_{name}", float(value), self.current_epoch)
        self.print_to_log_file("train components: " + ", ".join(
            f"{k} {v:.4f}" for k, v in zip(COMPONENTS, means)))

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._weak_loss().pop_components()
