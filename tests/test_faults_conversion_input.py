"""Fault injection on the DeepLesion converter's input side (issue 12 cases 4, 8, 9, 10, 11).

Each test builds a small corpus at test time (``dl_fixtures``), breaks one thing the way a
careless or hostile user would, and checks that the converter converts every good lesion,
reports the bad row with its DL_info line and a precise reason, and goes on.  Also here:
bounded parsing memory on a large DL_info.csv, ``--exclude-noisy`` and ``--context-mm``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from dl_fixtures import W, H, dl_row, ramp, recist_text, write_dl_info, write_png
from nnunet_ulseg.conversion.cli import main
from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
from nnunet_ulseg.conversion.dl_info import COLUMNS, MAX_LINE_BYTES, read_dl_info
from nnunet_ulseg.conversion.io import read_png
from nnunet_ulseg.conversion.report import LesionError, read_report
from nnunet_ulseg.conversion.sidecar import read_sidecar


@pytest.fixture(autouse=True)
def _preprocessed(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (hangs)")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def convert(dl: Path, out: Path, **kw):
    with deadline(60):
        return convert_deeplesion(dl, out, num_processes=1, progress=False, **kw)


def csv_line(row: list[str]) -> bytes:
    """One DL_info row as csv writes it, without the line ending."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue().encode()


