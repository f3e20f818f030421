"""``ulseg measure --volume``: a lesion's 3D prediction file read into slice geometry and measured in mm³.

WSSS (Sec. 3.3, Sec. 4.1 and Fig. 7) turns a RECIST mark into a lesion volume and compares
it with the RECIST ellipsoid ``pi * L * S² / 6``.  This module fixes what a 3D prediction
is for ``ulseg measure`` and how it is measured.

Input contract (one file per sidecar row, ``<case><file_ending>``): a 3D label image
``[z, y, x]`` whose z slices are **consecutive axial slices of the lesion's series**
(slice interval ``spacing_z`` of the row), label values read by the same
:class:`~nnunet_ulseg.evaluation.label_io.LabelRule` as the 2D predictions (0 background,
1 lesion, 2 ignore = background by default).  Its in-plane geometry (``geometry``,
``--volume-geometry``) is either

* ``crop`` (default): every z slice is ``crop_size x crop_size`` in the **key slice's crop
  box** of ``lesions.csv``, the geometry of the 2D predictions, so a model that predicts
  the off-key slices inside the key slice's crop (WSSS crops one ROI per lesion and
  propagates through the slices under it) writes the volume without new geometry; each
  slice is pasted back into slice geometry with the crop box, exactly as a 2D prediction
  (:func:`nnunet_ulseg.evaluation.evaluate.to_slice`, ``interpolation``); or
* ``slice``: every z slice is the whole axial slice, ``image_height x image_width``.

Measured in slice geometry with the true spacing ``(spacing_x, spacing_y, spacing_z)``, the
input of :func:`nnunet_ulseg.conversion.geometry3d.stack_slices`: the file's own spacing
is ignored (the converter writes a nominal one).  The file holds no slice index, and none
is needed for a volume, so its z slices are reported by their z in the file.  A 2D file is
read as a one-slice volume (the reader squeezes a ``1 x H x W`` volume to 2D, so the two
cannot be told apart): its volume is its area times ``spacing_z``.

Columns (:data:`VOLUME_COLUMNS`): ``volume_mm3`` of the largest 26-connected 3D component
(the 3D counterpart of the 2D ``area_mm2``'s largest 8-connected component: one lesion,
not a stray blob elsewhere) = its voxel count ``voxels`` x ``voxel_mm3`` = ``sx * sy * sz``;
``total_volume_mm3`` of every lesion voxel; ``components_3d``; ``slices``, the z slices the
largest component touches, ``first_z``/``last_z`` and ``z_extent_mm = slices * sz``;
``axes_z``, the z slice with the largest area of that component, on which the 2D columns
of :mod:`.measure` (axes, areas) are measured (RECIST's own rule: the axial slice where the
lesion is largest; on a tie the lowest z); ``recist_ellipsoid_volume_mm3`` from the
sidecar's ``long_mm``/``short_mm``, and ``volume_ratio = volume_mm3 / ellipsoid``.  An
empty volume gives volume 0, no components, ``axes_z`` 0 (the 2D columns then say empty).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_ulseg.conversion.geometry3d import row_spacing
from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.evaluate import slice_window, to_slice
from nnunet_ulseg.evaluation.label_io import LabelRule, lesion_and_ignore, read_label_array
from nnunet_ulseg.evaluation.metrics3d import recist_ellipsoid_volume, volume_mm3

VOLUME_GEOMETRIES = ("crop", "slice")
VOLUME_COLUMNS = ("volume_mm3", "total_volume_mm3", "components_3d", "voxels", "voxel_mm3", "slices", "first_z",
                  "last_z", "z_extent_mm", "axes_z", "recist_ellipsoid_volume_mm3", "volume_ratio")
_FULL = np.ones((3, 3, 3), dtype=bool)


def read_volume_window(path: Path, row: LesionRow, rule: LabelRule, geometry: str = "crop",
                       interpolation: str = "linear") -> tuple[np.ndarray, tuple[slice, slice]]:
    """The lesion mask of a 3D prediction file in slice geometry, cut to the window that holds it.

    Returns ``(mask [z, rows, cols] bool, (rows, cols))`` with the window's slices of the
    key slice (:func:`~.evaluate.slice_window`).  ``ValueError`` naming ``path`` for a file
    that is not 3D, has the wrong in-plane shape for ``geometry``, or values ``rule`` refuses.
    """
    if geometry not in VOLUME_GEOMETRIES:
        raise ValueError(f"volume geometry must be one of {VOLUME_GEOMETRIES}, got {geometry!r}")
    array = read_label_array(path)
    if array.ndim == 2:  # a one-slice volume is squeezed to 2D by the reader
        array = array[None]
    expected = (row.crop_size, row.crop_size) if geometry == "crop" else (row.image_height, row.image_width)
    if array.ndim != 3 or array.shape[1:] != expected:
        raise ValueError(f"{path}: shape {array.shape} is not a [z, y, x] volume of {geometry} slices "
                         f"{expected[0]} x {expected[1]} for case {row.case} in lesions.csv "
                         f"(--volume-geometry {'slice' if geometry == 'crop' else 'crop'}?)")
    lesion = lesion_and_ignore(array, path, rule)[0]
    if geometry == "crop":
        rows_w, cols_w = slice_window(row)
        out = np.stack([to_slice(z, row, interpolation)[rows_w, cols_w] for z in lesion])
    else:
        rows_w, cols_w = slice_window(row, mask=lesion.any(axis=0))
        out = lesion[:, rows_w, cols_w]
    return out, (rows_w, cols_w)


def largest_component_3d(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 26-connected component of a 3D mask and the number of components (ties: first label)."""
    labels, n = ndimage.label(mask, structure=_FULL)
    if n <= 1:
        return np.asarray(mask, dtype=bool).copy(), int(n)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1, int(n)


