"""RECIST marks of ``ulseg segment``: the command line, or a CSV/JSON with one row per lesion (issue 15 item 2).

A row (CSV columns or JSON object keys; JSON: a list of objects, or ``{"lesions": [...]}``):

* ``lesion_id`` (optional; default ``L<n>``, the row's number), ``patient_id``/``series``
  (optional, copied to the measurements);
* ``recist``: the long-axis endpoints then the short-axis endpoints, **or** ``box``: two
  opposite corners.  Numbers comma-separated (a quoted CSV field, as DeepLesion writes
  them) or a JSON list;
* ``space``: ``voxel`` (default) or ``world``.  ``voxel``: ``recist`` is 8 numbers
  ``x1,y1,...`` and ``box`` 4 numbers ``x1,y1,x2,y2``, 0-based pixel centres of the stored
  grid (SimpleITK's index, :mod:`.volume_io`; DeepLesion's 1-based coordinates must be
  shifted by the user), on slice ``slice`` (0-based ``k``, required).  ``world``: every
  point is ``x,y,z`` in patient LPS mm (12 numbers for ``recist``, 6 for ``box``) and the
  slice follows from the points;
* ``lymph_node`` (optional: 1/0, true/false, yes/no), kept for RECIST 1.1 (short-axis sum).

World points become continuous indices through SimpleITK's
``TransformPhysicalPointToContinuousIndex`` (any direction matrix, any spacing).  All
points of one mark must lie on one axial slice: each point's ``k`` must be within
:data:`SLICE_TOLERANCE` of one whole slice index, the same for all (a point exported by a
viewer lies on the slice centre up to rounding; more means the mark is not an axial RECIST
mark and is refused, naming the row).

A box becomes a RECIST-like mark: its inscribed ellipse's axes, the long axis along the
box's longer side through its centre, the short axis across, endpoints on the box's
edges (a square box: a horizontal long axis).  Its lengths are the box's sides, so a box
given as the RECIST extent of a lesion gives the crop the converter would have cut for
the mark.

Bad rows (unparsable, off one slice, outside the volume) are skipped and counted
(:class:`MarkIssue`) unless ``strict``, which raises on the first.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from nnunet_ulseg.recist import Recist, parse_numbers

from .volume_io import Volume

SPACES = ("voxel", "world")
#: How far (in slices) a world point's continuous slice index may be from a whole slice.
SLICE_TOLERANCE = 0.1
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass(frozen=True)
class Mark:
    """One lesion's mark on slice ``k``: RECIST in 0-based slice pixels ``(x, y)``, long axis first."""

    lesion_id: str
    k: int
    recist: Recist
    kind: str = "recist"  # or "box"
    lymph_node: bool = False
    patient_id: str = ""
    series: str = ""
    row: str = ""  # where it came from, for messages


@dataclass(frozen=True)
class MarkIssue:
    """A skipped row: where it is and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def box_to_recist(x1: float, y1: float, x2: float, y2: float) -> Recist:
    """The RECIST-like mark of a box (module docstring): the inscribed ellipse's two axes."""
    xa, xb = sorted((float(x1), float(x2)))
    ya, yb = sorted((float(y1), float(y2)))
    cx, cy = 0.5 * (xa + xb), 0.5 * (ya + yb)
    horizontal = np.array([[xa, cy], [xb, cy]])
    vertical = np.array([[cx, ya], [cx, yb]])
    if xb - xa >= yb - ya:
        return Recist(horizontal, vertical)
    return Recist(vertical, horizontal)


def _numbers(value, count: int, what: str) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in np.ravel(np.asarray(value, dtype=object)))
    return parse_numbers(value, count, what)


def _flag(value, what: str) -> bool:
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{what}: expected 1/0, true/false or yes/no, got {value!r}")


def _world_to_slice(points: np.ndarray, volume: Volume) -> tuple[int, np.ndarray]:
    """``(k, (N, 2) in-plane index points)`` of world points that lie on one axial slice."""
    idx = np.array([volume.to_index(p) for p in points])
    ks = idx[:, 2]
    k = int(round(float(np.mean(ks))))
    off = np.abs(ks - k)
    if np.any(off > SLICE_TOLERANCE):
        shown = ", ".join(f"{v:.2f}" for v in ks)
        raise ValueError(f"the points do not lie on one axial slice (slice index of each point: {shown}; "
                         f"all must be within {SLICE_TOLERANCE} of one slice)")
    return k, idx[:, :2]


