"""Parse and validate DeepLesion's ``DL_info.csv`` into :class:`LesionRecord` objects.

Input spec: DESIGN "DeepLesion on disk" (18 columns, header row, multi-number fields as
quoted comma-separated strings, ``Measurement_coordinates`` 1-based, converted to
0-based by :meth:`nnunet_ulseg.recist.Recist.from_deeplesion` only).

Every row is validated on its own; a bad row becomes an :class:`~.report.Issue` with a
specific reason and never stops the others.  The file is streamed line by line (each
line split by the ``csv`` module; no pandas); records keep plain tuples, not numpy
objects, share repeated tuples and do not store what they can derive: the real file has
~32,735 rows, and a million rows must not take gigabytes (issue 12).

Choices where the spec is silent:

* One record is one physical line (no DL_info.csv field holds a newline), so ``dl_row``
  is the 1-based line of the row (header = line 1), and a broken line never takes its
  neighbours with it: a line that is not UTF-8 (``bad_encoding``), longer than
  :data:`MAX_LINE_BYTES` (``oversized_row``), with an unclosed quote
  (``unterminated_quote``) or that csv cannot split (``malformed_csv``) is one issue.
* Blank lines are ignored (they are not lesions); a UTF-8 byte-order mark is allowed.
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
import hashlib
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

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

#: Longest DL_info.csv line parsed, in bytes.  Real rows are ~250 bytes; a longer line is one
#: ``oversized_row`` (csv's own 131,072-character field limit is never reached).
MAX_LINE_BYTES = 1 << 16

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
    def file_name(self) -> str:
        """DL_info ``File_name`` (validated equal to ``<series_dir>_<slice:03d>.png``; derived, not stored)."""
        return f"{self.series_dir}_{slice_png_name(self.key_slice)}"

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


def _coordinate_values(row: list[str]) -> list[float] | None:
    """``Measurement_coordinates`` as numbers, ``None`` if unparsable."""
    try:
        return _floats(row[C_COORDS])
    except ValueError:
        return None


def _parse_row(row: list[str], dl_row: int, ids: tuple[int, int, int, int, int], k: int,
               coords: list[float] | None, shared: dict | None = None) -> LesionRecord:
    """Validate one split row into a record.

    ``shared`` interns the small tuples many rows repeat (spacing, image size, slice
    range, window: one per series in practice), so a million rows do not hold a million
    copies of ``(0.7, 0.7, 5.0)``.
    """
    intern = (lambda t: t) if shared is None else (lambda t: shared.setdefault(t, t))
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
        dl_row=dl_row, patient=patient, study=study, series=series, key_slice=key_slice,
        k=k, split=split, points=points, spacing=intern(spacing), image_size=intern((w, h)),
        slice_range=None if slice_range is None else intern(slice_range),
        lesion_type=_optional_int(row[C_TYPE]), possibly_noisy=_optional_int(row[C_NOISY]),
        window=intern((wmin, wmax)),
    )


def _dup_key(row: list[str], values: list[float] | None) -> bytes:
    """Duplicate key of a row: a 128-bit BLAKE2 digest of File_name and the coordinates.

    The coordinates count as numbers (so ``95.0204`` == ``95.02040``; ``-0.0`` == ``0.0``),
    or as stripped text when they are not all finite numbers.  A digest instead of the
    values themselves keeps ~50 bytes per row instead of ~500 (issue 12, bounded memory); a
    chance collision between two different rows (about 1e-27 for a million rows) would be
    needed to drop a lesion.
    """
    h = hashlib.blake2b(row[C_FILE].strip().encode(), digest_size=16)
    if values is not None and all(math.isfinite(v) for v in values):
        h.update(b"\0n" + struct.pack(f"<{len(values)}d", *(v + 0.0 for v in values)))
    else:
        h.update(b"\0t" + "\0".join(p.strip() for p in row[C_COORDS].split(",")).encode())
    return h.digest()


def _physical_lines(f: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines as bytes without the line ending; ``None`` for a line over :data:`MAX_LINE_BYTES`.

    An over-long line is skipped in bounded pieces, never held whole in memory.
    """
    while True:
        line = f.readline(MAX_LINE_BYTES + 2)
        if not line:
            return
        if not line.endswith(b"\n") and len(line) == MAX_LINE_BYTES + 2:  # longer than the limit: skip the rest
            while line and not line.endswith(b"\n"):
                line = f.readline(1 << 20)
            yield None
            continue
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE_BYTES:
            yield None
            continue
        yield line


