"""nnU-Net's U-Net + l_seg, then the regional level set loss on I' (AHRNet Sec. 2.2-2.3; Table 1 "nnUNet+RLS")."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ulseg.training.schedule import ShortSchedule
from nnunet_ulseg.training.weak import WeakLossMixin


class nnUNetTrainerRLS(WeakLossMixin, nnUNetTrainer):
    use_rls = True
    rls_region = "rls"


class nnUNetTrainerRLS_1epochs(ShortSchedule, nnUNetTrainerRLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerRLS_10epochs(ShortSchedule, nnUNetTrainerRLS):
    short_num_epochs = 10