def measure_volume(mask: np.ndarray, row: LesionRow) -> tuple[dict, int]:
    """The :data:`VOLUME_COLUMNS` of a slice-geometry ``[z, y, x]`` mask of ``row``, and ``axes_z`` (module docstring)."""
    spacing = row_spacing(row)
    largest, n = largest_component_3d(mask)
    per_z = largest.sum(axis=(1, 2))
    touched = np.flatnonzero(per_z)
    axes_z = int(np.argmax(per_z)) if n else 0
    voxel = spacing[0] * spacing[1] * spacing[2]
    volume = volume_mm3(largest, spacing)
    ellipsoid = recist_ellipsoid_volume(row.long_mm, row.short_mm)
    rec = {"volume_mm3": volume, "total_volume_mm3": volume_mm3(mask, spacing), "components_3d": n,
           "voxels": int(largest.sum()), "voxel_mm3": voxel, "slices": int(touched.size),
           "first_z": int(touched[0]) if touched.size else "", "last_z": int(touched[-1]) if touched.size else "",
           "z_extent_mm": touched.size * spacing[2], "axes_z": axes_z,
           "recist_ellipsoid_volume_mm3": ellipsoid,
           "volume_ratio": volume / ellipsoid if math.isfinite(ellipsoid) and ellipsoid > 0 else float("nan")}
    return rec, axes_z


def missing_volume_record(row: LesionRow) -> dict:
    """The volume columns of a lesion whose file is missing (``--allow-missing``): NaN, the RECIST estimate kept."""
    nan = float("nan")
    return {"volume_mm3": nan, "total_volume_mm3": nan, "components_3d": "", "voxels": "", "voxel_mm3": nan,
            "slices": "", "first_z": "", "last_z": "", "z_extent_mm": nan, "axes_z": "",
            "recist_ellipsoid_volume_mm3": recist_ellipsoid_volume(row.long_mm, row.short_mm), "volume_ratio": nan}
