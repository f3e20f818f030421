"""Weak-label losses of AHRNet (Sec. 2.2-2.3): BCE and IoU (Eq. 3), regional level set (Eq. 2)."""
from nnunet_ulseg.losses.bce import MaskedBCELoss
from nnunet_ulseg.losses.compound import WeakSegLoss
from nnunet_ulseg.losses.iou import SoftIoULoss
from nnunet_ulseg.losses.level_set import RegionalLevelSetLoss, intensity_at, level_set_energy
from nnunet_ulseg.losses.region import build_region, rls_region, scale_mask_about_centroid

__all__ = [
    "MaskedBCELoss", "SoftIoULoss", "RegionalLevelSetLoss", "WeakSegLoss",
    "intensity_at", "level_set_energy", "build_region", "rls_region", "scale_mask_about_centroid",
]
