"""Segment every marked lesion of one scan, or of every scan of a manifest, and write the outputs.

Outputs in ``OUT_DIR`` (issue 15 item 4):

* ``<name><ending>``: a label volume with exactly the input's size, spacing, origin and
  direction (``.nii.gz`` by default, or ``.mha``/``.nii``/``.nrrd``).  Lesion ``n`` (the
  ``n``-th kept mark, 1-based, in file order) has label ``n``; with ``binary`` every lesion
  is 1.  Where two lesions' masks overlap the first lesion keeps the voxel (each lesion is
  measured on its own mask before the label volume is made, so overlaps never change a
  measurement);
* ``measurements.csv`` and ``measurements.json``: one record per lesion, every scan of a
  run in one table (:mod:`.measurements`), with the ``scan`` name and the ``label`` value;
* with ``ending`` ``dicom-seg`` (DICOM series inputs only), ``<name>.dcm`` instead of the
  label volume: a DICOM Segmentation referencing the series, segment ``n`` = label ``n``
  (:mod:`.dicom_seg`).

A manifest is a CSV with one row per scan: ``ct`` (path), then either ``marks`` (a marks
file) or the inline mark columns of :mod:`.marks` (``recist``/``box``, ``slice``,
``space``, ``lesion_id``, ``lymph_node``; several rows with the same ``ct`` and ``name`` give
several lesions), and optionally ``name`` (the output name; default the CT's file name
without its ending) and ``series_uid``.  Relative paths are relative to the manifest's folder.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .lesion import segment_lesion
from .marks import MarkIssue, parse_marks, read_mark_rows
from .measurements import DEFAULT_QA_THRESHOLD, measure_lesion, write_measurements
from .dicom_seg import DICOM_SEG, SEG_ENDING, write_dicom_seg
from .volume_io import VOLUME_ENDINGS, label_path, read_volume, write_label_volume

_INLINE = ("recist", "box")


@dataclass
class ScanJob:
    """One scan to segment: CT path, its mark rows ``(where, row)``, output name, DICOM series."""

    ct: Path
    rows: list[tuple[str, dict]]
    name: str
    series_uid: str | None = None


@dataclass
class RunResult:
    records: list[dict] = field(default_factory=list)
    issues: list[MarkIssue] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)


def scan_name(ct: str | os.PathLike) -> str:
    """The output name of a CT: its file name without the volume ending (a DICOM folder's name)."""
    name = Path(ct).name
    for ending in VOLUME_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def read_manifest(path: str | os.PathLike) -> list[ScanJob]:
    """The :class:`ScanJob` list of a manifest CSV (module docstring), rows grouped by ``(ct, name)``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such manifest")
    jobs: dict[tuple[str, str], ScanJob] = {}
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "ct" not in [f.strip().lower() for f in reader.fieldnames]:
            raise ValueError(f"{p}: the manifest needs a header with a ct column")
        for line, raw in enumerate(reader, start=2):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not row.get("ct"):
                raise ValueError(f"{p} line {line}: empty ct")
            ct = (p.parent / row["ct"]).resolve()
            name = row.get("name") or scan_name(ct)
            job = jobs.setdefault((str(ct), name), ScanJob(ct, [], name, row.get("series_uid") or None))
            if row.get("marks"):
                job.rows.extend(read_mark_rows(p.parent / row["marks"]))
            elif any(row.get(c) for c in _INLINE):
                job.rows.append((f"{p} line {line}", row))
            else:
                raise ValueError(f"{p} line {line}: give a marks file (marks) or an inline recist/box")
    names = [j.name for j in jobs.values()]
    if len(set(names)) != len(names):
        raise ValueError(f"{p}: output names repeat for different CTs; give a name column")
    return list(jobs.values())


def segment_scans(model, jobs: Sequence[ScanJob], out_dir: str | os.PathLike, propagate: bool = False,
                  postprocess: str = "mark", binary: bool = False, ending: str = ".nii.gz",
                  qa_threshold: float = DEFAULT_QA_THRESHOLD, strict: bool = False, progress: bool = True,
                  max_slices: int | None = None) -> RunResult:
    """Segment every job's lesions with ``model`` (:class:`~.predict.SegmentModel`), write the outputs."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult()
    total = sum(len(j.rows) for j in jobs)
    with tqdm(total=total, unit="lesion", desc="segment", disable=not progress) as bar:
        for job in jobs:
            volume = read_volume(job.ct, job.series_uid)
            marks, issues = parse_marks(job.rows, volume, strict=strict)
            result.issues.extend(issues)
            bar.update(len(issues))
            labels = np.zeros(volume.hu.shape, dtype=np.uint16)
            segments: list[tuple[int, str]] = []
            for n, mark in enumerate(marks, start=1):
                lesion = segment_lesion(model, volume, mark, postprocess, propagate, max_slices)
                value = 1 if binary else n
                mask3d = None
                if propagate:
                    stack = lesion.stack(volume)
                    mask3d = np.zeros(volume.hu.shape, dtype=bool)
                    mask3d[stack.first_slice:stack.first_slice + stack.mask.shape[0]] = stack.mask
                    region = mask3d
                else:
                    region = np.zeros(volume.hu.shape, dtype=bool)
                    region[mark.k] = lesion.key_mask
                labels[region & (labels == 0)] = value
                if not binary:
                    segments.append((value, mark.lesion_id))
                record = measure_lesion(job.name, mark, value, lesion.key_mask, volume, mask3d, qa_threshold,
                                        model.settings.recist_convention, lesion.status)
                if lesion.stopped:
                    record["status"] = (record["status"] + " " if record["status"] else "") + \
                        "propagation stopped: " + ", ".join(f"{k} {v}" for k, v in lesion.stopped.items())
                result.records.append(record)
                bar.update(1)
            if ending == DICOM_SEG:
                result.label_files.append(write_dicom_seg(labels, volume, out / f"{job.name}{SEG_ENDING}",
                                                          segments or [(1, "lesion")]))
            else:
                result.label_files.append(write_label_volume(labels, volume, label_path(out, job.name, ending)))
    write_measurements(out, result.records)
    return result