def write_lines(root: Path, lines: list[bytes]) -> Path:
    """``DL_info.csv`` from raw byte lines (header first), so any byte can be planted."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "DL_info.csv"
    path.write_bytes(b"\n".join([",".join(COLUMNS).encode(), *lines]) + b"\n")
    return path


def three_good(root: Path) -> list[list[str]]:
    """Three good lesions on three key slices of patient 1 (slices 10, 11, 12)."""
    for s in (10, 11, 12):
        write_png(root, 1, 1, 1, s, ramp())
    return [dl_row(1, 1, 1, s, recist_text(30 + s, 30, 12, 6), 1) for s in (10, 11, 12)]


def issues(result) -> dict[int, str]:
    return {i.dl_row: i.reason for i in result.issues}


# --- case 4: every row is checked against its own PNG ---------------------------------------------------------------
def test_every_row_of_a_slice_is_checked_against_its_png(tmp_path):
    dl = tmp_path / "dl"
    write_png(dl, 1, 1, 1, 10, ramp())
    write_dl_info(dl, [
        dl_row(1, 1, 1, 10, recist_text(60, 50, 20, 10), 1, size=(2000, 2000)),  # line 2: claims 2000x2000
        dl_row(1, 1, 1, 10, recist_text(30, 30, 12, 6), 1),                        # line 3: true size
        dl_row(1, 1, 1, 10, recist_text(40, 30, 12, 6), 1, size=(2000, 2000)),   # line 4: claims 2000x2000
        dl_row(1, 1, 1, 10, recist_text(50, 30, 12, 6), 1, size=(H, W)),         # line 5: width and height swapped
    ])
    result = convert(dl, tmp_path / "out")
    assert [r.dl_row for r in result.rows] == [3]
    assert issues(result) == {2: "png_size_mismatch", 4: "png_size_mismatch", 5: "png_size_mismatch"}
    assert all(f"{W}x{H}" in i.detail for i in result.issues)
    row, = read_sidecar(tmp_path / "out" / "lesions.csv")
    assert (row.image_width, row.image_height) == (W, H)


# --- case 8: an unterminated quote ----------------------------------------------------------------------------------
def test_unterminated_quote_reports_its_line_and_keeps_the_next_row(tmp_path):
    dl = tmp_path / "dl"
    good = [csv_line(r) for r in three_good(dl)]
    broken = good[0].replace(b'",', b",", 1)  # closing quote of Measurement_coordinates lost
    assert broken.count(b'"') % 2 == 1
    write_lines(dl, [broken, good[1], good[2]])
    result = convert(dl, tmp_path / "out")
    assert issues(result) == {2: "unterminated_quote"}
    assert [r.dl_row for r in result.rows] == [3, 4]  # the row after the broken one is not swallowed
    assert result.issues[0].file_name == "000001_01_01_010.png"


def test_a_field_spanning_two_lines_reports_both_lines(tmp_path):
    dl = tmp_path / "dl"
    good = [csv_line(r) for r in three_good(dl)]
    split = good[1].replace(b", ", b",\n", 1)  # a newline inside the quoted coordinates: one record, two lines
    write_lines(dl, [good[0], split, good[2]])
    info = read_dl_info(dl / "DL_info.csv")
    assert [(i.dl_row, i.reason) for i in info.issues] == [(3, "unterminated_quote"), (4, "unterminated_quote")]
    assert [r.dl_row for r in info.records] == [2, 5]
    assert info.n_rows == 4


# --- case 9: a non-UTF-8 byte ----------------------------------------------------------------------------------------
def test_non_utf8_byte_is_one_bad_row_with_its_line(tmp_path):
    dl = tmp_path / "dl"
    good = [csv_line(r) for r in three_good(dl)]
    latin1 = good[1].replace(b",F,", b",\xe9,", 1)  # Patient_gender in Latin-1
    write_lines(dl, [good[0], latin1, good[2]])
    (dl / "DL_info.csv").write_bytes(b"\xef\xbb\xbf" + (dl / "DL_info.csv").read_bytes())  # a BOM is fine
    result = convert(dl, tmp_path / "out")
    assert issues(result) == {3: "bad_encoding"}
    assert "0xe9" in result.issues[0].detail and result.issues[0].file_name == "000001_01_01_011.png"
    assert [r.dl_row for r in result.rows] == [2, 4]
    assert main(["-i", str(dl), "-o", str(tmp_path / "cli"), "-np", "1", "--quiet"]) == 0


# --- case 10: a field over csv's 131,072-character limit ---------------------------------------------------------------
def test_oversized_field_is_one_bad_row(tmp_path):
    dl = tmp_path / "dl"
    rows = three_good(dl)
    rows[1][14] = "1" * 200_000  # DICOM_windows
    write_dl_info(dl, rows)
    result = convert(dl, tmp_path / "out")
    assert issues(result) == {3: "oversized_row"}
    assert str(MAX_LINE_BYTES) in result.issues[0].detail
    assert [r.dl_row for r in result.rows] == [2, 4]


def test_oversized_last_line_without_newline(tmp_path):
    dl = tmp_path / "dl"
    path = write_lines(dl, [csv_line(r) for r in three_good(dl)])
    path.write_bytes(path.read_bytes() + b"x" * (3 * MAX_LINE_BYTES))
    info = read_dl_info(path)
    assert [(i.dl_row, i.reason) for i in info.issues] == [(5, "oversized_row")]
    assert len(info.records) == 3


# --- case 11: FIFOs, folders and huge PNGs ------------------------------------------------------------------------------
def test_fifo_png_is_reported_not_waited_on(tmp_path):
    dl = tmp_path / "dl"
    rows = three_good(dl)
    folder = dl / "Images_png" / "000001_01_01"
    (folder / "011.png").unlink()
    os.mkfifo(folder / "011.png")                # key slice of line 3
    os.mkfifo(folder / "013.png")                # a context neighbour of slice 12
    (folder / "012.png").unlink()
    (folder / "012.png").mkdir()                 # a folder where slice 12's PNG should be
    rows.append(dl_row(1, 1, 1, 14, recist_text(40, 40, 12, 6), 1, slice_range="12, 14"))
    write_png(dl, 1, 1, 1, 14, ramp())
    write_dl_info(dl, rows)
    result = convert(dl, tmp_path / "out", context=1)
    assert issues(result) == {3: "not_regular_file", 4: "not_regular_file"}
    assert [r.dl_row for r in result.rows] == [2, 5]
    assert result.rows[1].context_slices == (14, 14, 14)  # 13 is a FIFO, 15 is outside Slice_range


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid all-zero 16-bit grey PNG of ``width x height`` that is cheap to write.

    The zlib stream is one full-flushed deflate chunk repeated (a full flush ends a block
    on a byte boundary and resets the window, so every chunk compresses to the same
    bytes), then an empty final block and the Adler-32 of all-zero data (a = 1, b = n).
    """
    row = 1 + 2 * width  # filter byte + pixels
    rows_per_chunk = 50
    assert height % rows_per_chunk == 0
    c = zlib.compressobj(9)
    chunk = c.compress(bytes(row * rows_per_chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    header, body = chunk[:2], chunk[2:]
    n = row * height
    data = header + body * (height // rows_per_chunk) + b"\x03\x00" + struct.pack(">I", ((n % 65521) << 16) | 1)

    def png_chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))
    return path


def test_huge_png_is_rejected_by_its_header_before_decoding(tmp_path):
    small = huge_png(tmp_path / "small.png", 300, 200)
    assert read_png(str(small)).shape == (200, 300)  # the construction is a real PNG
    p20 = huge_png(tmp_path / "20000.png", 20000, 20000)
    p40 = huge_png(tmp_path / "40000.png", 40000, 40000)
    assert p20.stat().st_size < 1_000_000
    code = (
        "import resource, sys\n"
        "from nnunet_ulseg.conversion.io import read_png\n"
        "from nnunet_ulseg.conversion.report import LesionError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        read_png(p, (512, 512))\n"
        "    except LesionError as e:\n"
        "        print(e.reason, e.detail)\n"
        "print('grew_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(p20), str(p40)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith("png_too_large 20000x20000") and out[1].startswith("png_too_large 40000x40000")
    assert float(out[2].split()[1]) < 100  # nothing near the 800 MB of pixels was allocated


def test_huge_png_in_a_conversion_has_a_precise_reason(tmp_path):
    dl = tmp_path / "dl"
    rows = three_good(dl)
    huge_png(dl / "Images_png" / "000001_01_01" / "011.png", 40000, 40000)
    rows[1] = dl_row(1, 1, 1, 11, recist_text(41, 30, 12, 6), 1, size=(40000, 40000))
    write_dl_info(dl, rows)
    result = convert(dl, tmp_path / "out")
    assert issues(result) == {3: "png_too_large"}
    assert [r.dl_row for r in result.rows] == [2, 4]


@pytest.mark.parametrize("kind, reason", [("rgb8", "png_format"), ("rgb16", "png_format"),
                                          ("bad_idat", "corrupt_png"), ("no_ihdr", "corrupt_png")])
def test_png_header_faults(tmp_path, kind, reason):
    path = tmp_path / "x.png"
    if kind in ("rgb8", "rgb16"):
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8 if kind == "rgb8" else np.uint16))
    else:
        data = huge_png(path, 300, 200).read_bytes()
        if kind == "bad_idat":
            i = data.index(b"IDAT") + 40
            data = data[:i] + bytes(64) + data[i + 64:]
        else:
            data = data[:12] + b"XXXX" + data[16:]
        path.write_bytes(data)
    with pytest.raises(LesionError) as e:
        read_png(str(path))
    assert e.value.reason == reason


