"""Issue 12's acceptance corpus: every fault of the issue in one DeepLesion folder, converted once.

The corpus is ``dl_fixtures.fault_corpus`` (the faults the converter already handled) plus the
issue's input cases: a later row of a good slice claiming 2000 x 2000 (case 4), an
unterminated quote (case 8), a non-UTF-8 byte (case 9), a field over csv's limit (case 10), a
FIFO and a 40000² PNG (case 11), and a ``Possibly_noisy`` row under ``--exclude-noisy``.
The conversion must convert every good lesion, list every bad one with its DL_info line and
reason, and write nothing outside ``--out`` except the documented copy of the split into
``$nnUNet_preprocessed/<dataset>/`` (the input folder is hashed before and after, and every
file under the test's root is listed).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from dl_fixtures import dl_row, fault_corpus, ramp, recist_text, write_png
from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
from nnunet_ulseg.conversion.report import read_report
from nnunet_ulseg.conversion.sidecar import read_sidecar
from test_faults_conversion_input import deadline, huge_png


def csv_line(row: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue().encode()


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content hash, FIFOs and folders by kind (never opened)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_fifo():
            out[str(p.relative_to(root))] = "fifo"
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root))] = "dir"
    return out


def test_a_corpus_with_every_fault_converts_every_good_lesion(tmp_path, monkeypatch):
    root = tmp_path / "root"
    dl = root / "DeepLesion"
    corpus = fault_corpus(dl)
    good, bad = dict(corpus["good"]), dict(corpus["bad"])
    lines = (dl / "DL_info.csv").read_bytes().rstrip(b"\n").split(b"\n")

    def add(line: bytes, case: str | None = None, split: str | None = None, reason: str | None = None) -> None:
        lines.append(line)
        number = len(lines)  # the header is line 1
        if case:
            good[case] = split
        if reason:
            bad[number] = reason

    # case 4: patient 1's key slice 10 is 96 x 80; a third row of it claims 2000 x 2000
    add(csv_line(dl_row(1, 1, 1, 10, recist_text(45, 60, 10, 5), 1, slice_range="8, 12", size=(2000, 2000))),
        reason="png_size_mismatch")
    # case 8: an unterminated quote, then a good row that must not be swallowed
    write_png(dl, 10, 1, 1, 40, ramp())
    write_png(dl, 10, 1, 1, 41, ramp())
    add(csv_line(dl_row(10, 1, 1, 40, recist_text(40, 40, 12, 6), 1)).replace(b'",', b",", 1),
        reason="unterminated_quote")
    add(csv_line(dl_row(10, 1, 1, 41, recist_text(40, 40, 12, 6), 1)), "DL_000010_01_01_041_0", "train")
    # case 9: a Latin-1 byte
    write_png(dl, 11, 1, 1, 50, ramp())
    add(csv_line(dl_row(11, 1, 1, 50, recist_text(40, 40, 12, 6), 1)).replace(b",F,", b",\xe9,", 1),
        reason="bad_encoding")
    # case 10: a field over 131,072 characters
    row = dl_row(11, 1, 1, 50, recist_text(41, 40, 12, 6), 1)
    row[14] = "1" * 200_000
    add(csv_line(row), reason="oversized_row")
    # case 11: a FIFO where a key slice's PNG should be, and a 40000 x 40000 PNG (a small file)
    (dl / "Images_png" / "000012_01_01").mkdir(parents=True)
    os.mkfifo(dl / "Images_png" / "000012_01_01" / "060.png")
    add(csv_line(dl_row(12, 1, 1, 60, recist_text(40, 40, 12, 6), 1)), reason="not_regular_file")
    huge_png(dl / "Images_png" / "000012_01_01" / "061.png", 40000, 40000)
    add(csv_line(dl_row(12, 1, 1, 61, recist_text(40, 40, 12, 6), 1, size=(40000, 40000))), reason="png_too_large")
    # --exclude-noisy: a flagged row of a good slice
    add(csv_line(dl_row(10, 1, 1, 41, recist_text(60, 40, 12, 6), 1, noisy="1")), reason="possibly_noisy")
    (dl / "DL_info.csv").write_bytes(b"\n".join(lines) + b"\n")

    before = snapshot(root)
    out = root / "nnUNet_raw" / "Dataset512_Mixed"
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "nnUNet_preprocessed"))
    with deadline(120):
        result = convert_deeplesion(dl, out, num_processes=2, progress=False, exclude_noisy=True)

    # every good lesion converted, in its split; every bad row listed with its line and reason
    rows = read_sidecar(out / "lesions.csv")
    assert {r.case: r.split for r in rows} == good
    assert {i.dl_row: i.reason for i in result.issues} == bad
    report = {i.dl_row: i.reason for i in read_report(out / "conversion_report.csv")}
    assert report == bad
    # nothing written outside --out but the documented split copy; the input folder is unchanged
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    new_outside = {k for k in after if k not in before and not k.startswith("nnUNet_raw")}
    assert new_outside == {"nnUNet_preprocessed", "nnUNet_preprocessed/Dataset512_Mixed",
                           "nnUNet_preprocessed/Dataset512_Mixed/splits_final.json"}
