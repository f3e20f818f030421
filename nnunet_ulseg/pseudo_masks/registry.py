"""Pseudo-mask makers by name: how a RECIST mark on a crop becomes a round-1 training label.

Every maker has one signature, ``make(recist_crop_points, crop_hu_image, shape, window) ->
(mask, status)``: the mark's 8 numbers in crop pixels (long axis first, 0-based), the
crop's HU image (``None`` is fine for makers that do not look at it), the label shape
``(H, W)`` and the lesion's DICOM window ``(min, max)`` HU; the mask is uint8 with
:data:`nnunet_ulseg.labels.LESION` on the lesion and 0 elsewhere, ``status`` a short word
(``ok``, ``fallback_ellipse``, ``empty``, ``grabcut_error``) that the converters write to
``lesions.csv`` (``pseudo_status``) and count in their summary.

Names (``--pseudo`` of ``convert-deeplesion`` and ``convert-uls23``):

* ``ellipse``: the RECIST ellipse (AHRNet Sec. 2.2, :func:`nnunet_ulseg.recist.ellipse_mask`), the default;
* ``grabcut``: GrabCut-R (WSSS Sec. 3.1, :mod:`.grabcut_r`);
* ``dilated_recist``, ``grabcut_box``, ``grabcut_i``: WSSS Table 1's baselines (:mod:`.table1`).

The makers are imported on first use, so the command-line parsers can list the names
without importing OpenCV and SciPy.
"""
from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

#: name -> ``module:function`` of the maker (imported on first use)
MAKERS: dict[str, str] = {
    "ellipse": "nnunet_ulseg.pseudo_masks.registry:make_ellipse",
    "grabcut": "nnunet_ulseg.pseudo_masks.grabcut_r:make_grabcut_r",
    "dilated_recist": "nnunet_ulseg.pseudo_masks.table1:make_dilated_recist",
    "grabcut_box": "nnunet_ulseg.pseudo_masks.table1:make_grabcut_box",
    "grabcut_i": "nnunet_ulseg.pseudo_masks.table1:make_grabcut_i",
}
PSEUDO_NAMES = tuple(MAKERS)
DEFAULT_PSEUDO = "ellipse"
#: makers that read the crop's image (the others need only the mark)
IMAGE_MAKERS = frozenset({"grabcut", "grabcut_box", "grabcut_i"})


def make_ellipse(recist_crop_points, crop_hu_image, shape, window) -> tuple[np.ndarray, str]:
    """Registry maker ``ellipse``: the RECIST ellipse (the image and window are not used)."""
    from nnunet_ulseg.labels import LESION
    from nnunet_ulseg.recist import Recist, ellipse_mask

    mask = ellipse_mask(Recist.from_points(recist_crop_points), tuple(shape))
    return mask.astype(np.uint8) * np.uint8(LESION), "ok"


def check_pseudo(name: str) -> str:
    """``name`` if it is a registered maker, else ``ValueError`` listing the names."""
    if name not in MAKERS:
        raise ValueError(f"pseudo mask must be one of {', '.join(PSEUDO_NAMES)}; got {name!r}")
    return name


def maker(name: str) -> Callable[..., tuple[np.ndarray, str]]:
    """The maker function registered as ``name``."""
    module, function = MAKERS[check_pseudo(name)].split(":")
    return getattr(importlib.import_module(module), function)


def make_pseudo_mask(name: str, recist_crop_points, crop_hu_image, shape: tuple[int, int],
                     window: tuple[float, float]) -> tuple[np.ndarray, str]:
    """Run the maker ``name`` (module docstring); returns ``(uint8 mask, status)``."""
    return maker(name)(recist_crop_points, crop_hu_image, tuple(int(s) for s in shape), window)