def _split_line(line: bytes) -> list[str]:
    """Decode one physical line (UTF-8) and split it into fields; :class:`LesionError` says why not.

    Choice (issue 12 cases 8, 9): a DL_info.csv record is exactly one physical line, because
    no field of the format holds a newline.  So an unterminated quote cannot swallow the
    next row: a line with an odd number of ``"`` is reported on its own
    (``unterminated_quote``), and the following lines are read as the rows they are.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LesionError("bad_encoding", f"byte 0x{line[e.start]:02x} at column {e.start + 1} is not UTF-8 "
                                          "(DL_info.csv is read as UTF-8)") from None
    if text.count('"') % 2:
        raise LesionError("unterminated_quote", "odd number of double quotes: a quoted field is not closed on this "
                                                "line (no DL_info.csv field spans lines; the next line is read "
                                                "as its own row)")
    try:
        return next(csv.reader((text,)), [])
    except csv.Error as e:
        raise LesionError("malformed_csv", f"csv: {e}") from None


def _guess_file_name(line: bytes | None) -> str:
    """The first field of a line that could not be parsed, for the report (lossy; empty if unknown)."""
    if line is None:
        return ""
    return line.split(b",", 1)[0].decode("utf-8", "replace").strip().strip('"')[:200]


def read_dl_info(path: str | Path, strict: bool = False, exclude_noisy: bool = False) -> DLInfo:
    """Read and validate ``DL_info.csv``.

    Returns a :class:`DLInfo` with every valid row as a :class:`LesionRecord` (CSV order)
    and every rejected row as an :class:`Issue`.  With ``strict`` the first bad row
    raises :class:`~.report.ConversionError`.  With ``exclude_noisy`` a valid row whose
    ``Possibly_noisy`` is 1 becomes an ``possibly_noisy`` issue instead of a record (an
    exclusion, not a fault: never raised in strict mode; an unparsable flag is kept, as it
    does not say the row is noisy).  A missing file or a wrong header raises
    ``ValueError`` (the whole input is unusable, not one row).

    The file is streamed line by line in binary (issue 12 cases 8 to 10): every line is
    decoded, size-checked and split on its own, so one bad byte, one huge field or one
    unterminated quote costs one row, reported with its line number.  Per row only the
    :class:`LesionRecord` (with shared tuples for repeated field values) and a 16-byte
    duplicate digest are kept.
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
    seen: dict[bytes, int] = {}
    shared: dict = {}
    n_rows = 0
    with open(path, "rb") as f:
        lines = _physical_lines(f)
        first = next(lines, None)
        try:
            header = _split_line(first.removeprefix(b"\xef\xbb\xbf")) if first is not None else None
        except LesionError:
            header = None
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path}: line 1 is not the DL_info.csv header; "
                             f"expected the 18 columns {', '.join(COLUMNS)}")
        for dl_row, line in enumerate(lines, start=2):
            if line is not None and not line.strip():
                continue
            n_rows += 1
            if line is None:
                reject(dl_row, "", "oversized_row", f"line longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES); "
                                                   "real rows are ~250 bytes")
                continue
            try:
                row = _split_line(line)
            except LesionError as e:
                reject(dl_row, _guess_file_name(line), e.reason, e.detail)
                continue
            file_name = row[0].strip() if row else ""
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
            coords = _coordinate_values(row)
            first_line = seen.setdefault(_dup_key(row, coords), dl_row)
            if first_line != dl_row:
                reject(dl_row, file_name, "duplicate_row", f"same File_name and coordinates as line {first_line}")
                continue
            try:
                record = _parse_row(row, dl_row, ids, k, coords, shared)
            except LesionError as e:
                reject(dl_row, file_name, e.reason, e.detail)
                continue
            if exclude_noisy and record.possibly_noisy == 1:
                reject(dl_row, file_name, "possibly_noisy", "Possibly_noisy is 1 (--exclude-noisy)")
                continue
            records.append(record)
    return DLInfo(records, log.issues, patient_splits, n_rows)
