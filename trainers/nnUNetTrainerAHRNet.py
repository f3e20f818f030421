"""HRNet / AHRNet trainers (AHRNet paper Table 1 and Table 2 rows 1 and 4), l_seg = BCE + IoU.

``...RLS`` adds the regional level set loss after the l_seg phase (Table 1 "+RLS", Table 2
row 6).  ``_Nepochs`` are short schedules; ``W18`` variants use the lighter HRNet-W18
backbone (the paper's widths are W32's; W18 is for CPU machines).
"""
from nnunet_ulseg.training.ahrnet import nnUNetTrainerWeakAHRNet


class nnUNetTrainerHRNet(nnUNetTrainerWeakAHRNet):
    use_decoder = use_dual_attention = use_scale_attention = False


class nnUNetTrainerHRNetRLS(nnUNetTrainerHRNet):
    use_rls = True


class nnUNetTrainerAHRNet(nnUNetTrainerWeakAHRNet):
    pass


class nnUNetTrainerAHRNetRLS(nnUNetTrainerAHRNet):
    use_rls = True


class nnUNetTrainerAHRNetW18(nnUNetTrainerAHRNet):
    hrnet_config = "w18"


class nnUNetTrainerAHRNetW18RLS(nnUNetTrainerAHRNetW18):
    use_rls = True


class nnUNetTrainerHRNet_1epochs(nnUNetTrainerHRNet):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerAHRNetRLS_1epochs(nnUNetTrainerAHRNetRLS):
    short_num_epochs, short_iterations_per_epoch, short_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainerHRNet_10epochs(nnUNetTrainerHRNet):
    short_num_epochs = 10


class nnUNetTrainerHRNetRLS_10epochs(nnUNetTrainerHRNetRLS):
    short_num_epochs = 10


class nnUNetTrainerAHRNet_10epochs(nnUNetTrainerAHRNet):
    short_num_epochs = 10


class nnUNetTrainerAHRNetRLS_10epochs(nnUNetTrainerAHRNetRLS):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18_10epochs(nnUNetTrainerAHRNetW18):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18RLS_5epochs(nnUNetTrainerAHRNetW18RLS):
    """``ulseg demo``'s default: two refinement rounds fit in 10 minutes on 2 CPU cores (measured 9:14 at
    25 iterations per epoch on a quiet machine; 20 leaves a margin)."""
    short_num_epochs = 5
    short_iterations_per_epoch = 20


class nnUNetTrainerAHRNetW18RLS_10epochs(nnUNetTrainerAHRNetW18RLS):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18S2(nnUNetTrainerAHRNetW18):
    """AHRNet-W18 with a stride-2 stem: every HRNet branch at twice the resolution, for small crops
    (at 64 px the paper's stride-4 branch is 16 x 16); the DE decoder then has outputs at 1 and 1/2."""
    stem_stride = 2


class nnUNetTrainerAHRNetW18S2RLS(nnUNetTrainerAHRNetW18S2):
    use_rls = True


class nnUNetTrainerAHRNetW18S2_10epochs(nnUNetTrainerAHRNetW18S2):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18S2RLS_10epochs(nnUNetTrainerAHRNetW18S2RLS):
    short_num_epochs = 10
