"""NIfTI/MHA reference masks with the key slice taken from the sidecar (``--ref-format volume`` and ``uls23``).

Arrays are read as SimpleITK returns them, ``[z, y, x]`` (or ``[y, x]``), singleton axes
squeezed (:func:`~nnunet_ulseg.evaluation.label_io.read_label_array`).  A 2D file is the
key slice itself; from a 3D file the slice ``z = key_slice - first`` is used, where
``key_slice`` is the sidecar's and ``first`` is the first slice number encoded in the file
name (below), ``0`` otherwise, so ``key_slice`` is then a **0-based** z index (the ULS23
converter's contract).  A DeepLesion row (File_name ``*.png``) holds the PNG's slice
number instead, so a 3D file without a slice range in its name is refused for it.  The slice must be ``image_height x image_width`` (rows = y); a
wrong shape or a z outside the volume is an error naming the file and the case.

``volume``: a lesion's file is looked up, in this order (``<ext>`` is each of
:data:`~nnunet_ulseg.evaluation.label_io.IMAGE_ENDINGS`):

1. ``<ref>/<case><ext>``: one file per lesion; every foreground pixel is the lesion;
2. ``<ref>/<File_name>`` when File_name itself is an image file (ULS23-style rows):
   one lesion per file, as 1;
3. ``<ref>/<File_name without .png><ext>``: the key slice of a DeepLesion row, a 2D file
   shared by the lesions of that slice;
4. ``<ref>/<patient:06d>_<study:02d>_<series:02d>_<first>-<last><ext>``: a DeepLesion
   sub-volume named by its slice range (the naming of DeepLesion's NIfTI export), the one
   whose range holds the key slice; ``z = key_slice - first``; shared by its lesions.

Shared files (3, 4) give one lesion by :func:`~.base.lesion_in_slice` (instance under the
RECIST mark, or the components its axes cross).  Foreground: ``> 0.5`` for float arrays,
``> 0`` for integer ones.

``uls23``: ULS23 VOIs (DESIGN "ULS23 on disk"): ``<ref>/<File_name>`` only, a label volume
that may be float32 with a trailing singleton axis (256 x 256 x 128 x 1), values {0, 1},
possibly labelled on one slice only; lesion = value > 0.5 on slice ``key_slice`` (0-based
z), the whole slice being this lesion's.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.label_io import IMAGE_ENDINGS, has_image_ending, read_label_array
from nnunet_ulseg.evaluation.references.base import Reference, RefMask, check_slice_shape, lesion_in_slice

_RANGE = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)-(\d+)(\.nii\.gz|\.nii|\.mha|\.mhd|\.nrrd)$", re.IGNORECASE)


def key_slice_of(array: np.ndarray, row: LesionRow, path: Path, first: int = 0) -> np.ndarray:
    """The 2D key slice of a reference array: the array itself if 2D, else ``array[key_slice - first]``; checked."""
    if array.ndim == 2:
        plane = array
    elif array.ndim == 3:
        if first == 0 and row.File_name.lower().endswith(".png"):
            # a DeepLesion row: key_slice is the PNG's slice number in its series, not a z index into
            # whatever range this file covers; guessing the offset would score the wrong slice silently
            raise ValueError(f"{path}: case {row.case} is a DeepLesion key slice ({row.File_name}, slice number "
                             f"{row.key_slice}); a 3D reference needs its slice range in the name "
                             f"({row.patient:06d}_{row.study:02d}_{row.series:02d}_<first>-<last>.nii.gz, "
                             "DeepLesion's NIfTI export) or give the 2D key slice as <case>.nii.gz")
        z = row.key_slice - first
        if not 0 <= z < array.shape[0]:
            raise ValueError(f"{path}: case {row.case}'s key slice {row.key_slice} is z = {z}, outside the "
                             f"volume's {array.shape[0]} slices (array [z, y, x] of shape {array.shape})")
        plane = array[z]
    else:
        raise ValueError(f"{path}: expected a 2D or 3D label image, got shape {array.shape}")
    check_slice_shape(plane, row, path)
    return plane


class VolumeReference(Reference):
    """NIfTI/MHA references (module docstring): ``kind`` ``volume`` (every lookup) or ``uls23`` (File_name only)."""

    def __init__(self, folder: str | Path, kind: str = "volume", rule: str = "auto"):
        super().__init__(folder)
        if kind not in ("volume", "uls23"):
            raise ValueError(f"kind must be 'volume' or 'uls23', got {kind!r}")
        self.kind, self.rule = kind, rule
        self.rule_text = ("<ref>/<File_name> (ULS23 VOI), slice z = key_slice (0-based, array [z, y, x]), "
                          "lesion = value > 0.5" if kind == "uls23" else
                          "<ref>/<case><ext> or <ref>/<File_name> (one lesion per file), or shared: "
                          "<ref>/<File_name stem><ext>, <ref>/<pp>_<ss>_<se>_<first>-<last><ext>; "
                          "2D file = key slice, 3D: z = key_slice - first (0 when the name has no range); "
                          "foreground > 0.5 (float) or > 0 (integer); shared files: instance under the RECIST mark "
                          "or the 8-connected component(s) its axes cross")
        self._ranges: dict[tuple[int, int, int], list[tuple[int, int, Path]]] | None = None
        self._cache: dict[Path, np.ndarray] = {}

    def _range_files(self) -> dict[tuple[int, int, int], list[tuple[int, int, Path]]]:
        if self._ranges is None:
            self._ranges = {}
            for p in sorted(self.folder.iterdir()) if self.folder.is_dir() else ():
                m = _RANGE.match(p.name)
                if m:
                    key = tuple(int(g) for g in m.groups()[:3])
                    self._ranges.setdefault(key, []).append((int(m.group(4)), int(m.group(5)), p))
        return self._ranges

    def locate(self, row: LesionRow) -> tuple[Path, int, str] | None:
        """``(path, first, rule)`` of ``row``'s file, or ``None`` (module docstring for the order)."""
        direct = self.folder / row.File_name
        if self.kind == "uls23":
            return (direct, 0, "whole") if direct.is_file() else None
        for ext in IMAGE_ENDINGS:
            if (self.folder / f"{row.case}{ext}").is_file():
                return self.folder / f"{row.case}{ext}", 0, "whole"
        if has_image_ending(row.File_name) and direct.is_file():
            return direct, 0, "whole"
        stem = row.File_name[:-4] if row.File_name.lower().endswith(".png") else row.File_name
        for ext in IMAGE_ENDINGS:
            if (self.folder / f"{stem}{ext}").is_file():
                return self.folder / f"{stem}{ext}", 0, self.rule
        for first, last, path in self._range_files().get((row.patient, row.study, row.series), []):
            if first <= row.key_slice <= last:
                return path, first, self.rule
        return None

    def get(self, row: LesionRow) -> RefMask:
        found = self.locate(row)
        if found is None:
            looked = (f"{self.folder / row.File_name}" if self.kind == "uls23" else
                      f"{self.folder}/{row.case}<ext>, {row.File_name} or a slice-range volume")
            return RefMask(None, "", f"case {row.case}: no {looked}")
        path, first, rule = found
        if path not in self._cache:  # a VOI / sub-volume serves its lesions; keep the last one only
            self._cache = {path: read_label_array(path)}
        array = self._cache[path]
        plane = key_slice_of(array, row, path, first)
        z = "" if array.ndim == 2 else f" z={row.key_slice - first}"
        return lesion_in_slice(plane, row, f"{path}{z}", rule)
