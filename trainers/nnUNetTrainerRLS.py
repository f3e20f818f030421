"""nnU-Net's U-Net + l_seg = BCE + IoU, then the regional level set loss on I' (AHRNet Sec. 2.2-2.3).

Table 1 "nnUNet+RLS" with AHRNet's l_seg; ``nnUNetTrainerDiceCERLS`` keeps nnU-Net's Dice + CE
instead, so that only RLS differs from nnU-Net's default.
"""
from nnunet_ulseg.training.weak import nnUNetTrainerWeak


class nnUNetTrainerRLS(nnUNetTrainerWeak):
    use_rls = True
    rls_region = "rls"


class nnUNetTrainerRLS_1epochs(nnUNetTrainerRLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerRLS_10epochs(nnUNetTrainerRLS):
    short_num_epochs = 10


class nnUNetTrainerRLSUnnormalized(nnUNetTrainerRLS):
    """Eq. 2 literally on nnU-Net's z-scored intensities: l_rls not divided by the variance inside I'
    (issue 10's "measure with and without" of ``losses/level_set.py``'s default normalisation)."""
    rls_normalize_intensity = False


class nnUNetTrainerRLSUnnormalized_10epochs(nnUNetTrainerRLSUnnormalized):
    short_num_epochs = 10
