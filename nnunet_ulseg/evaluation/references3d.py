"""3D reference masks for ``ulseg evaluate --3d``: a lesion's true mask over consecutive slices of its series.

WSSS scores its propagated masks as volumes against the lesions' 3D masks (Sec. 4,
Table 5) and per slice against the slice distance from the RECIST slice (Fig. 4).  This is
the 3D counterpart of :mod:`.references`: one protocol, :meth:`Reference3D.get` ``(row)``
-> :class:`RefVolume`, the lesion's mask ``[z, y, x]`` in **slice geometry**
(``image_height x image_width`` of the key case's ``lesions.csv`` row) over the slice
indices ``first_slice .. first_slice + nz - 1`` of its series, or ``mask=None`` and why
there is none.  The kinds (``--ref-format``):

* ``sample``: a ``ulseg make-sample`` folder (``masks3d.csv``):
  :class:`nnunet_ulseg.demo.truth3d.TrueMasks3D`, looked up by the row's ``dl_row`` and
  checked against its ``File_name``, over the lesion's whole ``Slice_range``.
* ``volume``: label volumes ``[z, y, x]`` whose file name carries the slice range, so
  that a z can be matched to a slice index without guessing (the rule of
  :mod:`.references.volume`), looked up in this order (``<ext>`` each of
  :data:`~nnunet_ulseg.evaluation.label_io.IMAGE_ENDINGS`):

  1. ``<ref>/<case>_<first>-<last><ext>``: one lesion per file; every foreground voxel is it;
  2. ``<ref>/<pp>_<ss>_<se>_<first>-<last><ext>`` (DeepLesion's NIfTI export naming),
     shared by the lesions of the sub-volume: the lesion is chosen on the key slice by
     :func:`~.references.base.lesion_in_slice` (instance under the RECIST mark, or the
     components its axes cross) and followed through the volume: the same instance id
     for an instance map, else the 26-connected 3D components that hold the key-slice
     choice.  Whether the file is an instance map is decided on the whole volume
     (:func:`~.references.base.looks_like_instance_map`), since a key slice may show one
     instance only.  A lesion that touches another one in 3D cannot be separated (as in 2D).

  Foreground: ``> 0.5`` for float arrays, ``> 0`` for integers
  (:func:`~nnunet_ulseg.evaluation.label_io.foreground`).

:func:`open_reference3d` picks the kind (``auto``: ``masks3d.csv`` in the folder means
``sample``, else ``volume``).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_ulseg.conversion.geometry3d import Stack3D, row_spacing
from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.label_io import IMAGE_ENDINGS, foreground, read_label_array
from nnunet_ulseg.evaluation.references.base import check_slice_shape, lesion_in_slice, looks_like_instance_map

REF3D_FORMATS = ("auto", "sample", "volume")
_FULL = np.ones((3, 3, 3), dtype=bool)
_ENDING = "|".join(re.escape(e) for e in IMAGE_ENDINGS)
_SERIES_RANGE = re.compile(rf"^(\d+)_(\d+)_(\d+)_(\d+)-(\d+)({_ENDING})$", re.IGNORECASE)


@dataclass(frozen=True)
class RefVolume:
    """One lesion's 3D reference: ``mask`` ``[z, y, x]`` (bool, slice geometry) from slice ``first_slice``, or None."""

    mask: np.ndarray | None
    first_slice: int
    source: str
    reason: str = ""

    @property
    def last_slice(self) -> int:
        return self.first_slice + self.mask.shape[0] - 1

    def stack(self, row: LesionRow) -> Stack3D:
        """The mask as a :class:`~nnunet_ulseg.conversion.geometry3d.Stack3D` of ``row``'s series and key slice."""
        return Stack3D(self.mask, row_spacing(row), self.first_slice, row.key_slice)


class Reference3D(ABC):
    """Base of the 3D reference kinds (module docstring)."""

    kind = ""
    rule_text = ""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @abstractmethod
    def get(self, row: LesionRow) -> RefVolume:
        """The lesion's 3D mask in slice geometry and where it came from, or no mask and the reason."""

    def describe(self) -> dict:
        return {"kind": self.kind, "geometry": "slice", "folder": str(self.folder), "rule": self.rule_text}

    def summary_line(self) -> str:
        return f"3D reference: {self.kind} (slice geometry, read directly) from {self.folder}"


def _check_volume(mask: np.ndarray, row: LesionRow, path) -> None:
    if mask.ndim != 3:
        raise ValueError(f"{path}: expected a [z, y, x] label volume for case {row.case}, got shape {mask.shape}")
    check_slice_shape(mask[0], row, path)


