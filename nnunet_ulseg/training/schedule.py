"""Short training schedules for demos, tests and CPU machines.

nnU-Net's own ``nnUNetTrainer_Xepochs`` variants only change ``num_epochs`` and keep
250 iterations per epoch, which is hours on a CPU.  Our ``_Nepochs`` variants also
shorten the epoch so that "N epochs" finishes in minutes on two CPU cores; the
iteration counts are class attributes so a subclass (or a user's own variant) can
change them without touching ``__init__``.
"""
from __future__ import annotations

import torch


class ShortSchedule:
    """Mixin for ``nnUNetTrainer`` subclasses: N short epochs.

    Put it first in the bases (``class X(ShortSchedule, nnUNetTrainerY)``).  The
    ``__init__`` signature is nnU-Net's own (nnU-Net rebuilds its init kwargs from
    ``inspect.signature(self.__init__)``, so no extra parameters are allowed).
    """

    #: epochs of the schedule
    short_num_epochs: int = 1
    #: training iterations per epoch (nnU-Net default: 250)
    short_iterations_per_epoch: int = 25
    #: validation iterations per epoch (nnU-Net default: 50)
    short_val_iterations_per_epoch: int = 5

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.short_num_epochs
        self.num_iterations_per_epoch = self.short_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.short_val_iterations_per_epoch
