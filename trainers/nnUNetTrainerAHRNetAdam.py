"""AHRNet + RLS with the paper's optimisation recipe (AHRNet Sec. 3 "Implementation Details").

Adam, initial learning rate 1e-3, x0.1 at epochs 40 and 60 of 80, expressed as 1/2 and 3/4
of ``num_epochs`` so that nnU-Net's and the short schedules keep the shape
(``optimizer_recipe = "ahrnet"``, :mod:`nnunet_ulseg.training.optim`, which also gives the
choices where the paper is silent).  Everything else is ``nnUNetTrainerAHRNetRLS`` (Table 1
"AHRNet+RLS", Table 2 row 6): the other AHRNet trainers keep nnU-Net's SGD + poly so that
their rows differ in network and loss only.

Not done: the paper's per-iteration random resize of each image's long side into
[128, 256].  nnU-Net trains on fixed-size patches (its plans' patch size, also used by the
predictor) and derives the deep-supervision targets in its augmentation pipeline; the
converter instead writes every crop with its side in [128, 256] and nnU-Net's scaling
augmentation varies lesion size.
"""
from nnunet_ulseg.training.ahrnet import nnUNetTrainerWeakAHRNet


class nnUNetTrainerAHRNetRLSAdam(nnUNetTrainerWeakAHRNet):
    use_rls = True
    optimizer_recipe = "ahrnet"


class nnUNetTrainerAHRNetW18RLSAdam(nnUNetTrainerAHRNetRLSAdam):
    hrnet_config = "w18"


class nnUNetTrainerAHRNetRLSAdam_10epochs(nnUNetTrainerAHRNetRLSAdam):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18RLSAdam_10epochs(nnUNetTrainerAHRNetW18RLSAdam):
    short_num_epochs = 10
