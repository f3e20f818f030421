"""Slice-geometry PNG reference masks named like DeepLesion key slices (``--ref-format png``).

A lesion's mask file is looked up, in this order:

1. ``<ref>/<patient:06d>_<study:02d>_<series:02d>/<key_slice:03d>.png``: an
   ``Images_png``-style tree (DeepLesion's own layout, DESIGN "DeepLesion on disk");
2. ``<ref>/<File_name>``: flat, named as the ``DL_info.csv`` row (``000001_01_01_109.png``).

The PNG holds the whole key slice (``image_height x image_width``; another shape is an
error naming the file) and is shared by every lesion of that slice, so one lesion is taken
from it by :func:`~.base.lesion_in_slice` (rule ``auto``: instance map when the slice holds
several non-zero values, else binary with the 8-connected components under the lesion's
RECIST mark).  Values: any value > 0 is lesion (0/1, 0/255 and instance ids alike), never
background.  A 16-bit PNG with more than 255 distinct values is a CT slice (the
``Images_png`` folder given by mistake), an error.  A colour PNG is accepted when its
channels agree (a grey mask saved as RGB), else an error.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.references.base import Reference, RefMask, check_slice_shape, lesion_in_slice


def png_candidates(folder: Path, row: LesionRow) -> list[Path]:
    """The paths where ``row``'s key-slice PNG may be, in lookup order (module docstring)."""
    tree = folder / f"{row.patient:06d}_{row.study:02d}_{row.series:02d}" / f"{row.key_slice:03d}.png"
    return [tree, folder / row.File_name]


def read_mask_png(path: Path) -> np.ndarray:
    """A PNG mask as a 2D integer array; ``ValueError`` naming ``path`` for unreadable, colour or CT images."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: cannot read as a PNG image")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[..., :3]
        if not (image == image[..., :1]).all():
            raise ValueError(f"{path}: colour PNG with differing channels; a reference mask must be grey "
                             "(0 = background, > 0 = lesion or instance id)")
        image = image[..., 0]
    if image.dtype == np.uint16 and np.unique(image).size > 255:
        raise ValueError(f"{path}: 16-bit PNG with {np.unique(image).size} distinct values looks like a CT slice, "
                         "not a mask (give the folder of reference masks, not Images_png)")
    return image


class PngReference(Reference):
    """Key-slice PNG masks (module docstring); ``rule`` as :func:`~.base.lesion_in_slice`."""

    kind = "png"

    def __init__(self, folder: str | Path, rule: str = "auto"):
        super().__init__(folder)
        self.rule = rule
        self.rule_text = ("<ref>/<patient:06d>_<study:02d>_<series:02d>/<key_slice:03d>.png or <ref>/<File_name>; "
                          "value > 0 = lesion; slice shared by its lesions: " +
                          {"auto": "instance under the RECIST mark if several values, else the 8-connected "
                                   "component(s) the RECIST axes cross",
                           "binary": "the 8-connected component(s) the RECIST axes cross",
                           "instance": "the instance under the RECIST mark",
                           "whole": "every foreground pixel"}[rule])
        self._cache: dict[Path, np.ndarray] = {}

    def path(self, row: LesionRow) -> Path | None:
        return next((p for p in png_candidates(self.folder, row) if p.is_file()), None)

    def get(self, row: LesionRow) -> RefMask:
        path = self.path(row)
        if path is None:
            return RefMask(None, "", f"case {row.case}: no {' or '.join(map(str, png_candidates(self.folder, row)))}")
        if path not in self._cache:  # one slice serves all its lesions; keep the last one only
            self._cache = {path: read_mask_png(path)}
        array = self._cache[path]
        check_slice_shape(array, row, path)
        return lesion_in_slice(array, row, str(path), self.rule)
