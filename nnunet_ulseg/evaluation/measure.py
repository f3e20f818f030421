"""``ulseg measure``: the clinical read-out of a prediction folder, one row per lesion.

For every predicted crop (``<case>.mha``, label 1 = lesion, 0 and the ignore label 2
background; any other value is an error naming the file, unless ``lesion_label``
(``--lesion-label N``) or ``threshold`` (``--threshold T``, a probability map) says how to
read it: :class:`~nnunet_ulseg.evaluation.label_io.LabelRule`, the rule of ``ulseg evaluate``)
the mask is pasted back into its key slice with the ``lesions.csv`` crop box (as in
``ulseg evaluate``) and measured with the true spacing ``(spacing_x, spacing_y)``:

* RECIST long and short axis in mm (:func:`nnunet_ulseg.recist.mask_axes`) of the largest
  8-connected component, with its endpoints in 0-based key-slice pixels ``x1 y1 x2 y2``
  (so the measurement can be drawn on the original image), under both axis conventions:
  ``long_mm``/``short_mm``/``long_axis_px``/``short_axis_px`` between the outer pixel
  edges (``"edge"``: the physical extent, what calipers on the image measure; a single
  pixel is 1 px long), and the same four with ``_uls23`` between boundary pixel centres
  by ULS23's evaluator rule (``"uls23"``: about one pixel shorter; the numbers to compare
  with ULS23 results);
* ``area_mm2``: area of that largest component; ``total_area_mm2``: all components;
  ``components``: their number;
* for comparison with what RECIST alone says: the annotation's ``recist_long_mm`` and
  ``recist_short_mm`` from the sidecar, the area of the RECIST ellipse
  ``pi/4 * long * short`` (mm²), the ULS23 symmetric axis errors of the mask's axes
  against the annotation (under ``recist_convention``: by default ``auto``, the dataset's own
  from the dataset.json beside the sidecar, :func:`nnunet_ulseg.conversion.sidecar.recist_convention`:
  ``"edge"`` for DeepLesion's caliper marks, ``"uls23"`` for marks derived with ULS23's rule), and
  ``area_ratio = area_mm2 / recist_ellipse_area_mm2``.

Choices: an empty prediction gives NaN axes, area 0 and 0 components (never an error);
cases are the sidecar rows of ``split`` (``"all"`` for every row); a missing prediction
file is an error naming the case unless ``allow_missing`` (then a row with
``status = missing``).

``volume`` (``--volume``): every prediction is a 3D file of consecutive axial slices (crop or
slice geometry, ``volume_geometry``; the contract is in :mod:`.measure3d`); the table gains
:data:`~.measure3d.VOLUME_COLUMNS` (``volume_mm3`` = voxel count x ``sx * sy * sz``, the RECIST
ellipsoid ``pi * L * S² / 6`` of WSSS Sec. 4.1 beside it) and the 2D columns are measured on
``axes_z``, the slice where the lesion is largest.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ulseg.conversion.sidecar import read_sidecar
from nnunet_ulseg.conversion.sidecar import recist_convention as dataset_recist_convention
from nnunet_ulseg.evaluation.evaluate import (
    crop_label,
    format_cell,
    missing_predictions_error,
    select_rows,
    slice_window,
    to_slice,
)
from nnunet_ulseg.evaluation.label_io import LabelRule
from nnunet_ulseg.evaluation.measure3d import (
    VOLUME_COLUMNS,
    VOLUME_GEOMETRIES,
    measure_volume,
    missing_volume_record,
    read_volume_window,
)
from nnunet_ulseg.evaluation.metrics import axis_error, lesion_type_name, measure_mask
from nnunet_ulseg.recist import AXIS_CONVENTIONS

MEASURE_COLUMNS = (
    "case", "split", "dl_row", "File_name", "lesion_type", "lesion_type_name", "status",
    "long_mm", "short_mm", "area_mm2", "total_area_mm2", "components", "long_axis_px", "short_axis_px",
    "long_mm_uls23", "short_mm_uls23", "long_axis_px_uls23", "short_axis_px_uls23",
    "recist_long_mm", "recist_short_mm", "recist_ellipse_area_mm2", "long_err_recist", "short_err_recist",
    "area_ratio",
)
#: the columns of ``measure_folder(..., volume=True)``: the 2D ones, then the volume
MEASURE_VOLUME_COLUMNS = MEASURE_COLUMNS + VOLUME_COLUMNS


def recist_ellipse_area(long_mm: float, short_mm: float) -> float:
    """Area (mm²) of the ellipse with diameters ``long_mm`` and ``short_mm``: ``pi/4 * long * short``."""
    return math.pi / 4.0 * float(long_mm) * float(short_mm)


def _points(endpoints, offset) -> str:
    """Endpoints measured on a window, shifted by the window's ``(x, y)`` origin into slice pixels."""
    return "" if endpoints is None else " ".join(f"{v:.3f}" for v in (endpoints + offset).ravel())


