"""Per-series conversion work unit, run in worker processes (DESIGN "Crops", "Labels").

Lesions are grouped by series folder, then by key slice, so each PNG (key slice and
context neighbours shared by nearby key slices) is decoded once per work unit.  For
every lesion the worker crops/pads/scales each channel in one ``warpAffine``, rasterises
the ellipse pseudo mask directly in crop geometry from the RECIST mapped to crop
coordinates (AHRNet Sec. 2.2; never a resampled mask), and writes the ``.mha`` files.
Workers return small :class:`LesionResult` records; all bookkeeping (sidecar, report,
splits, dataset.json) stays in the parent.

Any exception while converting one lesion is caught and returned as an issue, so one
bad lesion or file never takes down a worker or the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..recist import Recist, ellipse_mask
from .context import channel_offsets, in_range, resolve_slice
from .dl_info import slice_png_name
from .geometry import CropBox, crop_png_to_hu
from .io import read_png, write_mha
from .output import create_new_file
from .report import Issue, LesionError
from nnunet_ulseg.nnunet_layout import image_filename

TRAIN_DIRS = ("imagesTr", "labelsTr")
TEST_DIRS = ("imagesTs", "pseudolabelsTs")


@dataclass(frozen=True, slots=True)
class LesionJob:
    """One lesion to write: case id, DL_info line, crop box, RECIST in crop pixels, written spacing."""

    case_id: str
    dl_row: int
    file_name: str
    test: bool
    box: CropBox
    recist_crop: tuple[float, ...]  # 8 numbers, crop pixels, long axis first
    spacing: tuple[float, float]


@dataclass(frozen=True, slots=True)
class SliceJob:
    """The lesions of one key slice; ``image_size`` is ``(width, height)`` from DL_info."""

    key_slice: int
    image_size: tuple[int, int]
    slice_range: tuple[int, int] | None
    lesions: tuple[LesionJob, ...]


@dataclass(frozen=True, slots=True)
class SeriesTask:
    """Work unit: all key slices (ascending) of one ``Images_png/<series>`` folder."""

    series_path: str
    out_dir: str
    context: int
    slices: tuple[SliceJob, ...]

    @property
    def n_lesions(self) -> int:
        return sum(len(s.lesions) for s in self.slices)

    def png_path(self, slice_index: int) -> str:
        return os.path.join(self.series_path, slice_png_name(slice_index))

    def png_paths(self) -> list[str]:
        """The PNGs this unit decodes when all exist and decode: key slices + resolved neighbours, once each.

        Neighbour availability here is range + existence (no decoding); used to measure
        the decode floor of a conversion.
        """
        paths: dict[str, None] = {}
        for s in self.slices:
            def available(i: int, s: SliceJob = s) -> bool:
                return in_range(s.slice_range, i) and os.path.isfile(self.png_path(i))
            for o in channel_offsets(self.context):
                paths.setdefault(self.png_path(resolve_slice(s.key_slice, o, available)))
        return list(paths)


@dataclass(frozen=True, slots=True)
class LesionResult:
    """Outcome for one lesion: ``issue`` is None on success; ``note`` explains context fallbacks."""

    case_id: str
    dl_row: int
    context_slices: tuple[int, ...] = ()
    issue: Issue | None = None
    note: str = ""


def output_paths(out_dir: str, case_id: str, n_channels: int, test: bool) -> tuple[list[str], str]:
    """``(image paths per channel, label path)`` of a case in the nnU-Net raw layout."""
    img_dir, lab_dir = TEST_DIRS if test else TRAIN_DIRS
    images = [os.path.join(out_dir, img_dir, image_filename(case_id, ".mha", c)) for c in range(n_channels)]
    return images, os.path.join(out_dir, lab_dir, f"{case_id}.mha")


def _slice_loader(task: SeriesTask):
    """Decode-once cache of the unit's slices; failures are cached too (as the LesionError)."""
    cache: dict[int, np.ndarray | LesionError] = {}

    def load(index: int, size: tuple[int, int]) -> np.ndarray:
        got = cache.get(index)
        if got is None:
            try:
                got = read_png(task.png_path(index), size)
            except LesionError as e:
                got = e
            cache[index] = got
        if isinstance(got, LesionError):
            raise got
        return got

    def evict_below(index: int) -> None:
        for i in [i for i in cache if i < index]:
            del cache[i]

    return load, evict_below


def _channels(task: SeriesTask, sj: SliceJob, load) -> tuple[list[np.ndarray], tuple[int, ...], str]:
    """Decoded slices per channel (key first), the slice indices used, and a fallback note."""
    key = load(sj.key_slice, sj.image_size)
    if task.context == 0:
        return [key], (sj.key_slice,), ""

    def available(i: int) -> bool:
        if not in_range(sj.slice_range, i):
            return False
        try:
            load(i, sj.image_size)
            return True
        except LesionError:
            return False

    used, images, missing = [], [], []
    for o in channel_offsets(task.context):
        i = resolve_slice(sj.key_slice, o, available)
        if i != sj.key_slice + o:
            missing.append(f"{sj.key_slice + o}->{i}")
        used.append(i)
        images.append(load(i, sj.image_size))
    note = f"context slices unavailable, replaced toward the key: {', '.join(missing)}" if missing else ""
    return images, tuple(used), note


def convert_series(task: SeriesTask) -> list[LesionResult]:
    """Convert every lesion of one series; never raises for per-lesion problems."""
    load, evict_below = _slice_loader(task)
    results: list[LesionResult] = []
    for n, sj in enumerate(task.slices):
        key_path = task.png_path(sj.key_slice)
        try:
            images, used, note = _channels(task, sj, load)
        except LesionError as e:
            results.extend(LesionResult(j.case_id, j.dl_row, issue=Issue.from_error(j.dl_row, j.file_name, e))
                           for j in sj.lesions)
            continue
        except Exception as e:  # noqa: BLE001 - reported per lesion, never fatal
            results.extend(LesionResult(j.case_id, j.dl_row, issue=Issue(
                j.dl_row, j.file_name, key_path, "internal_error", f"{type(e).__name__}: {e}")) for j in sj.lesions)
            continue
        for job in sj.lesions:
            image_paths, label_path = output_paths(task.out_dir, job.case_id, len(images), job.test)
            created: list[str] = []  # files are created new (never replaced, no link followed: .output)
            try:
                for img, path in zip(images, image_paths):
                    created.append(create_new_file(path))
                    write_mha(path, crop_png_to_hu(img, job.box), job.spacing)
                label = ellipse_mask(Recist.from_points(job.recist_crop), (job.box.size, job.box.size))
                created.append(create_new_file(label_path))
                write_mha(label_path, label.view(np.uint8), job.spacing)
                results.append(LesionResult(job.case_id, job.dl_row, used, note=note))
            except Exception as e:  # noqa: BLE001 - reported per lesion, never fatal
                for path in created:  # no half-written case may stay behind; only its own files are removed
                    if os.path.exists(path):
                        os.remove(path)
                results.append(LesionResult(job.case_id, job.dl_row, issue=Issue(
                    job.dl_row, job.file_name, key_path, "internal_error", f"{type(e).__name__}: {e}")))
        if n + 1 < len(task.slices):
            evict_below(task.slices[n + 1].key_slice - task.context)
    return results
