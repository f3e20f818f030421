"""Reference masks for ``ulseg evaluate`` and ``ulseg refine --truth``: one protocol, several kinds of folder.

:mod:`.base` defines the protocol (a lesion's mask in key-slice geometry, or why there is
none); the kinds are :mod:`.png` (DeepLesion-named key-slice PNGs), :mod:`.volume`
(NIfTI/MHA with the key slice from the sidecar, and ULS23 VOIs), :mod:`.crop` (crop
geometry, pasted back: the lossy path), :mod:`.sample` (a generated sample's true masks);
:mod:`.detect` chooses one (``--ref-format``); :mod:`.crop_writer` writes crop-geometry
references from a sample.
"""
from nnunet_ulseg.evaluation.references.base import SLICE_RULES, Reference, RefMask, lesion_in_slice
from nnunet_ulseg.evaluation.references.crop import CropReference, crop_label
from nnunet_ulseg.evaluation.references.crop_writer import slice_mask_to_crop, write_reference_crops
from nnunet_ulseg.evaluation.references.detect import (
    REF_FORMATS,
    check_reference_folder,
    detect_format,
    open_reference,
)
from nnunet_ulseg.evaluation.references.png import PngReference
from nnunet_ulseg.evaluation.references.sample import SampleReference, TrueMasks
from nnunet_ulseg.evaluation.references.volume import VolumeReference

__all__ = ["REF_FORMATS", "SLICE_RULES", "CropReference", "PngReference", "RefMask", "Reference", "SampleReference",
           "TrueMasks", "VolumeReference", "check_reference_folder", "crop_label", "detect_format", "lesion_in_slice", "open_reference",
           "slice_mask_to_crop", "write_reference_crops"]
