"""Per-series conversion work unit, run in worker processes (DESIGN "Crops", "Labels").

Lesions are grouped by series folder, then by key slice, so each PNG (key slice and
context neighbours shared by nearby key slices) is decoded once per work unit.  For
every lesion the worker crops/pads/scales each channel in one ``warpAffine``, makes the
pseudo mask directly in crop geometry from the RECIST mapped to crop coordinates (never a
resampled mask) with the job's maker (:mod:`nnunet_ulseg.pseudo_masks.registry`: the
ellipse of AHRNet Sec. 2.2 by default, GrabCut-R of WSSS Sec. 3.1 on the key-slice crop it
has just cut, in the row's DICOM window, ...), and writes the ``.mha`` files.
Workers return small :class:`LesionResult` records; all bookkeeping (sidecar, report,
splits, dataset.json) stays in the parent.

Every lesion is checked against its key PNG on its own: the PNG's size against that
row's ``Image_size``, its neighbours against that row's ``Slice_range`` and channel
offsets (issue 12 case 4: not the first row of the slice for all).  Any exception while
converting one lesion is caught and returned as an issue, so one bad lesion or file
never takes down a worker or the run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..pseudo_masks.registry import DEFAULT_PSEUDO, make_pseudo_mask
from .context import in_range, resolve_slice
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
    """One lesion to write: case id, DL_info line, crop box, RECIST in crop pixels, written spacing.

    ``image_size`` (``(width, height)``) and ``slice_range`` are the lesion's *own* row's
    claims: each row is checked against the PNG's header on its own (issue 12 case 4),
    not the first row of its slice.  ``offsets`` are the slice index offsets of its
    channels (:func:`~.context.slice_offsets`: ``--context`` / ``--context-mm``).
    ``window`` is the row's ``DICOM_windows`` (min, max HU) and ``pseudo`` the pseudo-mask
    maker's name (``--pseudo``).
    """

    case_id: str
    dl_row: int
    file_name: str
    test: bool
    box: CropBox
    recist_crop: tuple[float, ...]  # 8 numbers, crop pixels, long axis first
    spacing: tuple[float, float]
    image_size: tuple[int, int]
    slice_range: tuple[int, int] | None
    offsets: tuple[int, ...] = (0,)
    window: tuple[float, float] = (-175.0, 275.0)
    pseudo: str = DEFAULT_PSEUDO


@dataclass(frozen=True, slots=True)
class SliceJob:
    """The lesions of one key slice (its PNG is decoded once for all of them)."""

    key_slice: int
    lesions: tuple[LesionJob, ...]


@dataclass(frozen=True, slots=True)
class SeriesTask:
    """Work unit: all key slices (ascending) of one ``Images_png/<series>`` folder; ``context`` is K."""

    series_path: str
    out_dir: str
    context: int
    slices: tuple[SliceJob, ...]

    @property
    def n_lesions(self) -> int:
        return sum(len(s.lesions) for s in self.slices)

    @property
    def reach(self) -> int:
        """The largest distance, in slice indices, between a key slice and one of its channels."""
        return max((abs(o) for s in self.slices for j in s.lesions for o in j.offsets), default=0)

    def png_path(self, slice_index: int) -> str:
        return os.path.join(self.series_path, slice_png_name(slice_index))

    def png_paths(self) -> list[str]:
        """The PNGs this unit decodes when all exist and decode: key slices + resolved neighbours, once each.

        Neighbour availability here is range + regular-file existence (no decoding); used to
        measure the decode floor of a conversion.
        """
        paths: dict[str, None] = {}
        for s in self.slices:
            paths.setdefault(self.png_path(s.key_slice))
            for j in s.lesions:
                def available(i: int, j: LesionJob = j) -> bool:
                    return in_range(j.slice_range, i) and os.path.isfile(self.png_path(i))
                for o in j.offsets:
                    paths.setdefault(self.png_path(resolve_slice(s.key_slice, o, available)))
        return list(paths)


@dataclass(frozen=True, slots=True)
class LesionResult:
    """Outcome for one lesion: ``issue`` is None on success; ``note`` explains context fallbacks;
    ``pseudo_status`` is the pseudo-mask maker's status."""

    case_id: str
    dl_row: int
    context_slices: tuple[int, ...] = ()
    issue: Issue | None = None
    note: str = ""
    pseudo_status: str = "ok"


def output_paths(out_dir: str, case_id: str, n_channels: int, test: bool) -> tuple[list[str], str]:
    """``(image paths per channel, label path)`` of a case in the nnU-Net raw layout."""
    img_dir, lab_dir = TEST_DIRS if test else TRAIN_DIRS
    images = [os.path.join(out_dir, img_dir, image_filename(case_id, ".mha", c)) for c in range(n_channels)]
    return images, os.path.join(out_dir, lab_dir, f"{case_id}.mha")


