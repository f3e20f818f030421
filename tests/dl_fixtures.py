"""Tiny synthetic DeepLesion folders for the conversion tests (DESIGN "DeepLesion on disk").

Slices are small (96 x 80 px, W x H) HU ramps ``HU = -1000 + 2 x + 3 y`` so any crop can be
checked against a closed form (bilinear interpolation reproduces a linear ramp exactly).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np

from nnunet_ulseg.conversion.dl_info import COLUMNS
from nnunet_ulseg.recist import Recist

W, H = 96, 80


def ramp(w: int = W, h: int = H, offset: float = 0.0) -> np.ndarray:
    """``[h, w]`` HU ramp ``-1000 + 2 x + 3 y + offset`` (int)."""
    y, x = np.mgrid[0:h, 0:w]
    return (-1000 + 2 * x + 3 * y + offset).astype(np.int32)


def write_png(root: Path, patient: int, study: int, series: int, slice_index: int, hu: np.ndarray) -> Path:
    """Write ``Images_png/<p>_<st>_<se>/<slice>.png`` as DeepLesion does (uint16, HU + 32768)."""
    folder = root / "Images_png" / f"{patient:06d}_{study:02d}_{series:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slice_index:03d}.png"
    assert cv2.imwrite(str(path), (hu + 32768).astype(np.uint16))
    return path


def recist_text(cx: float, cy: float, long: float, short: float, angle_deg: float = 0.0) -> str:
    """1-based ``Measurement_coordinates`` of a perfect RECIST mark centred on 0-based ``(cx, cy)``."""
    a = math.radians(angle_deg)
    d = np.array([math.cos(a), math.sin(a)])
    n = np.array([-d[1], d[0]])
    c = np.array([cx, cy])
    pts = [c - d * long / 2, c + d * long / 2, c - n * short / 2, c + n * short / 2]
    return Recist.from_points(pts).to_deeplesion()


def dl_row(patient: int, study: int, series: int, slice_index: int, coords: str, split: int = 1, *,
           spacing: str = "0.7, 0.8, 5", size: tuple[int, int] = (W, H), slice_range: str | None = None,
           lesion_type: str = "-1", noisy: str = "0", windows: str = "-175, 275", age: str = "62") -> list[str]:
    """One DL_info.csv row (18 fields, strings)."""
    file_name = f"{patient:06d}_{study:02d}_{series:02d}_{slice_index:03d}.png"
    if slice_range is None:
        slice_range = f"{slice_index - 3}, {slice_index + 3}"
    return [file_name, str(patient), str(study), str(series), str(slice_index), coords, "0, 0, 1, 1", "10, 5",
            "0.5, 0.5, 0.5", lesion_type, noisy, slice_range, spacing, f"{size[0]}, {size[1]}", windows, "F", age,
            str(split)]


def write_dl_info(root: Path, rows: list[list[str]]) -> Path:
    """``DL_info.csv`` with the header and ``rows`` (multi-number fields quoted)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "DL_info.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return path


def fault_corpus(root: Path) -> dict:
    """A corpus with good lesions and one row per fault the converter must handle.

    Returns ``{"good": {case_id: split_name}, "bad": {dl_row: reason}}``; DL_info line
    numbers count the header as line 1.
    """
    rows: list[list[str]] = []
    good: dict[str, str] = {}
    bad: dict[int, str] = {}

    def add(row, case=None, split=None, reason=None):
        rows.append(row)
        line = len(rows) + 1
        if case:
            good[case] = split
        if reason:
            bad[line] = reason
        return line

    # patient 1: train, two lesions on one key slice, plus context neighbours 8..12
    for s in range(8, 13):
        write_png(root, 1, 1, 1, s, ramp(offset=10 * (s - 10)))
    add(dl_row(1, 1, 1, 10, recist_text(30, 30, 12, 6), 1, slice_range="8, 12"), "DL_000001_01_01_010_0", "train")
    add(dl_row(1, 1, 1, 10, recist_text(60, 50, 20, 10, 30), 1, slice_range="8, 12"), "DL_000001_01_01_010_1", "train")
    # patient 2: val; patient 3: test
    write_png(root, 2, 1, 1, 5, ramp())
    add(dl_row(2, 1, 1, 5, recist_text(40, 40, 16, 8), 2), "DL_000002_01_01_005_0", "val")
    write_png(root, 3, 1, 2, 7, ramp())
    add(dl_row(3, 1, 2, 7, recist_text(50, 30, 10, 5), 3, lesion_type="4"), "DL_000003_01_02_007_0", "test")
    # patient 4: conflicting split values (train and test) -> all of patient 4 goes to test
    write_png(root, 4, 1, 1, 20, ramp())
    write_png(root, 4, 2, 1, 21, ramp())
    add(dl_row(4, 1, 1, 20, recist_text(30, 40, 14, 7), 1), "DL_000004_01_01_020_0", "test")
    add(dl_row(4, 2, 1, 21, recist_text(35, 40, 14, 7), 3), "DL_000004_02_01_021_0", "test")
    # patient 9: val, several rows; the faults live on other patients / slices
    write_png(root, 9, 1, 1, 30, ramp())
    dup = dl_row(9, 1, 1, 30, recist_text(45, 35, 18, 9), 2)
    add(dup, "DL_000009_01_01_030_0", "val")
    add(list(dup), reason="duplicate_row")
    add(dl_row(5, 1, 1, 11, recist_text(40, 40, 10, 5), 1), reason="missing_png")
    trunc = write_png(root, 6, 1, 1, 12, ramp())
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    add(dl_row(6, 1, 1, 12, recist_text(40, 40, 10, 5), 1), reason="corrupt_png")
    write_png(root, 7, 1, 1, 13, ramp(w=64, h=64))
    add(dl_row(7, 1, 1, 13, recist_text(30, 30, 10, 5), 1), reason="png_size_mismatch")
    add(dl_row(9, 1, 1, 30, "nan, 1, 2, 3, 4, 5, 6, 7", 2), reason="nan_coordinates")
    add(dl_row(9, 1, 1, 30, "10, 10, 10, 10, 12, 8, 12, 14", 2), reason="zero_length_axis")
    add(dl_row(9, 1, 1, 30, "10, 10, 30, 10, 15, 10, 25, 10", 2), reason="degenerate_recist")
    add(dl_row(9, 1, 1, 30, recist_text(95, 40, 20, 10), 2), reason="lesion_outside_image")
    add(dl_row(9, 1, 1, 30, recist_text(40, 40, 10, 5), 2, spacing="0.7, abc, 5"), reason="bad_spacing")
    add(dl_row(9, 1, 1, 30, recist_text(41, 40, 10, 5), 2, spacing="0.7, 0.7, 0"), reason="bad_spacing")
    add(dl_row(9, 1, 1, 30, recist_text(40, 40, 10, 5), 2)[:-1], reason="wrong_column_count")
    add(dl_row(9, 1, 1, 30, recist_text(40, 40, 10, 5), 4), reason="unknown_split")
    r = dl_row(9, 1, 1, 30, recist_text(40, 40, 10, 5), 2)
    r[1] = "nine"
    add(r, reason="bad_integer")
    write_dl_info(root, rows)
    return {"good": good, "bad": bad}