class SampleReference3D(Reference3D):
    """A generated sample's true 3D masks (``masks3d.csv``, :class:`~nnunet_ulseg.demo.truth3d.TrueMasks3D`)."""

    kind = "sample"
    rule_text = ("masks.csv/masks3d.csv row of DL_info line dl_row: the lesion's instance on every slice of its "
                 "Slice_range (Masks_png)")

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        from nnunet_ulseg.demo.truth3d import TrueMasks3D  # floor 2, reads csv/PNG only

        self.truth = TrueMasks3D(folder)

    def get(self, row: LesionRow) -> RefVolume:
        volume = self.truth.volume(row.dl_row, row.File_name)
        source = f"{self.folder / 'masks3d.csv'} (DL_info line {row.dl_row}, slices " \
                 f"{int(volume.slice_indices[0])}-{int(volume.slice_indices[-1])})"
        _check_volume(volume.mask, row, source)
        return RefVolume(volume.mask, int(volume.slice_indices[0]), source)


class VolumeReference3D(Reference3D):
    """Label volumes named by their slice range (module docstring, kind ``volume``)."""

    kind = "volume"
    rule_text = ("<ref>/<case>_<first>-<last><ext> (one lesion) or <ref>/<pp>_<ss>_<se>_<first>-<last><ext> (shared: "
                 "instance under the key slice's RECIST mark, or the 26-connected components holding the components "
                 "its axes cross); z = slice index - first")

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        self._series: dict[tuple[int, int, int], list[tuple[int, int, Path]]] | None = None

    def _series_files(self):
        if self._series is None:
            self._series = {}
            for p in sorted(self.folder.iterdir()) if self.folder.is_dir() else ():
                m = _SERIES_RANGE.match(p.name)
                if m:
                    key = tuple(int(g) for g in m.groups()[:3])
                    self._series.setdefault(key, []).append((int(m.group(4)), int(m.group(5)), p))
        return self._series

    def _own_file(self, row: LesionRow) -> tuple[int, int, Path] | None:
        own = re.compile(rf"^{re.escape(row.case)}_(\d+)-(\d+)({_ENDING})$", re.IGNORECASE)
        for p in sorted(self.folder.glob(f"{row.case}_*")):
            m = own.match(p.name)
            if m:
                return int(m.group(1)), int(m.group(2)), p
        return None

    @staticmethod
    def _read(path: Path, first: int, last: int, row: LesionRow) -> np.ndarray:
        array = read_label_array(path)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != last - first + 1:
            raise ValueError(f"{path}: its name says slices {first}-{last} ({last - first + 1} slices), the array "
                             f"[z, y, x] has shape {array.shape}")
        check_slice_shape(array[0], row, path)
        if not first <= row.key_slice <= last:
            raise ValueError(f"{path}: case {row.case}'s key slice {row.key_slice} is outside slices {first}-{last}")
        return array

    def get(self, row: LesionRow) -> RefVolume:
        own = self._own_file(row)
        if own is not None:
            first, last, path = own
            return RefVolume(foreground(self._read(path, first, last, row)), first, str(path))
        for first, last, path in self._series_files().get((row.patient, row.study, row.series), []):
            if first <= row.key_slice <= last:
                array = self._read(path, first, last, row)
                z = row.key_slice - first
                instances = looks_like_instance_map(array)  # decided on the whole volume, not one slice
                chosen = lesion_in_slice(array[z], row, f"{path} z={z}", "instance" if instances else "binary")
                if chosen.mask is None:
                    return RefVolume(None, first, str(path), chosen.reason)
                fg = foreground(array)
                if instances:
                    value = np.unique(array[z][chosen.mask])[0]
                    return RefVolume(array == value, first, f"{path} (instance {value.item()})")
                labels, _ = ndimage.label(fg, structure=_FULL)
                hit = np.unique(labels[z][chosen.mask])
                return RefVolume(np.isin(labels, hit[hit > 0]), first, f"{path} (3D components under the mark)")
        return RefVolume(None, 0, "", f"case {row.case}: no {self.folder}/{row.case}_<first>-<last><ext> or "
                                      f"{row.patient:06d}_{row.study:02d}_{row.series:02d}_<first>-<last><ext> "
                                      f"holding slice {row.key_slice}")


def open_reference3d(folder: str | Path, ref_format: str = "auto") -> Reference3D:
    """The 3D reference of ``folder`` (``ref_format`` one of :data:`REF3D_FORMATS`; ``auto``: module docstring)."""
    folder = Path(folder)
    if ref_format not in REF3D_FORMATS:
        raise ValueError(f"3D reference format must be one of {REF3D_FORMATS}, got {ref_format!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such reference folder")
    if ref_format == "auto":
        ref_format = "sample" if (folder / "masks3d.csv").is_file() else "volume"
    return SampleReference3D(folder) if ref_format == "sample" else VolumeReference3D(folder)
