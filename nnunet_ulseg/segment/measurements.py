"""RECIST 1.1 measurements of ``ulseg segment``'s masks, one record per lesion (issue 15 item 4).

* ``long_mm``/``short_mm``: the mask's axes on the RECIST slice, largest 8-connected
  component, under ULS23's convention (:func:`nnunet_ulseg.recist.mask_axes` ``"uls23"``:
  boundary pixel centres, what ULS23's evaluator reports), with their endpoints as
  continuous voxel indices ``(x, y, k)`` and world points (LPS mm, SimpleITK's
  ``TransformContinuousIndexToPhysicalPoint``);
* ``area_mm2``: the largest component's area on the RECIST slice;
* ``volume_mm3`` (only with ``--propagate``): the largest 26-connected component of the
  3D mask, voxel count times voxel volume; ``slices``: how many slices it covers;
* ``recist_ellipsoid_mm3``: ``pi * L * S² / 6`` from the *given* mark (WSSS Sec. 4.1),
  for comparison with the volume;
* ``recist_long_mm``/``recist_short_mm``: the given mark's lengths;
* ``qa_flag`` with ``qa_reason``: the mask's long or short axis differs from the mark's by
  a symmetric error ``|m - r| / (|m| + |r|)`` (ULS23) over ``qa_threshold``, or the mask
  is empty, or the post-processing had to fall back to the RECIST ellipse (the model
  segmented nothing under the mark).

Choice: the QA comparison measures the mask under the *mark's* convention (the model's
``recist_convention``: ``edge`` for DeepLesion's caliper marks), not ULS23's, so that a
perfect mask of a caliper-measured lesion is not flagged for the one pixel by which the
two conventions differ; the reported axes stay ULS23's, as the issue asks.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ulseg.evaluation.measure3d import largest_component_3d
from nnunet_ulseg.evaluation.metrics import measure_mask
from nnunet_ulseg.evaluation.metrics3d import recist_ellipsoid_volume
from nnunet_ulseg.recist import symmetric_error

from .marks import Mark
from .volume_io import Volume

DEFAULT_QA_THRESHOLD = 0.3
COLUMNS = (
    "scan", "lesion_id", "patient_id", "series", "label", "mark", "lymph_node", "slice",
    "long_mm", "short_mm", "area_mm2", "volume_mm3", "slices", "recist_long_mm", "recist_short_mm",
    "recist_ellipsoid_mm3", "long_error", "short_error", "qa_flag", "qa_reason", "status",
    "long_voxel", "short_voxel", "long_world", "short_world",
)


def _endpoints(points: np.ndarray | None, k: int, volume: Volume) -> tuple[list, list]:
    """Voxel ``[[x, y, k], ...]`` and world ``[[x, y, z], ...]`` of ``(2, 2)`` in-plane endpoints."""
    if points is None:
        return [], []
    voxel = [[float(x), float(y), float(k)] for x, y in np.asarray(points)]
    world = [list(volume.to_world(v)) for v in voxel]
    return voxel, world


def measure_lesion(scan: str, mark: Mark, label: int, key_mask: np.ndarray, volume: Volume,
                   mask3d: np.ndarray | None = None, qa_threshold: float = DEFAULT_QA_THRESHOLD,
                   recist_convention: str = "edge", status: str = "") -> dict:
    """One lesion's record (module docstring); ``mask3d`` is ``[k, y, x]`` over the whole volume or None."""
    if not (qa_threshold >= 0 and math.isfinite(qa_threshold)):
        raise ValueError(f"qa threshold must be a non-negative number, got {qa_threshold}")
    sx, sy, sz = volume.spacing
    m = measure_mask(key_mask, (sx, sy), convention="uls23")
    r_long, r_short = mark.recist.lengths_mm((sx, sy))
    long_vox, long_world = _endpoints(m.long_endpoints, mark.k, volume)
    short_vox, short_world = _endpoints(m.short_endpoints, mark.k, volume)
    reasons = []
    long_err = short_err = float("nan")
    if m.components == 0:
        reasons.append("empty mask on the RECIST slice")
    else:
        q = m if recist_convention == "uls23" else measure_mask(key_mask, (sx, sy), convention=recist_convention)
        long_err, short_err = symmetric_error(q.long_mm, r_long), symmetric_error(q.short_mm, r_short)
        for name, err, got, ref in (("long", long_err, q.long_mm, r_long), ("short", short_err, q.short_mm, r_short)):
            if err > qa_threshold:
                reasons.append(f"{name} axis {got:.1f} mm vs RECIST {ref:.1f} mm (error {err:.2f} > {qa_threshold})")
    if status.startswith("fallback"):
        reasons.append(f"post-processing {status}: the model segmented nothing under the mark")
    volume_mm3 = slices = ""
    if mask3d is not None:
        largest, n = largest_component_3d(mask3d)
        volume_mm3 = float(largest.sum()) * sx * sy * sz
        slices = int(np.count_nonzero(largest.any(axis=(1, 2))))
    return {
        "scan": scan, "lesion_id": mark.lesion_id, "patient_id": mark.patient_id, "series": mark.series,
        "label": int(label), "mark": mark.kind, "lymph_node": int(mark.lymph_node), "slice": int(mark.k),
        "long_mm": m.long_mm, "short_mm": m.short_mm, "area_mm2": m.area_mm2, "volume_mm3": volume_mm3,
        "slices": slices, "recist_long_mm": r_long, "recist_short_mm": r_short,
        "recist_ellipsoid_mm3": recist_ellipsoid_volume(r_long, r_short),
        "long_error": long_err, "short_error": short_err, "qa_flag": int(bool(reasons)),
        "qa_reason": "; ".join(reasons), "status": status,
        "long_voxel": long_vox, "short_voxel": short_vox, "long_world": long_world, "short_world": short_world,
    }


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    if isinstance(value, list):
        return " ".join(",".join(f"{c:.4f}" for c in p) for p in value)
    return str(value)


def write_measurements(out_dir: str | os.PathLike, records: Sequence[dict]) -> tuple[Path, Path]:
    """``measurements.csv`` (endpoints as ``x,y,z x,y,z``) and ``measurements.json`` (lists) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "measurements.csv", out / "measurements.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow([_cell(r[c]) for c in COLUMNS])
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]
    json_path.write_text(json.dumps(clean, indent=1), encoding="utf-8")
    return csv_path, json_path
