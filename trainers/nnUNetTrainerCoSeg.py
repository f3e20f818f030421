"""Lesion co-segmentation trainers (co-segmentation paper Tables 1 and 3), on ``ulseg coseg-pairs`` clusters.

``nnUNetTrainerCoSeg``: CoSegNet with CSA attention (SE channel + mean spatial, the paper's
default and best), SGD poly (Sec. 2.4).  ``...Adam``: the paper's Adam row (lr 1e-5).
Table 3's attention rows: ``...SEASPP`` (CA = SE, SA = ASPP), ``...ECA`` (CA = ECA, SA =
MSA), ``...ECAASPP`` (CA = ECA, SA = ASPP), ``...DANet`` (CSA = DANet); ``...None``: no
co-attention (the pair never interacts), the ablation of co-segmentation itself.  ``_Nepochs`` are
short schedules (``_1epochs`` for tests).  Pseudo masks: convert with ``--pseudo grabcut``
(the paper's GrabCut masks) or ``--pseudo ellipse``; see
:mod:`nnunet_ulseg.training.coseg`.
"""
from nnunet_ulseg.training.coseg import nnUNetTrainerCoSegBase


class nnUNetTrainerCoSeg(nnUNetTrainerCoSegBase):
    pass


class nnUNetTrainerCoSegAdam(nnUNetTrainerCoSeg):
    coseg_optimizer = "adam"


class nnUNetTrainerCoSegSEASPP(nnUNetTrainerCoSeg):
    coseg_attention = "aspp"


class nnUNetTrainerCoSegECA(nnUNetTrainerCoSeg):
    coseg_attention = "eca"


class nnUNetTrainerCoSegECAASPP(nnUNetTrainerCoSeg):
    coseg_attention = "eca_aspp"


class nnUNetTrainerCoSegDANet(nnUNetTrainerCoSeg):
    coseg_attention = "danet"


class nnUNetTrainerCoSegNone(nnUNetTrainerCoSeg):
    """No co-attention: the Siamese network whose two images never interact (the ablation of the pairing)."""
    coseg_attention = "none"


class nnUNetTrainerCoSeg_1epochs(nnUNetTrainerCoSeg):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerCoSeg_10epochs(nnUNetTrainerCoSeg):
    short_num_epochs = 10


class nnUNetTrainerCoSegAdam_10epochs(nnUNetTrainerCoSegAdam):
    short_num_epochs = 10


class nnUNetTrainerCoSegSEASPP_10epochs(nnUNetTrainerCoSegSEASPP):
    short_num_epochs = 10


class nnUNetTrainerCoSegECA_10epochs(nnUNetTrainerCoSegECA):
    short_num_epochs = 10


class nnUNetTrainerCoSegECAASPP_10epochs(nnUNetTrainerCoSegECAASPP):
    short_num_epochs = 10


class nnUNetTrainerCoSegDANet_10epochs(nnUNetTrainerCoSegDANet):
    short_num_epochs = 10


class nnUNetTrainerCoSegNone_10epochs(nnUNetTrainerCoSegNone):
    short_num_epochs = 10
