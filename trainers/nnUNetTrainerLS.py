"""Like nnUNetTrainerRLS but the level set term covers the whole image (AHRNet Table 2, row 5 "LS")."""
from nnunet_ulseg.training.weak import nnUNetTrainerWeak


class nnUNetTrainerLS(nnUNetTrainerWeak):
    use_rls = True
    rls_region = "image"


class nnUNetTrainerLS_1epochs(nnUNetTrainerLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerLS_10epochs(nnUNetTrainerLS):
    short_num_epochs = 10
