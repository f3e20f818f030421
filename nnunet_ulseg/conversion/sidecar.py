"""The ``lesions.csv`` sidecar: one row per converted lesion (DESIGN "Crops", data flow).

It links every case back to DeepLesion (row, File_name, patient/study/series/slice), holds
the crop box (so a crop-geometry prediction can be pasted back into the key slice with
:func:`paste_back`), the true spacing (the ``lesion`` scale policy writes a nominal
1 mm spacing), the RECIST endpoints in slice and crop pixels (0-based, CONVENTIONS
"Geometry") and their lengths in mm.

Choice where the spec is silent: an extra last column ``context_slices`` lists the slice
index used for each channel (space-separated, channel order), which shows where a
missing neighbour was replaced.  The column after it, ``pseudo_status``, is the pseudo-mask
maker's status for the case's label (:mod:`nnunet_ulseg.pseudo_masks.registry`: ``ok``, or
``fallback_ellipse`` when GrabCut-R fell back to the ellipse); a sidecar written before the
column existed still reads, as ``ok`` (its labels were ellipses).  Floats are written with ``repr`` so reading them back
gives the exact values used for the crop.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .geometry import CropBox, paste_back_mask


@dataclass(frozen=True, slots=True)
class LesionRow:
    """One ``lesions.csv`` row; field order is the column order."""

    case: str
    split: str
    dl_row: int
    File_name: str
    patient: int
    study: int
    series: int
    key_slice: int
    crop_x0: float
    crop_y0: float
    crop_side: float
    crop_size: int
    scale: float
    spacing_x: float
    spacing_y: float
    spacing_z: float
    recist_slice: tuple[float, ...]
    recist_crop: tuple[float, ...]
    long_mm: float
    short_mm: float
    lesion_type: int | None
    possibly_noisy: int | None
    window_min: float
    window_max: float
    image_width: int
    image_height: int
    context_slices: tuple[int, ...]
    pseudo_status: str = "ok"

    @property
    def box(self) -> CropBox:
        return CropBox(self.crop_x0, self.crop_y0, self.crop_side, self.crop_size)

    @property
    def recist_slice_points(self) -> np.ndarray:
        """``(4, 2)`` RECIST endpoints in 0-based slice pixels (long then short axis)."""
        return np.asarray(self.recist_slice, dtype=np.float64).reshape(4, 2)

    @property
    def recist_crop_points(self) -> np.ndarray:
        """``(4, 2)`` RECIST endpoints in crop pixels."""
        return np.asarray(self.recist_crop, dtype=np.float64).reshape(4, 2)

    @property
    def crop_spacing_xy(self) -> tuple[float, float]:
        """In-plane ``(x, y)`` mm per crop pixel: the slice spacing divided by ``scale`` (crop px per slice px)."""
        return (self.spacing_x / self.scale, self.spacing_y / self.scale)


SIDECAR_COLUMNS = tuple(f.name for f in dataclasses.fields(LesionRow))
_TYPES = {f.name: f.type for f in dataclasses.fields(LesionRow)}
#: columns a sidecar may lack (added after the first release); a missing one reads as the field's default
OPTIONAL_COLUMNS = frozenset(f.name for f in dataclasses.fields(LesionRow) if f.default is not dataclasses.MISSING)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return " ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(name: str, text: str):
    kind = _TYPES[name]
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "int | None":
        return int(text) if text != "" else None
    if kind == "tuple[float, ...]":
        return tuple(float(v) for v in text.split())
    if kind == "tuple[int, ...]":
        return tuple(int(v) for v in text.split())
    raise AssertionError(f"no parser for {name}: {kind}")


def write_sidecar(path: str | Path, rows: Iterable[LesionRow]) -> None:
    """Write ``lesions.csv`` (header = :data:`SIDECAR_COLUMNS`)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SIDECAR_COLUMNS)
        for r in rows:
            w.writerow([_fmt(getattr(r, c)) for c in SIDECAR_COLUMNS])


def read_sidecar(path: str | Path) -> list[LesionRow]:
    """Read ``lesions.csv`` back into :class:`LesionRow` objects (exact floats).

    :data:`OPTIONAL_COLUMNS` may be missing (older sidecars): they take the field's default.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        present = set(reader.fieldnames or ())
        missing = set(SIDECAR_COLUMNS) - present - OPTIONAL_COLUMNS
        if missing:
            raise ValueError(f"{path}: not a lesions.csv sidecar, missing columns {sorted(missing)}")
        columns = [c for c in SIDECAR_COLUMNS if c in present]
        return [LesionRow(**{c: _parse(c, r[c]) for c in columns}) for r in reader]


#: how the RECIST marks of a dataset relate to a mask's axes (:func:`nnunet_ulseg.recist.mask_axes`):
#: DeepLesion's marks are a radiologist's caliper endpoints on the lesion's edges (``edge``);
#: marks that a converter derived from a label with ULS23's rule are pixel-centre lengths
#: (``uls23``).  Written as ``recist_convention`` in dataset.json by each converter.
RECIST_CONVENTIONS = ("edge", "uls23")


def recist_convention(sidecar: str | Path, convention: str = "auto") -> str:
    """``convention``, or with ``auto`` the ``recist_convention`` of the dataset.json beside ``sidecar``.

    A dataset.json without the key (older conversions, DeepLesion) gives ``edge``.
    ``ValueError`` for an unknown value, naming the file.
    """
    if convention != "auto":
        if convention not in RECIST_CONVENTIONS:
            raise ValueError(f"recist convention must be auto or one of {RECIST_CONVENTIONS}, got {convention!r}")
        return convention
    import json

    path = Path(sidecar).parent / "dataset.json"
    if not path.is_file():
        return "edge"
    try:
        value = json.loads(path.read_text()).get("recist_convention", "edge")
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if value not in RECIST_CONVENTIONS:
        raise ValueError(f"{path}: recist_convention must be one of {RECIST_CONVENTIONS}, got {value!r}")
    return value


def paste_back(crop_mask: np.ndarray, row: LesionRow, interpolation: str = "linear",
               threshold: float = 0.5) -> np.ndarray:
    """A crop-geometry mask (e.g. a prediction for ``row.case``) in key-slice geometry.

    Returns an ``(image_height, image_width)`` mask; ``linear`` thresholds the bilinearly
    resampled mask (bool), ``nearest`` keeps label values.  See
    :func:`~.geometry.paste_back_mask`.
    """
    return paste_back_mask(crop_mask, row.box, (row.image_height, row.image_width), interpolation, threshold)
