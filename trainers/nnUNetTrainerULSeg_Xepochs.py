"""nnU-Net's default trainer (U-Net, Dice+CE with the ignore label) on short schedules.

The weak-label baseline of the papers' tables ("nnUNet" trained on RECIST ellipses).
``_1epochs`` is sized for integration tests, ``_10epochs`` for ``ulseg demo`` on a CPU.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ulseg.training.schedule import ShortSchedule


class nnUNetTrainerULSeg_1epochs(ShortSchedule, nnUNetTrainer):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerULSeg_10epochs(ShortSchedule, nnUNetTrainer):
    short_num_epochs = 10
