"""Short training schedules for demos, tests and CPU machines.

nnU-Net's own ``nnUNetTrainer_Xepochs`` variants only change ``num_epochs`` and keep
250 iterations per epoch, which is hours on a CPU.  Our ``_Nepochs`` variants also
shorten the epoch so that "N epochs" finishes in minutes on two CPU cores; the
iteration counts are class attributes so a subclass (or a user's own variant) can
change them without touching ``__init__``.

``ULSEG_NUM_THREADS`` caps the CPU threads of a training on ``-device cpu`` (nnU-Net takes
every core), for benchmark runs that share a machine.

Benchmarks compare trainers at an equal, larger budget without new classes: the
environment variables ``ULSEG_SHORT_EPOCHS`` and ``ULSEG_SHORT_ITERATIONS`` (like
nnU-Net's own ``nnUNet_*`` knobs) override every short schedule, and the training log
says so.
"""
from __future__ import annotations

import os

import torch


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


class ShortSchedule:
    """Mixin for ``nnUNetTrainer`` subclasses: N short epochs.

    For nnU-Net's own trainer put it first in the bases (``class X(ShortSchedule,
    nnUNetTrainer)``); the weak-label trainers already have it in their one base
    (:class:`~nnunet_ulseg.training.weak.nnUNetTrainerWeak`, with ``short_num_epochs =
    None``), so their ``_Nepochs`` variants only set the attributes.  The ``__init__``
    signature is nnU-Net's own (nnU-Net rebuilds its init kwargs from
    ``inspect.signature(self.__init__)``, so no extra parameters are allowed).
    """

    #: epochs of the schedule; None keeps nnU-Net's schedule (and ignores the environment overrides)
    short_num_epochs: int | None = 10
    #: training iterations per epoch (nnU-Net default: 250)
    short_iterations_per_epoch: int = 25
    #: validation iterations per epoch (nnU-Net default: 50)
    short_val_iterations_per_epoch: int = 5

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._schedule_override = False
        threads = _env_int("ULSEG_NUM_THREADS")
        if threads is not None and torch.device(device).type == "cpu":
            # nnUNetv2_train -device cpu takes every core; two benchmark runs sharing a machine
            # each take their share instead (oversubscribed OpenMP threads spin and lose far more)
            torch.set_num_threads(threads)
        if self.short_num_epochs is None:
            return
        epochs, iterations = _env_int("ULSEG_SHORT_EPOCHS"), _env_int("ULSEG_SHORT_ITERATIONS")
        self.num_epochs = epochs or self.short_num_epochs
        self.num_iterations_per_epoch = iterations or self.short_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.short_val_iterations_per_epoch
        self._schedule_override = (epochs, iterations) != (None, None)

    def on_train_start(self):
        super().on_train_start()
        if self.short_num_epochs is None:
            return
        self.print_to_log_file(
            f"short schedule: {self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations"
            + (" (set by ULSEG_SHORT_EPOCHS/ULSEG_SHORT_ITERATIONS)" if self._schedule_override else ""))
