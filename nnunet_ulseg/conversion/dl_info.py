"""Parse and validate DeepLesion's ``DL_info.csv`` into :class:`LesionRecord` objects.

Input spec: DESIGN "DeepLesion on disk" (18 columns, header row, multi-number fields as
quoted comma-separated strings, ``Measurement_coordinates`` 1-based, converted to
0-based by :meth:`nnunet_ulseg.recist.Recist.from_deeplesion` only).

Every row is validated on its own; a bad row becomes an :class:`~.report.Issue` with a
specific reason and never stops the others.  The whole file is streamed with the
``csv`` module (no pandas); records keep plain tuples, not numpy objects: the real file
has ~32,735 rows.

Choices where the spec is silent:

* ``dl_row`` is the 1-based line on which a record *starts* (header = line 1).
* Blank lines are ignored (they are not lesions).
* ``k`` (the last part of the case id) is the index of the row among *all* rows of the
  same key slice that have parseable indices, in CSV order, including rows skipped for
  other reasons: a case id never changes when another row is fixed or dropped.
* ``Image_size`` is read as ``width, height`` (x first, like every other
  multi-number field); PNGs are checked against it.
* Fields only copied to the sidecar (``Coarse_lesion_type``, ``Possibly_noisy``,
  ``DICOM_windows``) never cause a skip: unparsable values become ``None``/NaN.
  ``Slice_range`` only limits context slices; unparsable, it becomes ``None`` and
  context neighbours are then chosen by file existence alone.
* The split a patient belongs to is taken from every row whose indices and split
  parse, even if the row is skipped later, so a skipped row can still move its patient
  to a higher split (no leakage through skipped rows).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..recist import MIN_AXIS_PX, Recist
from .report import Issue, IssueLog, LesionError

COLUMNS = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
)
(C_FILE, C_PATIENT, C_STUDY, C_SERIES, C_SLICE, C_COORDS, _C_BOX, _C_DIAM, _C_LOC, C_TYPE, C_NOISY,
 C_RANGE, C_SPACING, C_SIZE, C_WINDOWS, _C_GENDER, _C_AGE, C_SPLIT) = range(18)

SPLIT_NAMES = {1: "train", 2: "val", 3: "test"}

#: A RECIST endpoint may lie this far (px) outside ``[0, W-1] x [0, H-1]``.
OUTSIDE_TOLERANCE_PX = 1.0


def series_dir_name(patient: int, study: int, series: int) -> str:
    """``Images_png`` sub-folder of a series: ``<patient:06d>_<study:02d>_<series:02d>``."""
    return f"{patient:06d}_{study:02d}_{series:02d}"


def slice_png_name(slice_index: int) -> str:
    """PNG file name of a slice inside its series folder: ``<slice:03d>.png``."""
    return f"{slice_index:03d}.png"


@dataclass(slots=True)
class LesionRecord:
    """One validated DL_info row (one lesion on its key slice), coordinates 0-based."""

    dl_row: int
    file_name: str
    patient: int
    study: int
    series: int
    key_slice: int
    k: int
    split: int
    points: tuple[float, ...]  # RECIST endpoints, 0-based: x1, y1, x2, y2 (long axis), x3, y3, x4, y4 (short)
    spacing: tuple[float, float, float]
    image_size: tuple[int, int]  # (width, height)
    slice_range: tuple[int, int] | None
    lesion_type: int | None
    possibly_noisy: int | None
    window: tuple[float, float]

    @property
    def recist(self) -> Recist:
        """The mark as a :class:`~nnunet_ulseg.recist.Recist` (built on demand)."""
        return Recist.from_points(self.points)

    @property
    def case_id(self) -> str:
        """``DL_<patient:06d>_<study:02d>_<series:02d>_<slice:03d>_<k>``."""
        return f"DL_{self.series_dir}_{self.key_slice:03d}_{self.k}"

    @property
    def series_dir(self) -> str:
        return series_dir_name(self.patient, self.study, self.series)

    @property
    def png_relpath(self) -> str:
        """Key-slice PNG relative to the DeepLesion root."""
        return f"Images_png/{self.series_dir}/{slice_png_name(self.key_slice)}"

    @property
    def split_name(self) -> str:
        return SPLIT_NAMES[self.split]


@dataclass
class DLInfo:
    """Result of :func:`read_dl_info`: valid records, rejected rows, and per-patient split values."""

    records: list[LesionRecord]
    issues: list[Issue]
    patient_splits: dict[int, set[int]] = field(default_factory=dict)
    n_rows: int = 0


def _floats(text: str) -> list[float]:
    return [float(p) for p in text.split(",") if p.strip()]


def _optional_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _parse_recist(text: str, v: list[float] | None) -> tuple[float, ...]:
    """0-based RECIST endpoints (8 floats, long axis first) of a ``Measurement_coordinates`` string.

    :meth:`~nnunet_ulseg.recist.Recist.from_deeplesion` parses and validates it (and is
    the one place where DeepLesion's 1-based coordinates become 0-based, CONVENTIONS
    "Geometry"); when it refuses the mark, the already split numbers ``v`` (``None`` if
    unparsable) give the specific reason.  Only the point tuple is kept, not the numpy
    ``Recist``: ~32k records stay small.
    """
    try:
        return tuple(Recist.from_deeplesion(text).points.ravel().tolist())
    except ValueError as e:
        raise LesionError(_recist_fault(v), f"{e}: {text!r}") from None


def _recist_fault(v: list[float] | None) -> str:
    """Reason code of a mark that ``Recist`` refused (axis lengths do not depend on the coordinate origin)."""
    if v is None or len(v) != 8:
        return "bad_coordinates"
    if not all(math.isfinite(c) for c in v):
        return "nan_coordinates"
    if min(math.hypot(v[2] - v[0], v[3] - v[1]), math.hypot(v[6] - v[4], v[7] - v[5])) < MIN_AXIS_PX:
        return "zero_length_axis"
    return "degenerate_recist"


def _parse_row(row: list[str], dl_row: int, ids: tuple[int, int, int, int, int], k: int,
               coords: list[float] | None) -> LesionRecord:
    patient, study, series, key_slice, split = ids
    file_name = row[C_FILE].strip()
    expected = f"{series_dir_name(patient, study, series)}_{slice_png_name(key_slice)}"
    if file_name != expected:
        raise LesionError("file_name_mismatch", f"File_name {file_name!r} but the indices give {expected!r}")
    try:
        spacing = tuple(_floats(row[C_SPACING]))
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise LesionError("bad_spacing", f"Spacing_mm_px_ must be 3 positive numbers, got {row[C_SPACING]!r}")
    try:
        size = tuple(int(p) for p in row[C_SIZE].split(",") if p.strip())
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) <= 0:
        raise LesionError("bad_image_size", f"Image_size must be 2 positive integers, got {row[C_SIZE]!r}")
    points = _parse_recist(row[C_COORDS], coords)
    w, h = size
    xs, ys = points[0::2], points[1::2]
    tol = OUTSIDE_TOLERANCE_PX
    if min(xs) < -tol or min(ys) < -tol or max(xs) > w - 1 + tol or max(ys) > h - 1 + tol:
        raise LesionError(
            "lesion_outside_image",
            f"RECIST endpoints (0-based) span x {min(xs):.1f}..{max(xs):.1f}, "
            f"y {min(ys):.1f}..{max(ys):.1f} outside the {w}x{h} image",
        )
    try:
        lo, hi = (int(v) for v in row[C_RANGE].split(","))
        slice_range = (min(lo, hi), max(lo, hi))
    except ValueError:
        slice_range = None
    try:
        wmin, wmax = _floats(row[C_WINDOWS])
    except ValueError:
        wmin = wmax = math.nan
    return LesionRecord(
        dl_row=dl_row, file_name=file_name, patient=patient, study=study, series=series, key_slice=key_slice,
        k=k, split=split, points=points, spacing=spacing, image_size=(w, h), slice_range=slice_range,
        lesion_type=_optional_int(row[C_TYPE]), possibly_noisy=_optional_int(row[C_NOISY]), window=(wmin, wmax),
    )


def _coordinates(row: list[str]) -> tuple[list[float] | None, tuple]:
    """The coordinates as numbers (``None`` if unparsable) and the duplicate key of the row.

    The key is File_name plus the coordinates as numbers (so ``95.0204`` == ``95.02040``),
    or as stripped text when they are not all finite numbers.
    """
    text = row[C_COORDS]
    try:
        values = _floats(text)
    except ValueError:
        values = None
    if values is not None and all(math.isfinite(v) for v in values):
        key = tuple(values)
    else:
        key = tuple(p.strip() for p in text.split(","))
    return values, (row[C_FILE].strip(), key)


def read_dl_info(path: str | Path, strict: bool = False) -> DLInfo:
    """Read and validate ``DL_info.csv``.

    Returns a :class:`DLInfo` with every valid row as a :class:`LesionRecord` (CSV order)
    and every rejected row as an :class:`Issue`.  With ``strict`` the first bad row
    raises :class:`~.report.ConversionError`.  A missing file or a wrong header raises
    ``ValueError`` (the whole input is unusable, not one row).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DL_info.csv not found: {path}")
    log = IssueLog(strict)
    src = str(path)

    def reject(dl_row: int, file_name: str, reason: str, detail: str) -> None:
        log.add(Issue(dl_row, file_name, src, reason, detail))

    records: list[LesionRecord] = []
    patient_splits: dict[int, set[int]] = {}
    per_slice: dict[tuple[int, int, int, int], int] = {}
    seen: dict[tuple, int] = {}
    n_rows = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path}: line 1 is not the DL_info.csv header; "
                             f"expected the 18 columns {', '.join(COLUMNS)}")
        prev_line = reader.line_num
        for row in reader:
            dl_row, prev_line = prev_line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            n_rows += 1
            file_name = row[0].strip()
            if len(row) != len(COLUMNS):
                reject(dl_row, file_name, "wrong_column_count", f"{len(row)} columns, expected {len(COLUMNS)}")
                continue
            try:
                ids = tuple(int(row[c]) for c in (C_PATIENT, C_STUDY, C_SERIES, C_SLICE, C_SPLIT))
            except ValueError:
                values = ", ".join(repr(row[c]) for c in (C_PATIENT, C_STUDY, C_SERIES, C_SLICE, C_SPLIT))
                reject(dl_row, file_name, "bad_integer",
                       f"Patient_index/Study_index/Series_ID/Key_slice_index/Train_Val_Test: {values}")
                continue
            if min(ids[:4]) < 0:
                reject(dl_row, file_name, "bad_integer", f"negative index in {ids[:4]}")
                continue
            key = ids[:4]
            k = per_slice.get(key, 0)
            per_slice[key] = k + 1
            split = ids[4]
            if split not in SPLIT_NAMES:
                reject(dl_row, file_name, "unknown_split", f"Train_Val_Test is {split}, expected 1, 2 or 3")
                continue
            patient_splits.setdefault(ids[0], set()).add(split)
            coords, dup = _coordinates(row)
            first = seen.setdefault(dup, dl_row)
            if first != dl_row:
                reject(dl_row, file_name, "duplicate_row", f"same File_name and coordinates as line {first}")
                continue
            try:
                records.append(_parse_row(row, dl_row, ids, k, coords))
            except LesionError as e:
                reject(dl_row, file_name, e.reason, e.detail)
    return DLInfo(records, log.issues, patient_splits, n_rows)
