"""Reading label images for the evaluation: crop-geometry label files and reference arrays.

One reader (SimpleITK) for every format the evaluation meets (``.mha``, ``.nii.gz``,
``.nii``, ``.nrrd``), so crops, key-slice references and ULS23 VOIs are read the same
way: as the array SimpleITK returns, indexed ``[z, y, x]`` (``[y, x]`` for 2D files),
with singleton axes squeezed (ULS23 label files carry a trailing one, 256 x 256 x 128 x 1,
which SimpleITK reads as a 4D image or as a vector image; both squeeze to ``[z, y, x]``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: File endings read as label images (``.png`` references are read with OpenCV instead).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def has_image_ending(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_ENDINGS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_ENDINGS)


def read_label_array(path: str | Path) -> np.ndarray:
    """The array of a label image, ``[z, y, x]`` or ``[y, x]``, every singleton axis removed.

    Raises ``ValueError`` naming the file when it cannot be read or has more than three
    non-singleton axes.
    """
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read as an image ({str(exc).strip().splitlines()[-1]})") from None
    squeezed = np.squeeze(array)
    if squeezed.ndim > 3:
        raise ValueError(f"{path}: label array of shape {array.shape} has more than 3 non-singleton axes")
    return squeezed


def read_crop_mask(path: str | Path) -> np.ndarray:
    """A 2D crop-geometry label image (``.mha`` etc.) as a ``[y, x]`` array."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return array.reshape(array.shape[-2:])


def foreground(array: np.ndarray) -> np.ndarray:
    """Lesion pixels of a reference array: ``> 0.5`` for floating point, ``> 0`` for integers and bool.

    A float label (ULS23's float32 {0, 1}) is thresholded at half its lesion value, so
    stored rounding (0.999...) cannot drop a pixel; an integer mask counts every non-zero
    value (a 0/255 PNG, label 1, an instance id) as lesion, never as background.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        return array > 0.5
    return array > 0
