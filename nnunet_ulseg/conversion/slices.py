"""Off-key slice cases and their ``slices.csv`` table (WSSS Algorithm 1, Sec. 3.3).

Self-paced propagation segments a lesion on the slices around its RECIST key slice,
``r ± 1``, then ``r ± 2``, ... (Algorithm 1).  Each such slice becomes a 2D case of an
nnU-Net dataset, cut with **the key slice's crop box** (same ``CropBox``, same channel
layout, same HU handling), so a prediction on it pastes back into slice geometry with
the key case's ``lesions.csv`` row and stacks into 3D with
:mod:`nnunet_ulseg.conversion.geometry3d`.

This module owns the contract between the producer (``ulseg propagate``) and the
consumers (3D evaluation, measurement):

* **Case names**: :func:`slice_case_name` ``<key case>_zp<k>`` for slice ``key + k`` and
  ``<key case>_zm<k>`` for ``key - k`` (``k >= 1``); offset 0 is the key case itself.
  Letters instead of ``+``/``-`` keep names safe for every file system and for
  nnU-Net's ``<case>_<channel:04d><ending>`` parsing.
* **slices.csv**: one :class:`SliceRow` per off-key (and optionally key) case:
  the key case, the offset in slice indices, the signed distance in mm
  (``offset * spacing_z``, :func:`nnunet_ulseg.pseudo_masks.recist3d.slice_distance_mm`),
  the slice index in the series, the split, and how its training label was made
  (``label_status``: ``grabcut``, ``fallback_*`` from
  :func:`nnunet_ulseg.pseudo_masks.cnn_trimap.grabcut_from_cnn`, ``key`` for a key-slice
  case, ``none`` for a predict-only case with no label).

Choice where the paper is silent: offsets are in slice indices, not mm, because the
propagation walks slice by slice (Algorithm 1 "k = 1 .. K" slices); the mm distance is
stored beside it so curves can be drawn in mm across series with different intervals.
"""
from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SLICES_FILE = "slices.csv"
_NAME = re.compile(r"^(?P<key>.+)_z(?P<sign>[pm])(?P<k>[1-9][0-9]*)$")


def slice_case_name(key_case: str, offset: int) -> str:
    """Case id of the slice ``offset`` indices from ``key_case``'s key slice (0 = the key case)."""
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise TypeError(f"offset must be an int, got {offset!r}")
    if offset == 0:
        return key_case
    return f"{key_case}_z{'p' if offset > 0 else 'm'}{abs(offset)}"


def parse_slice_case(case: str) -> tuple[str, int]:
    """Inverse of :func:`slice_case_name`: ``(key_case, offset)``; a name without suffix is offset 0."""
    m = _NAME.match(case)
    if m is None:
        return case, 0
    k = int(m.group("k"))
    return m.group("key"), k if m.group("sign") == "p" else -k


@dataclass(frozen=True, slots=True)
class SliceRow:
    """One ``slices.csv`` row; field order is the column order."""

    case: str
    key_case: str
    offset: int
    offset_mm: float
    slice_index: int
    split: str
    label_status: str

    def __post_init__(self):
        if slice_case_name(self.key_case, self.offset) != self.case:
            raise ValueError(f"slice case {self.case!r} does not match key case {self.key_case!r} "
                             f"and offset {self.offset} (expected {slice_case_name(self.key_case, self.offset)!r})")


SLICE_COLUMNS = tuple(f.name for f in dataclasses.fields(SliceRow))
_INT = {"offset", "slice_index"}
_FLOAT = {"offset_mm"}


def write_slices(path: str | Path, rows: Iterable[SliceRow]) -> None:
    """Write ``slices.csv`` (header = :data:`SLICE_COLUMNS`; floats with ``repr``)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SLICE_COLUMNS)
        for r in rows:
            w.writerow([repr(v) if isinstance(v, float) else str(v) for v in dataclasses.astuple(r)])


def read_slices(path: str | Path) -> list[SliceRow]:
    """Read ``slices.csv``; a missing column or a bad value raises ``ValueError`` naming the file and line."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(SLICE_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a slices.csv table, missing columns {sorted(missing)}")
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                values = {c: int(r[c]) if c in _INT else float(r[c]) if c in _FLOAT else r[c]
                          for c in SLICE_COLUMNS}
                rows.append(SliceRow(**values))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from e
        return rows