def _slice_loader(task: SeriesTask):
    """Decode-once cache of the unit's slices; failures are cached too (as the LesionError)."""
    cache: dict[int, np.ndarray | LesionError] = {}

    def load(index: int) -> np.ndarray:
        got = cache.get(index)
        if got is None:
            try:
                got = read_png(task.png_path(index))
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


def _check_size(key: np.ndarray, job: LesionJob, path: str) -> None:
    """``png_size_mismatch`` unless the lesion's own ``Image_size`` is the key PNG's size."""
    height, width = key.shape
    if (width, height) != tuple(job.image_size):
        raise LesionError("png_size_mismatch", f"PNG is {width}x{height} (WxH), Image_size on this row says "
                                               f"{job.image_size[0]}x{job.image_size[1]}", path)


def _channels(key_slice: int, key: np.ndarray, job: LesionJob, load) -> tuple[list[np.ndarray], tuple[int, ...], str]:
    """Decoded slices per channel (key first), the slice indices used, and a fallback note.

    A neighbour is available when it lies in the row's ``Slice_range``, decodes (regular
    file, valid PNG) and has the key slice's size.
    """
    if job.offsets == (0,):
        return [key], (key_slice,), ""

    def available(i: int) -> bool:
        if not in_range(job.slice_range, i):
            return False
        try:
            return load(i).shape == key.shape
        except LesionError:
            return False

    used, images, missing = [], [], []
    for o in job.offsets:
        i = resolve_slice(key_slice, o, available)
        if i != key_slice + o:
            missing.append(f"{key_slice + o}->{i}")
        used.append(i)
        images.append(key if i == key_slice else load(i))
    note = f"context slices unavailable, replaced toward the key: {', '.join(missing)}" if missing else ""
    return images, tuple(used), note


def convert_series(task: SeriesTask) -> list[LesionResult]:
    """Convert every lesion of one series; never raises for per-lesion problems."""
    load, evict_below = _slice_loader(task)
    results: list[LesionResult] = []
    reach = task.reach
    for n, sj in enumerate(task.slices):
        key_path = task.png_path(sj.key_slice)
        try:
            key = load(sj.key_slice)
        except LesionError as e:
            results.extend(LesionResult(j.case_id, j.dl_row, issue=Issue.from_error(j.dl_row, j.file_name, e))
                           for j in sj.lesions)
            continue
        except Exception as e:  # noqa: BLE001 - reported per lesion, never fatal
            results.extend(LesionResult(j.case_id, j.dl_row, issue=Issue(
                j.dl_row, j.file_name, key_path, "internal_error", f"{type(e).__name__}: {e}")) for j in sj.lesions)
            continue
        for job in sj.lesions:
            try:
                _check_size(key, job, key_path)
                images, used, note = _channels(sj.key_slice, key, job, load)
            except LesionError as e:
                results.append(LesionResult(job.case_id, job.dl_row,
                                            issue=Issue.from_error(job.dl_row, job.file_name, e)))
                continue
            except Exception as e:  # noqa: BLE001 - reported per lesion, never fatal
                results.append(LesionResult(job.case_id, job.dl_row, issue=Issue(
                    job.dl_row, job.file_name, key_path, "internal_error", f"{type(e).__name__}: {e}")))
                continue
            image_paths, label_path = output_paths(task.out_dir, job.case_id, len(images), job.test)
            created: list[str] = []  # files are created new (never replaced, no link followed: .output)
            try:
                key_crop = None
                for img, path in zip(images, image_paths):
                    created.append(create_new_file(path))
                    crop = crop_png_to_hu(img, job.box)
                    key_crop = crop if key_crop is None else key_crop  # channel 0 is the key slice
                    write_mha(path, crop, job.spacing)
                label, status = make_pseudo_mask(job.pseudo, job.recist_crop, key_crop, (job.box.size, job.box.size),
                                                 job.window)
                created.append(create_new_file(label_path))
                write_mha(label_path, label, job.spacing)
                results.append(LesionResult(job.case_id, job.dl_row, used, note=note, pseudo_status=status))
            except Exception as e:  # noqa: BLE001 - reported per lesion, never fatal
                for path in created:  # no half-written case may stay behind; only its own files are removed
                    if os.path.exists(path):
                        os.remove(path)
                results.append(LesionResult(job.case_id, job.dl_row, issue=Issue(
                    job.dl_row, job.file_name, key_path, "internal_error", f"{type(e).__name__}: {e}")))
        if n + 1 < len(task.slices):
            evict_below(task.slices[n + 1].key_slice - reach)
    return results
