"""AHRNet's optimisation recipe (Sec. 3 "Implementation Details") as an nnU-Net optimiser option.

Paper: "trained using Adam optimizer with an initial learning rate of 0.001 for 80 epochs
reduced by 0.1 at epoch 40 and 60".  The milestones are kept as fractions of
``num_epochs`` (0.5 and 0.75), so 80 epochs give exactly the paper's 40 and 60 and a short
schedule keeps the shape (10 epochs: steps at 5 and 7, ``floor`` as for the RLS switch).

Choices where the paper is silent: plain Adam (the paper cites Kingma & Ba) with nnU-Net's
weight decay 3e-5 as L2 (what nnU-Net's own ``nnUNetTrainerVanillaAdam`` does), default
betas; nnU-Net's gradient clipping (norm 12 in ``train_step``) stays; the number of
epochs stays the trainer's (nnU-Net's 1000 x 250 iterations, or a short schedule):
the paper's "epoch" is a pass over DeepLesion, nnU-Net's is 250 sampled batches.

Not done: the paper's per-iteration random resize of the long side into [128, 256].
nnU-Net batches fixed-size patches (the planned patch size) and computes the
deep-supervision targets in its data-augmentation pipeline for that size; batches of a
random size would need a new data loader and break the plans' patch size that the
predictor also uses.  The converter already writes each crop with its side in
[128, 256] (DESIGN "Crops"), and nnU-Net's scaling augmentation (0.7-1.4) varies the
lesion size within the patch.

nnU-Net 2.8 steps the scheduler itself, once per epoch, as
``self.lr_scheduler.step(self.current_epoch)`` (``nnUNetTrainer.on_train_epoch_start``);
:class:`StepFractionLR` takes that epoch, like nnU-Net's ``PolyLRScheduler``, and sets the
learning rate from it alone, so a resumed training gets the right rate.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.optim.lr_scheduler import _LRScheduler

from nnunet_ulseg.training.rls_switch import start_epoch

#: the paper's learning rate, decay factor and decay points (as fractions of the epochs)
AHRNET_LR = 1e-3
AHRNET_LR_GAMMA = 0.1
AHRNET_LR_MILESTONES = (0.5, 0.75)


class StepFractionLR(_LRScheduler):
    """``lr = initial_lr * gamma ** #(milestones <= epoch)``, milestones = ``floor(f * num_epochs)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, num_epochs: int,
                 milestones: Sequence[float] = AHRNET_LR_MILESTONES, gamma: float = AHRNET_LR_GAMMA,
                 current_step: int | None = None):
        if not all(0 <= f <= 1 for f in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing fractions in [0, 1], got {list(milestones)}")
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.num_epochs = num_epochs
        self.gamma = gamma
        self.milestone_epochs = [start_epoch(f, num_epochs) for f in milestones]
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        return self.initial_lr * self.gamma ** sum(1 for m in self.milestone_epochs if epoch >= m)

    def step(self, current_step: int | None = None):
        """nnU-Net calls ``step(epoch)``; ``step()`` counts calls (torch's constructor makes one)."""
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


def ahrnet_optimizer(params: Iterable, initial_lr: float, weight_decay: float, num_epochs: int,
                     milestones: Sequence[float] = AHRNET_LR_MILESTONES, gamma: float = AHRNET_LR_GAMMA):
    """``(Adam, StepFractionLR)`` of AHRNet Sec. 3."""
    optimizer = torch.optim.Adam(params, lr=initial_lr, weight_decay=weight_decay)
    return optimizer, StepFractionLR(optimizer, initial_lr, num_epochs, milestones, gamma)
