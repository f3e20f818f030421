"""RLS switched on when l_seg has converged (AHRNet Sec. 2.3: "we do not add l_rls for training
until the model converges using only l_seg"), instead of at a fixed fraction of the epochs.

``rls_start = "plateau"`` (:mod:`nnunet_ulseg.training.rls_switch`): on at the first epoch
whose previous epoch's mean training l_seg (highest-resolution output) improved by at most
2 % (relative) on the best of the 3 epochs before it, not before 1/4 of the epochs, and at
the latest at 1/2 (the fraction rule of the other RLS trainers, kept as the fallback, so
this rule never trains fewer epochs with RLS than ``nnUNetTrainerRLS``; the paper gives no
epoch).  The decision is derived from nnU-Net's checkpointed logger, so it survives a
resume; the training log says at which epoch and why RLS came on.

``nnUNetTrainerRLSPlateau``: nnU-Net's U-Net, BCE + IoU (as ``nnUNetTrainerRLS``).
``nnUNetTrainerAHRNetW18RLSPlateau``: AHRNet-W18 (as ``nnUNetTrainerAHRNetW18RLS``).
With the ``_10epochs`` schedules the plateau can switch RLS on at epoch 4 at the earliest
(3 epochs of history and one to compare), the fallback at epoch 5.
"""
from nnunet_ulseg.training.ahrnet import nnUNetTrainerWeakAHRNet
from nnunet_ulseg.training.weak import nnUNetTrainerWeak


class nnUNetTrainerRLSPlateau(nnUNetTrainerWeak):
    use_rls = True
    rls_start = "plateau"


class nnUNetTrainerAHRNetW18RLSPlateau(nnUNetTrainerWeakAHRNet):
    hrnet_config = "w18"
    use_rls = True
    rls_start = "plateau"


class nnUNetTrainerRLSPlateau_10epochs(nnUNetTrainerRLSPlateau):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18RLSPlateau_10epochs(nnUNetTrainerAHRNetW18RLSPlateau):
    short_num_epochs = 10
