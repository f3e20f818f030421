"""nnU-Net's U-Net trained with AHRNet's l_seg = BCE + IoU (Eq. 3) only (Sec. 2.3, no l_rls)."""
from nnunet_ulseg.training.weak import nnUNetTrainerWeak


class nnUNetTrainerBCEIoU(nnUNetTrainerWeak):
    use_rls = False


class nnUNetTrainerBCEIoU_1epochs(nnUNetTrainerBCEIoU):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerBCEIoU_10epochs(nnUNetTrainerBCEIoU):
    short_num_epochs = 10
