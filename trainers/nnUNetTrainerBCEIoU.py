"""nnU-Net's U-Net trained with AHRNet's l_seg = BCE + IoU (Eq. 3) only."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ulseg.training.schedule import ShortSchedule
from nnunet_ulseg.training.weak import WeakLossMixin


class nnUNetTrainerBCEIoU(WeakLossMixin, nnUNetTrainer):
    use_rls = False


class nnUNetTrainerBCEIoU_1epochs(ShortSchedule, nnUNetTrainerBCEIoU):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerBCEIoU_10epochs(ShortSchedule, nnUNetTrainerBCEIoU):
    short_num_epochs = 10
