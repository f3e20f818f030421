"""Off-key slice crops: slice ``key + k`` of a lesion cut exactly as the converter cuts its key slice (WSSS Sec. 3.3).

Algorithm 1 (line 8) applies the CNN to ``V_{r+τ}``, the slices around the RECIST slice
``r``.  For an nnU-Net 2D model that slice must look like a training case: the same crop
box (so the key mark, the estimate ``R̂`` and the prediction share one pixel grid and the
prediction pastes back with the key case's ``lesions.csv`` row), the same channel layout
and the same HU handling.  There is one crop rule in the code base, the converter's, and
this module only feeds it: for offset ``k`` each DL_info record is shifted to key slice
``key + k`` and handed to :func:`nnunet_ulseg.conversion.deeplesion.build_tasks` (crop box
from the unchanged RECIST points, written spacing, channel offsets of ``--context`` /
``--context-mm`` from ``dataset.json``) and :func:`nnunet_ulseg.conversion.worker.convert_series`
(PNG checks, context channels centred on the new slice and replaced toward it when
unavailable, one ``warpAffine`` per channel, ``.mha`` writing).  Offset 0 therefore gives
the converter's own files bit for bit (tested).

Choices where the paper is silent:

* A slice outside the row's ``Slice_range`` or without a PNG is skipped (DeepLesion gives
  about 30 mm around each key slice and no more); so is one the converter rejects (a
  corrupt PNG, a size that differs from ``Image_size``).  Every skip is counted by reason.
* The converter also writes its pseudo mask for every case; for an off-key slice that
  would be the key slice's ellipse, which is not a label of that slice, so the job uses the
  cheap ``ellipse`` maker and the file is deleted: labels of off-key slices come only from
  the CNN trimap + GrabCut rule (:mod:`.labels`).
* ``offset_mm`` in ``slices.csv`` is signed (``slices.py``: ``offset * spacing_z``).
* Every crop box is checked against the key case's ``lesions.csv`` row; a difference means
  the dataset was converted with other options than its ``dataset.json`` records.
"""
from __future__ import annotations

import dataclasses
import math
import json
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from nnunet_ulseg.conversion.context import in_range
from nnunet_ulseg.conversion.dl_info import LesionRecord, read_dl_info, slice_png_name
from nnunet_ulseg.conversion.geometry import LESION_SIZE_RANGE
from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.conversion.slices import SliceRow, slice_case_name, write_slices
from nnunet_ulseg.pseudo_masks.recist3d import slice_distance_mm

#: the pseudo-mask maker the converter runs on an off-key crop (its output is deleted)
PLACEHOLDER_PSEUDO = "ellipse"
TRAIN_IMAGES, TEST_IMAGES = "imagesTr", "imagesTs"
_LABEL_DIRS = ("labelsTr", "pseudolabelsTs")


@dataclass(frozen=True)
class CropOptions:
    """The crop options a conversion recorded in its ``dataset.json``."""

    source_dir: Path
    context: int = 0
    context_mm: float | None = None
    scale_policy: str = "lesion"
    min_crop: float = 32
    size_range: tuple[int, int] = LESION_SIZE_RANGE
    exclude_noisy: bool = False

    @classmethod
    def from_dataset(cls, raw_dir: str | os.PathLike) -> "CropOptions":
        path = Path(raw_dir) / "dataset.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        if not data.get("source_dir"):
            raise ValueError(f"{path} has no source_dir: ulseg propagate needs the DeepLesion folder the dataset "
                             "was converted from (convert-deeplesion records it) to cut the off-key slices")
        size = data.get("crop_size_range")
        return cls(Path(data["source_dir"]), int(data.get("context", 0) or 0), data.get("context_mm"),
                   data.get("scale_policy", "lesion"), float(data.get("min_crop", 32)),
                   tuple(size) if size else LESION_SIZE_RANGE, bool(data.get("exclude_noisy", False)))


@dataclass
class CutResult:
    """What :func:`cut_slices` wrote: one ``SliceRow`` per crop, skipped slices per reason and per offset."""

    rows: list[SliceRow] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    skipped_per_offset: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        per_offset = Counter(r.offset for r in self.rows)
        return {"slices": len(self.rows), "per_offset": {str(k): per_offset[k] for k in sorted(per_offset)},
                "skipped": dict(sorted(self.skipped.items())),
                "skipped_per_offset": {str(k): self.skipped_per_offset[k] for k in sorted(self.skipped_per_offset)}}


def source_records(options: CropOptions, rows: Iterable[LesionRow]) -> dict[str, LesionRecord]:
    """Key case -> its DL_info record (matched by ``dl_row``, checked by case id)."""
    info = read_dl_info(options.source_dir / "DL_info.csv", exclude_noisy=options.exclude_noisy)
    by_row = {r.dl_row: r for r in info.records}
    out = {}
    for row in rows:
        record = by_row.get(row.dl_row)
        if record is None or record.case_id != row.case:
            raise ValueError(f"lesions.csv case {row.case}: DL_info.csv line {row.dl_row} in {options.source_dir} "
                             "is not this lesion (was the dataset converted from another DL_info.csv?)")
        out[row.case] = record
    return out


