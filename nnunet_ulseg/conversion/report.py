"""Skip/issue reporting for the DeepLesion conversion (DESIGN "DeepLesion on disk", CONVENTIONS "Errors").

One bad row or file never aborts a conversion: each problem becomes an :class:`Issue`
(row, file, reason code, human detail) that is logged, counted and written to
``conversion_report.csv``.  In strict mode the first issue is raised as a
:class:`ConversionError` instead.
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

logger = logging.getLogger("nnunet_ulseg.conversion")

#: Reason codes (the ``reason`` column of ``conversion_report.csv``) and what they mean.
REASONS: dict[str, str] = {
    "bad_encoding": "the DL_info.csv line is not valid UTF-8",
    "oversized_row": "the DL_info.csv line is longer than any real row (MAX_LINE_BYTES); not parsed",
    "unterminated_quote": "the DL_info.csv line has an odd number of double quotes (a quoted field is not closed on "
                          "its line; DL_info.csv fields never span lines)",
    "malformed_csv": "the DL_info.csv line cannot be split into fields by the csv module",
    "wrong_column_count": "the DL_info.csv row does not have 18 columns",
    "bad_integer": "Patient_index, Study_index, Series_ID, Key_slice_index or Train_Val_Test is not an integer",
    "unknown_split": "Train_Val_Test is not 1 (train), 2 (val) or 3 (test)",
    "file_name_mismatch": "File_name disagrees with Patient_index/Study_index/Series_ID/Key_slice_index",
    "duplicate_row": "same File_name and Measurement_coordinates as an earlier row (the first is kept)",
    "bad_spacing": "Spacing_mm_px_ is not 3 positive finite numbers",
    "bad_image_size": "Image_size is not 2 positive integers",
    "bad_coordinates": "Measurement_coordinates is not 8 numbers",
    "nan_coordinates": "Measurement_coordinates contains NaN or infinite values",
    "zero_length_axis": "a RECIST axis has zero length",
    "degenerate_recist": "the RECIST points are collinear (no extent across the long axis)",
    "lesion_outside_image": "a RECIST endpoint lies more than 1 px outside the image",
    "possibly_noisy": "excluded by --exclude-noisy: DeepLesion flags the row as possibly noisy (Possibly_noisy = 1)",
    "missing_png": "the key-slice PNG does not exist",
    "not_regular_file": "the key-slice PNG path is not a regular file (a FIFO, device, socket or folder); never opened "
                        "for reading",
    "unreadable_png": "the key-slice PNG exists but cannot be read (permissions, I/O error)",
    "corrupt_png": "the key-slice PNG is truncated or corrupt (no PNG signature/IHDR, or decoding failed)",
    "png_format": "the key-slice PNG is not a single-channel 16-bit image (from its IHDR header)",
    "png_too_large": "the key-slice PNG's header (or file size) exceeds the largest slice the converter decodes "
                     "(MAX_PNG_PIXELS); rejected before decoding",
    "png_size_mismatch": "the PNG size (from its header) differs from the row's Image_size",
    "internal_error": "an unexpected error while converting this lesion (a bug: please report)",
}


class ConversionError(ValueError):
    """A conversion problem raised in strict mode (or a fatal whole-input problem)."""

    def __init__(self, message: str, issue: "Issue | None" = None):
        super().__init__(message)
        self.issue = issue


class LesionError(ValueError):
    """A per-lesion problem with a reason code from :data:`REASONS` and the file involved."""

    def __init__(self, reason: str, detail: str, file: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.file = file


@dataclass(frozen=True, slots=True)
class Issue:
    """One skipped lesion: 1-based DL_info line (header = line 1), File_name, file involved, reason, detail."""

    dl_row: int
    file_name: str
    file: str
    reason: str
    detail: str

    @classmethod
    def from_error(cls, dl_row: int, file_name: str, err: LesionError) -> "Issue":
        return cls(dl_row, file_name, err.file, err.reason, err.detail)

    def message(self) -> str:
        where = f" [{self.file}]" if self.file else ""
        return f"DL_info.csv line {self.dl_row} ({self.file_name or '?'}){where}: {self.reason}: {self.detail}"


#: Reasons that are the user's choice, not a fault: reported and counted like the others, but logged at
#: INFO and never raised in strict mode.
EXCLUSIONS = frozenset({"possibly_noisy"})


class IssueLog:
    """Collects issues; logs each one; raises :class:`ConversionError` on the first fault when ``strict``."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.issues: list[Issue] = []

    def add(self, issue: Issue) -> None:
        excluded = issue.reason in EXCLUSIONS
        if self.strict and not excluded:
            raise ConversionError(issue.message(), issue)
        self.issues.append(issue)
        if excluded:
            logger.info("excluded: %s", issue.message())
        else:
            logger.warning("skipped: %s", issue.message())

    def counts(self) -> Counter:
        return Counter(i.reason for i in self.issues)


REPORT_COLUMNS = ("dl_row", "File_name", "file", "reason", "detail")


def write_report(path: str | Path, issues: Iterable[Issue]) -> None:
    """Write ``conversion_report.csv``: one row per skipped lesion, sorted by DL_info line."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(REPORT_COLUMNS)
        for i in sorted(issues, key=lambda i: i.dl_row):
            w.writerow((i.dl_row, i.file_name, i.file, i.reason, i.detail))


def read_report(path: str | Path) -> list[Issue]:
    """Read ``conversion_report.csv`` back into :class:`Issue` objects."""
    with open(path, newline="") as f:
        return [Issue(int(r["dl_row"]), r["File_name"], r["file"], r["reason"], r["detail"]) for r in csv.DictReader(f)]


class ConversionCounts:
    """``converted`` and ``skipped`` of a converter's result (it has ``rows`` with a ``split`` and ``issues``
    with a ``reason``): shared by the DeepLesion and ULS23 results."""

    @property
    def converted(self) -> dict[str, int]:
        """Converted cases per split name (``train``, ``val``, ``test``)."""
        from .dl_info import SPLIT_NAMES

        c = Counter(r.split for r in self.rows)
        return {name: c.get(name, 0) for name in SPLIT_NAMES.values()}

    @property
    def skipped(self) -> Counter:
        """Skipped cases per reason code."""
        return Counter(i.reason for i in self.issues)

    @property
    def pseudo_statuses(self) -> Counter:
        """Converted cases per pseudo-mask status (``ok``, ``fallback_ellipse``, ...)."""
        return Counter(r.pseudo_status for r in self.rows)

    def pseudo_notes(self) -> dict[str, int]:
        """Summary notes for the pseudo masks that are not ``ok`` (needs a ``pseudo`` attribute: the maker)."""
        return {f"{self.pseudo} pseudo masks with status {s}": n
                for s, n in sorted(self.pseudo_statuses.items()) if s != "ok"}


def format_summary(converted: dict[str, int], skipped: Counter, notes: dict[str, int] | None = None) -> str:
    """Human summary: converted cases per split, skipped lesions per reason, and notes (e.g. context fallbacks)."""
    total = sum(converted.values())
    lines = [f"converted {total} lesions: " + ", ".join(f"{k} {v}" for k, v in converted.items())]
    n_skip = sum(skipped.values())
    lines.append(f"skipped {n_skip} lesions" + (":" if n_skip else ""))
    for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason}: {n}")
    for k, v in (notes or {}).items():
        if v:
            lines.append(f"{k}: {v}")
    return "\n".join(lines)
