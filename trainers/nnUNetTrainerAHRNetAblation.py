"""AHRNet ablation trainers (AHRNet Table 2), l_seg = BCE + IoU (Eq. 3).

* ``nnUNetTrainerHRNetDE``: row 2, HRNet + decoder (DE), no dual or scale attention.
* ``nnUNetTrainerHRNetDEDA``: row 3, + DE + dual attention (DA), no scale attention.
* ``nnUNetTrainerAHRNetLS``: row 5, AHRNet (DE + DA + SA) + the level set term over the
  whole image instead of I' (``rls_region = "image"``), on the same schedule as RLS (row 6,
  ``nnUNetTrainerAHRNetRLS``).
Rows 1, 4 and 6 are ``nnUNetTrainerHRNet``, ``nnUNetTrainerAHRNet``, ``nnUNetTrainerAHRNetRLS``.

``nnUNetTrainerAHRNetW18DE`` / ``...W18DEDA`` / ``...W18LS`` are the same rows on the lighter
HRNet-W18 backbone (the paper's widths are W32's), for CPU benchmarks, beside
``nnUNetTrainerHRNetW18`` (row 1), ``nnUNetTrainerAHRNetW18`` (row 4) and
``nnUNetTrainerAHRNetW18RLS`` (row 6).  Where the paper is silent: rows 2 and 3 keep the DE
decoder's three outputs and their plain-sum deep supervision (Sec. 2.3); the paper does
not say which outputs its ablations supervise.
"""
from nnunet_ulseg.training.ahrnet import nnUNetTrainerWeakAHRNet


class nnUNetTrainerHRNetDE(nnUNetTrainerWeakAHRNet):
    use_decoder, use_dual_attention, use_scale_attention = True, False, False


class nnUNetTrainerHRNetDEDA(nnUNetTrainerWeakAHRNet):
    use_decoder, use_dual_attention, use_scale_attention = True, True, False


class nnUNetTrainerAHRNetLS(nnUNetTrainerWeakAHRNet):
    use_rls = True
    rls_region = "image"


class nnUNetTrainerHRNetW18(nnUNetTrainerWeakAHRNet):
    hrnet_config = "w18"
    use_decoder = use_dual_attention = use_scale_attention = False


class nnUNetTrainerAHRNetW18DE(nnUNetTrainerHRNetDE):
    hrnet_config = "w18"


class nnUNetTrainerAHRNetW18DEDA(nnUNetTrainerHRNetDEDA):
    hrnet_config = "w18"


class nnUNetTrainerAHRNetW18LS(nnUNetTrainerAHRNetLS):
    hrnet_config = "w18"


class nnUNetTrainerHRNetDE_10epochs(nnUNetTrainerHRNetDE):
    short_num_epochs = 10


class nnUNetTrainerHRNetDEDA_10epochs(nnUNetTrainerHRNetDEDA):
    short_num_epochs = 10


class nnUNetTrainerAHRNetLS_10epochs(nnUNetTrainerAHRNetLS):
    short_num_epochs = 10


class nnUNetTrainerHRNetW18_10epochs(nnUNetTrainerHRNetW18):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18DE_10epochs(nnUNetTrainerAHRNetW18DE):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18DEDA_10epochs(nnUNetTrainerAHRNetW18DEDA):
    short_num_epochs = 10


class nnUNetTrainerAHRNetW18LS_10epochs(nnUNetTrainerAHRNetW18LS):
    short_num_epochs = 10
