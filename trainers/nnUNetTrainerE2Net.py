"""E²Net trainers (E²Net Sec. 2, Table 3): stage 1 (R2UNet, liver) and stage 2 (liver + tumour).

* ``nnUNetTrainerR2UNetLiver``: stage 1, R2UNet, ``l_1st = IoU + BCE``, liver region only.
* ``nnUNetTrainerE2NetBaseline``: Table 3 "Baseline (2nd stage)", R2UNet with liver and tumour outputs.
* ``nnUNetTrainerE2NetEdge`` / ``...Dist``: "+ edge" / "+ dist", an edge branch supervised by the binary
  edge image / the edge distance map, fused by concatenation (Fig. 2(b)).
* ``nnUNetTrainerE2NetEdgeDCFF`` / ``...DistDCFF``: the same with DCFF (Fig. 2(c)); DistDCFF is E²Net.
* ``nnUNetTrainerE2Net``: E²Net, the paper's final model (= ``nnUNetTrainerE2NetDistDCFF``).

Loss Eq. 3 (weights 1, 1, 4), region-based labels and nnU-Net's optimiser: see
``nnunet_ulseg/training/e2net.py``, which also gives the dataset.json labels each stage needs.
Backbone: the paper's Res2Net-50 (``res2net50_26w_4s``); ``Lite`` variants use ``res2net_lite`` (one
block per stage, a quarter of the width) for CPU runs. ``_Nepochs`` are short schedules.
"""
from nnunet_ulseg.training.e2net import STAGE1_LABELS, STAGE1_REGIONS, nnUNetTrainerE2NetBase


class nnUNetTrainerR2UNetLiver(nnUNetTrainerE2NetBase):
    network_kind, edge_branch, dcff = "r2unet", False, False
    required_labels, required_regions_class_order = STAGE1_LABELS, STAGE1_REGIONS


class nnUNetTrainerE2NetBaseline(nnUNetTrainerE2NetBase):
    network_kind, edge_branch, dcff = "r2unet", False, False


class nnUNetTrainerE2NetEdge(nnUNetTrainerE2NetBase):
    edge_branch, dcff, edge_kind = True, False, "edge"


class nnUNetTrainerE2NetDist(nnUNetTrainerE2NetBase):
    edge_branch, dcff, edge_kind = True, False, "dist"


class nnUNetTrainerE2NetEdgeDCFF(nnUNetTrainerE2NetBase):
    edge_branch, dcff, edge_kind = True, True, "edge"


class nnUNetTrainerE2NetDistDCFF(nnUNetTrainerE2NetBase):
    edge_branch, dcff, edge_kind = True, True, "dist"


class nnUNetTrainerE2Net(nnUNetTrainerE2NetDistDCFF):
    pass


class nnUNetTrainerR2UNetLiverLite(nnUNetTrainerR2UNetLiver):
    backbone = "res2net_lite"


class nnUNetTrainerE2NetBaselineLite(nnUNetTrainerE2NetBaseline):
    backbone = "res2net_lite"


class nnUNetTrainerE2NetEdgeLite(nnUNetTrainerE2NetEdge):
    backbone = "res2net_lite"


class nnUNetTrainerE2NetDistLite(nnUNetTrainerE2NetDist):
    backbone = "res2net_lite"


class nnUNetTrainerE2NetEdgeDCFFLite(nnUNetTrainerE2NetEdgeDCFF):
    backbone = "res2net_lite"


class nnUNetTrainerE2NetLite(nnUNetTrainerE2Net):
    backbone = "res2net_lite"


class nnUNetTrainerE2Net_1epochs(nnUNetTrainerE2Net):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerE2NetLite_1epochs(nnUNetTrainerE2NetLite):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerR2UNetLiverLite_1epochs(nnUNetTrainerR2UNetLiverLite):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerR2UNetLiver_10epochs(nnUNetTrainerR2UNetLiver):
    short_num_epochs = 10


class nnUNetTrainerE2Net_10epochs(nnUNetTrainerE2Net):
    short_num_epochs = 10


class nnUNetTrainerR2UNetLiverLite_10epochs(nnUNetTrainerR2UNetLiverLite):
    short_num_epochs = 10


class nnUNetTrainerE2NetBaselineLite_10epochs(nnUNetTrainerE2NetBaselineLite):
    short_num_epochs = 10


class nnUNetTrainerE2NetEdgeLite_10epochs(nnUNetTrainerE2NetEdgeLite):
    short_num_epochs = 10


class nnUNetTrainerE2NetDistLite_10epochs(nnUNetTrainerE2NetDistLite):
    short_num_epochs = 10


class nnUNetTrainerE2NetEdgeDCFFLite_10epochs(nnUNetTrainerE2NetEdgeDCFFLite):
    short_num_epochs = 10


class nnUNetTrainerE2NetLite_10epochs(nnUNetTrainerE2NetLite):
    short_num_epochs = 10