# --- what already held: no path traversal through File_name ---------------------------------------------------------------
def test_file_name_cannot_point_outside_images_png(tmp_path):
    dl = tmp_path / "dl"
    rows = three_good(dl)
    rows[1][0] = "../../../etc/passwd"
    write_dl_info(dl, rows)
    result = convert(dl, tmp_path / "out")
    assert issues(result) == {3: "file_name_mismatch"}


# --- bounded memory -------------------------------------------------------------------------------------------------------
def test_parsing_a_large_dl_info_keeps_memory_per_row_small(tmp_path):
    """Peak RSS growth while parsing 40k rows (a fresh process), per row: ~1,600 B before issue 12, ~750 after.

    (200k rows: 313 MB before, 147 MB after; the growth is linear in the rows.)
    """
    n = 40_000
    proto = dl_row(1, 1, 1, 10, recist_text(40, 40, 12, 6), 1)
    lines = [",".join(COLUMNS)]
    marks = [recist_text(20 + 10 * k, 40, 12, 6) for k in range(4)]
    for i in range(n):
        row = list(proto)
        patient, key = 1 + i // 20, 10 + (i % 20) // 4
        row[:6] = [f"{patient:06d}_01_01_{key:03d}.png", str(patient), "1", "1", str(key), marks[i % 4]]
        lines.append(csv_line(row).decode())
    (tmp_path / "DL_info.csv").write_text("\n".join(lines) + "\n")
    code = (
        "import logging, resource, sys, time\n"
        "from nnunet_ulseg.conversion.dl_info import read_dl_info\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t0 = time.perf_counter()\n"
        "info = read_dl_info(sys.argv[1])\n"
        "print(len(info.records), len(info.issues), time.perf_counter() - t0,\n"
        "      (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / len(info.records))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "DL_info.csv")], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    n_records, n_issues, seconds, bytes_per_row = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    assert (n_records, n_issues) == (n, 0)
    assert bytes_per_row < 1000, bytes_per_row
    assert seconds < 20


# --- --exclude-noisy ----------------------------------------------------------------------------------------------------
def test_exclude_noisy_skips_flagged_rows_with_a_reason(tmp_path, capsys):
    dl = tmp_path / "dl"
    rows = three_good(dl)
    rows[0][10] = "1"
    rows[2][10] = ""  # unknown flag: kept
    write_dl_info(dl, rows)
    kept = convert(dl, tmp_path / "all")
    assert len(kept.rows) == 3 and kept.issues == []
    result = convert(dl, tmp_path / "clean", exclude_noisy=True, strict=True)  # an exclusion is not a fault
    assert issues(result) == {2: "possibly_noisy"}
    assert [r.dl_row for r in result.rows] == [3, 4]
    assert "possibly_noisy: 1" in result.summary()
    assert json.loads((tmp_path / "clean" / "dataset.json").read_text())["exclude_noisy"] is True
    assert main(["-i", str(dl), "-o", str(tmp_path / "cli"), "-np", "1", "--quiet", "--exclude-noisy"]) == 0
    assert {i.dl_row: i.reason for i in read_report(tmp_path / "cli" / "conversion_report.csv")} == {2: "possibly_noisy"}


# --- --context-mm -------------------------------------------------------------------------------------------------------
def test_context_mm_picks_neighbours_by_distance(tmp_path):
    dl = tmp_path / "dl"
    rows = []
    for series, z in ((1, "1"), (2, "5"), (3, "2"), (4, "0.6")):
        for s in range(2, 19):
            write_png(dl, 1, 1, series, s, ramp(offset=s))
        rows.append(dl_row(1, 1, series, 10, recist_text(40, 40, 12, 6), 1, spacing=f"0.7, 0.7, {z}",
                           slice_range="2, 18"))
    rows.append(dl_row(1, 1, 1, 12, recist_text(40, 40, 12, 6), 1, spacing="0.7, 0.7, 1", slice_range="9, 14"))
    write_dl_info(dl, rows)
    result = convert(dl, tmp_path / "out", context=1, context_mm=5)
    slices = {r.dl_row: r.context_slices for r in result.rows}
    assert slices == {
        2: (10, 5, 15),    # 1 mm slices: 5 slices away
        3: (10, 9, 11),    # 5 mm slices: the next slice
        4: (10, 7, 13),    # 2 mm: 2.5 slices, rounded away from the key
        5: (10, 2, 18),    # 0.6 mm: 8.3 slices
        6: (12, 9, 14),    # 7 and 17 outside Slice_range 9..14: nearest available toward the key
    }
    dj = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert dj["context"] == 1 and dj["context_mm"] == 5 and dj["channel_slices"] == ["key", "key-5mm", "key+5mm"]
    row = next(r for r in result.rows if r.dl_row == 2)
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "imagesTr" / f"{row.case}_0001.mha")))
    key = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "imagesTr" / f"{row.case}_0000.mha")))
    inside = key > -1024
    assert np.all((key - img)[inside] == 5)  # channel 1 is slice 5 (ramp offset 5 below the key's 10)


def test_context_mm_needs_context_and_a_positive_distance(tmp_path, capsys):
    dl = tmp_path / "dl"
    write_dl_info(dl, three_good(dl))
    with pytest.raises(ValueError, match="context"):
        convert(dl, tmp_path / "a", context=0, context_mm=5)
    with pytest.raises(ValueError, match="context_mm"):
        convert(dl, tmp_path / "b", context=1, context_mm=0)
    assert main(["-i", str(dl), "-o", str(tmp_path / "c"), "--context-mm", "5", "--quiet"]) == 2
    assert "--context" in capsys.readouterr().err