def _check_inside(recist: Recist, k: int, volume: Volume) -> None:
    if not volume.has_slice(k):
        raise ValueError(f"slice {k} outside the volume's 0..{volume.n_slices - 1}")
    h, w = volume.slice_shape
    p = recist.points
    if np.any(p[:, 0] < -0.5) or np.any(p[:, 0] > w - 0.5) or np.any(p[:, 1] < -0.5) or np.any(p[:, 1] > h - 0.5):
        raise ValueError(f"a point lies outside the {w} x {h} slice: {np.round(p, 2).tolist()}")


def mark_from_row(row: Mapping, volume: Volume, number: int, where: str) -> Mark:
    """One :class:`Mark` from a row's fields (module docstring); ``ValueError`` naming nothing (the caller adds ``where``)."""
    get = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    space = str(get.get("space") or "voxel").strip().lower()
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    recist_text, box_text = get.get("recist"), get.get("box")
    has_recist = recist_text not in (None, "") and recist_text != []
    has_box = box_text not in (None, "") and box_text != []
    if has_recist == has_box:
        raise ValueError("give exactly one of recist or box")
    dim = 3 if space == "world" else 2
    if has_recist:
        pts = _numbers(recist_text, 4 * dim, "recist").reshape(4, dim)
    else:
        pts = _numbers(box_text, 2 * dim, "box").reshape(2, dim)
    if space == "world":
        k, xy = _world_to_slice(pts, volume)
    else:
        slice_text = get.get("slice")
        if slice_text in (None, ""):
            raise ValueError("space voxel needs the slice index (column slice)")
        kf = float(slice_text)
        if not math.isfinite(kf) or kf != int(kf):
            raise ValueError(f"slice must be a whole number, got {slice_text!r}")
        k, xy = int(kf), pts
    recist = Recist.from_points(xy) if has_recist else box_to_recist(*xy.ravel())
    _check_inside(recist, k, volume)
    lesion_id = str(get.get("lesion_id") or "").strip() or f"L{number}"
    return Mark(lesion_id, k, recist, "recist" if has_recist else "box", _flag(get.get("lymph_node"), "lymph_node"),
                str(get.get("patient_id") or ""), str(get.get("series") or ""), where)


def read_mark_rows(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """``(where, row)`` per lesion of a CSV or JSON marks file; ``where`` is ``file line N`` / ``file item N``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such marks file")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            data = data.get("lesions")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{p}: expected a list of lesion objects (or {{\"lesions\": [...]}})")
        return [(f"{p} item {i}", r) for i, r in enumerate(data, start=1)]
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"{p}: empty marks file (expected a header with recist or box)")
        return [(f"{p} line {n}", r) for n, r in enumerate(reader, start=2)]


def parse_marks(rows: Iterable[tuple[str, Mapping]], volume: Volume, strict: bool = False
                ) -> tuple[list[Mark], list[MarkIssue]]:
    """Marks of ``rows`` on ``volume``; bad rows skipped and returned as issues (raised when ``strict``).

    Lesion ids must be unique within a scan (a repeated id is a bad row).
    """
    marks: list[Mark] = []
    issues: list[MarkIssue] = []
    seen: set[str] = set()
    for number, (where, row) in enumerate(rows, start=1):
        try:
            mark = mark_from_row(row, volume, number, where)
            if mark.lesion_id in seen:
                raise ValueError(f"lesion_id {mark.lesion_id!r} repeated")
        except ValueError as exc:
            if strict:
                raise ValueError(f"{where}: {exc}") from None
            issues.append(MarkIssue(where, str(exc)))
            continue
        seen.add(mark.lesion_id)
        marks.append(mark)
    return marks, issues


def command_line_row(recist: Sequence[float] | str | None, box: Sequence[float] | str | None,
                     slice_index: int | None, space: str = "voxel", lesion_id: str = "",
                     lymph_node: bool = False) -> tuple[str, dict]:
    """The ``(where, row)`` of a mark given as ``--recist``/``--box`` with ``--slice`` and ``--space``."""
    return "command line", {"recist": recist, "box": box, "slice": slice_index, "space": space,
                            "lesion_id": lesion_id, "lymph_node": int(bool(lymph_node))}