def measure_folder(pred_dir: str | Path, sidecar: str | Path, out_csv: str | Path | None = None,
                   split: str | None = "test", allow_missing: bool = False, interpolation: str = "linear",
                   file_ending: str = ".mha", recist_convention: str = "auto", lesion_label: int | None = None,
                   threshold: float | None = None, volume: bool = False,
                   volume_geometry: str = "crop") -> list[dict]:
    """Measure every prediction of ``split`` (module docstring); write ``out_csv`` when given; return the rows.

    ``lesion_label`` / ``threshold``: how the prediction files' values are read (at most one).
    Nothing is written when a file has values the rule does not allow (``ValueError``).
    ``volume``: the files are 3D (:mod:`.measure3d`, in ``volume_geometry`` crop or slice);
    the rows then have :data:`MEASURE_VOLUME_COLUMNS`.
    """
    if volume_geometry not in VOLUME_GEOMETRIES:
        raise ValueError(f"measure_folder: volume_geometry must be one of {VOLUME_GEOMETRIES}, "
                         f"got {volume_geometry!r}")
    if recist_convention != "auto" and recist_convention not in AXIS_CONVENTIONS:
        raise ValueError(f"measure_folder: recist_convention must be auto or one of {AXIS_CONVENTIONS}, "
                         f"got {recist_convention!r}")
    rule = LabelRule(lesion_label, threshold)
    pred_dir, sidecar = Path(pred_dir), Path(sidecar)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: no such folder")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: no such sidecar file")
    recist_convention = dataset_recist_convention(sidecar, recist_convention)
    rows = select_rows(read_sidecar(sidecar), split)
    if not rows:
        raise ValueError(f"{sidecar}: no cases of split {split!r}")
    missing = [r.case for r in rows if not (pred_dir / f"{r.case}{file_ending}").is_file()]
    if missing and not allow_missing:
        raise missing_predictions_error(pred_dir, missing, len(rows))
    out = []
    for row in rows:
        rec = {"case": row.case, "split": row.split, "dl_row": row.dl_row, "File_name": row.File_name,
               "lesion_type": row.lesion_type if row.lesion_type is not None else -1,
               "lesion_type_name": lesion_type_name(row.lesion_type),
               "recist_long_mm": row.long_mm, "recist_short_mm": row.short_mm,
               "recist_ellipse_area_mm2": recist_ellipse_area(row.long_mm, row.short_mm)}
        path = pred_dir / f"{row.case}{file_ending}"
        if not path.is_file():
            rec.update(status="missing", long_mm=float("nan"), short_mm=float("nan"), area_mm2=float("nan"),
                       total_area_mm2=float("nan"), components="", long_axis_px="", short_axis_px="",
                       long_mm_uls23=float("nan"), short_mm_uls23=float("nan"), long_axis_px_uls23="",
                       short_axis_px_uls23="", long_err_recist=float("nan"), short_err_recist=float("nan"), area_ratio=float("nan"))
            if volume:
                rec.update(missing_volume_record(row))
            out.append(rec)
            continue
        if volume:
            mask3d, (rows_w, cols_w) = read_volume_window(path, row, rule, volume_geometry, interpolation)
            volume_rec, axes_z = measure_volume(mask3d, row)
            rec.update(volume_rec)
            mask = mask3d[axes_z] if mask3d.shape[0] else np.zeros(mask3d.shape[1:], dtype=bool)
        else:
            rows_w, cols_w = slice_window(row)
            mask = to_slice(crop_label(path, row, rule), row, interpolation)[rows_w, cols_w]
        m = measure_mask(mask, (row.spacing_x, row.spacing_y), "edge")
        u = measure_mask(mask, (row.spacing_x, row.spacing_y), "uls23")
        k = m if recist_convention == "edge" else u
        offset = np.array([cols_w.start, rows_w.start], dtype=np.float64)
        ellipse = rec["recist_ellipse_area_mm2"]
        rec.update(status="ok", long_mm=m.long_mm, short_mm=m.short_mm, area_mm2=m.area_mm2,
                   total_area_mm2=m.total_area_mm2, components=m.components,
                   long_axis_px=_points(m.long_endpoints, offset), short_axis_px=_points(m.short_endpoints, offset),
                   long_mm_uls23=u.long_mm, short_mm_uls23=u.short_mm,
                   long_axis_px_uls23=_points(u.long_endpoints, offset),
                   short_axis_px_uls23=_points(u.short_endpoints, offset),
                   long_err_recist=axis_error(k.long_mm, row.long_mm),
                   short_err_recist=axis_error(k.short_mm, row.short_mm),
                   area_ratio=m.area_mm2 / ellipse if ellipse > 0 else float("nan"))
        out.append(rec)
    if out_csv is not None:
        write_measure_csv(out_csv, out, MEASURE_VOLUME_COLUMNS if volume else MEASURE_COLUMNS)
    return out


def write_measure_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] = MEASURE_COLUMNS) -> None:
    """Write ``columns`` of ``rows`` (:data:`MEASURE_COLUMNS` by default; NaN as ``nan``); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([format_cell(r[c]) for c in columns])