def _skip_reason(record: LesionRecord, images_dir: Path, index: int) -> str | None:
    """Why slice ``index`` of ``record``'s series cannot be cut, or None."""
    if not in_range(record.slice_range, index):
        return "outside_slice_range"
    if not (images_dir / record.series_dir / slice_png_name(index)).is_file():
        return "missing_png"
    return None


def cut_slices(rows: Sequence[LesionRow], offsets_of: dict[str, Sequence[int]], options: CropOptions,
               out_dir: str | os.PathLike, num_processes: int = 1, progress: bool = False) -> CutResult:
    """Cut slice ``key + k`` of every ``rows`` lesion for each ``k`` in ``offsets_of[case]`` into ``out_dir``.

    Training lesions go to ``out_dir/imagesTr``, test lesions to ``out_dir/imagesTs``, named
    ``<slice case>_<channel:04d>.mha`` (:func:`~nnunet_ulseg.conversion.slices.slice_case_name`).
    ``out_dir`` must not exist; it is written as ``<out_dir>.partial`` and renamed at the end.
    Returns the rows (``label_status`` ``none``) and the skips.
    """
    from tqdm import tqdm

    from nnunet_ulseg.conversion.deeplesion import build_tasks, task_results
    from nnunet_ulseg.conversion.worker import SeriesTask, SliceJob, convert_series

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    for sub in (TRAIN_IMAGES, TEST_IMAGES, *_LABEL_DIRS):
        (partial / sub).mkdir(parents=True)
    rows = list(rows)
    records = source_records(options, rows)
    by_case = {r.case: r for r in rows}
    images_dir = options.source_dir / "Images_png"
    assigned = {r.patient: 3 if r.split == "test" else 1 for r in rows}
    result = CutResult()
    planned: dict[str, SliceRow] = {}
    series_jobs: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    all_offsets = sorted({k for case in offsets_of for k in offsets_of[case]})
    for k in all_offsets:
        shifted, owner = [], {}
        for case, offsets in offsets_of.items():
            if k not in offsets:
                continue
            record, row = records[case], by_case[case]
            reason = _skip_reason(record, images_dir, record.key_slice + k)
            if reason is not None:
                result.skipped[reason] += 1
                result.skipped_per_offset[k] += 1
                continue
            moved = dataclasses.replace(record, key_slice=record.key_slice + k)
            shifted.append(moved)
            owner[moved.case_id] = case
        if not shifted:
            continue
        tasks, planned_rows = build_tasks(shifted, assigned, images_dir, partial, options.context,
                                          options.scale_policy, options.min_crop, options.size_range,
                                          options.context_mm, PLACEHOLDER_PSEUDO)
        for task in tasks:
            for sj in task.slices:
                for job in sj.lesions:
                    case = owner[job.case_id]
                    row, got = by_case[case], planned_rows[job.case_id]
                    if (got.crop_x0, got.crop_y0, got.crop_side, got.crop_size) != \
                            (row.crop_x0, row.crop_y0, row.crop_side, row.crop_size):
                        raise ValueError(f"{case}: the crop box from dataset.json's options differs from lesions.csv's "
                                         f"({got.box} vs {row.box}); was the dataset converted with other options?")
                    name = slice_case_name(case, k)
                    planned[name] = SliceRow(name, case, k, math.copysign(slice_distance_mm(k, row.spacing_z), k),
                                             row.key_slice + k, row.split, "none")
                    series_jobs[task.series_path][sj.key_slice].append(dataclasses.replace(job, case_id=name))
    tasks = [SeriesTask(series, str(partial), options.context,
                        tuple(SliceJob(s, tuple(jobs)) for s, jobs in sorted(series_jobs[series].items())))
             for series in sorted(series_jobs)]
    with task_results(convert_series, tasks, num_processes) as results, \
            tqdm(total=len(planned), unit="slice", desc="cut off-key slices", disable=not progress) as bar:
        for batch in results:
            for res in batch:
                row = planned[res.case_id]
                if res.issue is not None:
                    result.skipped[res.issue.reason] += 1
                    result.skipped_per_offset[row.offset] += 1
                else:
                    result.rows.append(row)
            bar.update(len(batch))
    for sub in _LABEL_DIRS:  # the converter's placeholder masks: not labels of these slices
        shutil.rmtree(partial / sub)
    result.rows.sort(key=lambda r: (r.key_case, r.offset))
    write_slices(partial / "slices.csv", result.rows)
    os.replace(partial, out_dir)
    return result
