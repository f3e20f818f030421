"""AHRNet + RLS with E²Net's edge head and edge distance-map loss on weak-label lesion datasets (issue 14 item 8).

``nnUNetTrainerAHRNetEdgeRLS`` is ``nnUNetTrainerAHRNetRLS`` (AHRNet, l_seg = BCE + IoU, RLS after the
l_seg phase) plus an edge head whose logits are supervised by the edge distance map of the pseudo mask
with weight 4 (E²Net Sec. 2.3, Eq. 3), ignore-label pixels masked (``nnunet_ulseg/training/e2net.py``).
``W18`` uses the lighter HRNet-W18 backbone; ``_Nepochs`` are short schedules.
"""
from nnunet_ulseg.training.e2net import nnUNetTrainerWeakAHRNetEdge


class nnUNetTrainerAHRNetEdgeRLS(nnUNetTrainerWeakAHRNetEdge):
    use_rls = True


class nnUNetTrainerAHRNetW18EdgeRLS(nnUNetTrainerAHRNetEdgeRLS):
    hrnet_config = "w18"


class nnUNetTrainerAHRNetEdgeRLS_1epochs(nnUNetTrainerAHRNetEdgeRLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerAHRNetEdgeRLS_10epochs(nnUNetTrainerAHRNetEdgeRLS):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18EdgeRLS_10epochs(nnUNetTrainerAHRNetW18EdgeRLS):
    short_num_epochs = 10
