"""nnU-Net's default trainer plus the regional level set loss (AHRNet Table 1 "nnUNet" vs "nnUNet+RLS").

Loss: nnU-Net's own ``DC_and_CE_loss`` (ignore label masked in Dice, ``ignore_index`` in CE),
built by ``nnUNetTrainer._build_loss`` itself, with nnU-Net's deep-supervision weights
(1/2^i, lowest output off, normalised; 1e-6 under DDP), plus ``0.1 * l_rls`` (Eq. 2, region
I', lambda1 = 1, lambda2 = 3) switched on by the same schedule as the other RLS trainers
(half way by default, Sec. 2.3).  Network, optimiser and schedule are nnU-Net's, so against
``nnUNetTrainer`` only RLS differs; ``nnUNetTrainerRLS`` also swaps Dice + CE for BCE + IoU.

Where the paper is silent: its "nnUNet+RLS" row does not say which l_seg it kept; nnU-Net's
own loss is the reading under which the row measures RLS alone.  RLS is added to every
output that nnU-Net weights (same weight on each, as in the other RLS trainers).  Dice, CE
and RLS of the highest-resolution output are logged per epoch (``train_dice`` is nnU-Net's
Dice loss, i.e. minus the soft Dice).
"""
from nnunet_ulseg.training.weak import nnUNetTrainerWeak


class nnUNetTrainerDiceCERLS(nnUNetTrainerWeak):
    seg_loss = "dice_ce"
    use_rls = True
    rls_region = "rls"


class nnUNetTrainerDiceCERLS_1epochs(nnUNetTrainerDiceCERLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerDiceCERLS_10epochs(nnUNetTrainerDiceCERLS):
    short_num_epochs = 10


class nnUNetTrainerDiceCERLSNoIgnore(nnUNetTrainerDiceCERLS):
    """Ablation of issue 10's fix: RLS summed over I' without its ignore-label pixels (``rls_labelled``).

    This was the behaviour before the fix; in rounds >= 2 it leaves the boundary band (the ignore
    label) without any gradient. Kept only to measure the fix (before/after rows in bench_weak).
    """

    rls_region = "rls_labelled"


class nnUNetTrainerDiceCERLSNoIgnore_10epochs(nnUNetTrainerDiceCERLSNoIgnore):
    short_num_epochs = 10
