"""DeepLesion -> nnU-Net raw dataset conversion (DESIGN data flow, "Crops", "Labels").

:func:`convert_deeplesion` reads ``DL_info.csv`` + ``Images_png`` (never writing to
them) and writes an nnU-Net raw dataset folder::

    imagesTr/<case>_0000.mha (+ _0001.. context channels)   train + val lesions
    labelsTr/<case>.mha                                      pseudo masks (0/1, uint8; ``pseudo``, default ellipse)
    imagesTs/<case>_0000.mha                                 test lesions
    pseudolabelsTs/<case>.mha                                their ellipses (not ground truth)
    dataset.json  splits_final.json  lesions.csv  conversion_report.csv

One case per lesion on its key slice: ``DL_<patient:06d>_<study:02d>_<series:02d>_<slice:03d>_<k>``.
Work is grouped by series so every PNG is decoded once, and spread over
``num_processes`` workers with ``imap_unordered``.

Choices where the spec is silent:

* ``dataset.json`` is written last: its presence marks a complete conversion.  The output
  folder's rules are :mod:`.output`'s (issue 12): an output folder holding ``dataset.json``,
  non-empty case folders (an interrupted run) or any file this converter writes is refused
  unless ``overwrite``; a symbolic link in place of one of its folders or files is always
  refused; every file is created new (never replaced, never written through a link);
  ``overwrite`` deletes only the files a run of this converter recorded in
  ``conversion_manifest.json``, and refuses a dataset another tool made.
* ``pseudo`` names the pseudo-mask maker (:mod:`nnunet_ulseg.pseudo_masks.registry`:
  ``ellipse``, ``grabcut`` = GrabCut-R of WSSS Sec. 3.1, or a Table 1 baseline); it is
  written to ``dataset.json`` (``pseudo``), each case's status to ``lesions.csv``
  (``pseudo_status``), and the GrabCut-R fallbacks to the ellipse are counted in the summary.
* Extra ``dataset.json`` keys: ``source``, ``pseudo``, ``scale_policy``, ``context``,
  ``context_mm``, ``exclude_noisy``, ``channel_slices``, ``min_crop``, ``crop_size_range``, ``nominal_spacing``,
  ``numTest``, ``pseudolabels_test``.
* In strict mode all rows are validated before anything is written; a PNG problem found
  later raises after the earlier cases are already written (the folder is then
  incomplete, without ``dataset.json``).
* An output folder inside the DeepLesion folder is refused (the input is never written).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from nnunet_ulseg.labels import LABELS
from nnunet_ulseg.nnunet_layout import DATASET_JSON, SPLITS_FILE

from .context import channel_names, check_context_mm, slice_offsets
from .dl_info import SPLIT_NAMES, LesionRecord, read_dl_info
from .crop import NOMINAL_SPACING, CropSettings, lesion_box, written_spacing
from .geometry import LESION_SIZE_RANGE, SCALE_POLICIES, CropBox, crop_size_range, slice_to_crop
from ..pseudo_masks.registry import DEFAULT_PSEUDO, check_pseudo
from .output import OutputFolder, check_inputs_outside
from .report import ConversionCounts, Issue, IssueLog, format_summary, write_report
from .sidecar import LesionRow, write_sidecar
from .splits import SplitMove, make_splits, preprocessed_root_from_env, resolve_patient_splits, write_splits
from .worker import TEST_DIRS, TRAIN_DIRS, LesionJob, SeriesTask, SliceJob, convert_series, output_paths

logger = logging.getLogger("nnunet_ulseg.conversion")

OUTPUT_DIRS = (*TRAIN_DIRS, *TEST_DIRS)
OUTPUT_FILES = (DATASET_JSON, SPLITS_FILE, "lesions.csv", "conversion_report.csv")
#: ``converted_by`` in dataset.json and the output manifest (:mod:`.output`).
CONVERTED_BY = "nnunet_ulseg convert-deeplesion"
T = TypeVar("T")
R = TypeVar("R")


def default_num_processes() -> int:
    """``min(usable CPU count, 8)``."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@dataclass
class ConversionResult(ConversionCounts):
    """What :func:`convert_deeplesion` did: converted rows (sidecar), skipped lesions, split moves."""

    out_dir: Path
    rows: list[LesionRow]
    issues: list[Issue]
    split_moves: list[SplitMove] = field(default_factory=list)
    n_input_rows: int = 0
    context_fallbacks: int = 0
    seconds: float = 0.0
    pseudo: str = DEFAULT_PSEUDO

    def summary(self) -> str:
        notes = {"patients moved to a higher split": len(self.split_moves),
                 "lesions with replaced context slices": self.context_fallbacks}
        notes.update(self.pseudo_notes())
        return (f"DeepLesion -> {self.out_dir} ({self.n_input_rows} DL_info rows, {self.seconds:.1f} s)\n"
                + format_summary(self.converted, self.skipped, notes))


def _init_spawned_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; cv2's own threads would oversubscribe


@contextlib.contextmanager
def _cv2_single_threaded() -> Iterator[None]:
    """Set cv2 to one thread in this process for the block, then restore the caller's setting.

    Forked workers inherit the setting.  It must be made in the parent: a forked child
    calling ``cv2.setNumThreads`` after the parent has used cv2's thread pool hangs.
    """
    import cv2

    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(old)


@contextlib.contextmanager
def task_results(fn: Callable[[T], R], tasks: Sequence[T], num_processes: int,
                 chunksize: int | None = None) -> Iterator[Iterator[R]]:
    """Context manager yielding the results of ``fn`` over ``tasks`` in completion order.

    ``Pool.imap_unordered`` over ``num_processes`` single-threaded workers (in-process
    when ``num_processes <= 1``).  Used for the conversion and, by the benchmark, for the
    decode floor, so both use the same mechanism.  Leaving the block stops the pool.

    Choice: the ``fork`` start method where the platform has it (workers start in
    milliseconds, which matters for small datasets and tests), ``spawn`` elsewhere.  The
    pool is created before any progress-bar thread exists.
    """
    if num_processes <= 1 or len(tasks) <= 1:
        yield map(fn, tasks)
        return
    n = min(num_processes, len(tasks))
    if chunksize is None:
        chunksize = min(16, max(1, len(tasks) // (n * 8)))
    if "fork" in multiprocessing.get_all_start_methods():
        with _cv2_single_threaded():
            pool = multiprocessing.get_context("fork").Pool(n)
    else:
        pool = multiprocessing.get_context("spawn").Pool(n, initializer=_init_spawned_worker)
    with pool:
        yield pool.imap_unordered(fn, tasks, chunksize)


def _check_paths(dl_dir: Path, out_dir: Path, overwrite: bool) -> OutputFolder:
    """Check the DeepLesion folder and the output folder (:mod:`.output`'s rules); nothing is written."""
    if not (dl_dir / "DL_info.csv").is_file():
        raise FileNotFoundError(f"{dl_dir} has no DL_info.csv (expected a DeepLesion folder)")
    if not (dl_dir / "Images_png").is_dir():
        raise FileNotFoundError(f"{dl_dir} has no Images_png folder (expected a DeepLesion folder)")
    check_inputs_outside(out_dir, {"DeepLesion": dl_dir}, OUTPUT_DIRS)
    folder = OutputFolder(out_dir, CONVERTED_BY, OUTPUT_DIRS, OUTPUT_FILES)
    folder.check(overwrite)
    return folder


def _case_files(out_dir: Path, cases: Iterable[tuple[str, bool]], context: int) -> Iterator[str]:
    """Every file the cases ``(case_id, test)`` have in the output folder (images per channel, label)."""
    n_channels = len(channel_names(context))
    for case, test in cases:
        images, label = output_paths(str(out_dir), case, n_channels, test)
        yield from images
        yield label


def build_tasks(records: Iterable[LesionRecord], assigned: dict[int, int], images_dir: Path, out_dir: Path,
                context: int = 0, scale_policy: str = "lesion", min_crop: float = 32,
                size_range: tuple[int, int] = LESION_SIZE_RANGE, context_mm: float | None = None,
                pseudo: str = DEFAULT_PSEUDO) -> tuple[list[SeriesTask], dict[str, LesionRow]]:
    """Per-series work units for ``records`` and, per case, its ``lesions.csv`` row.

    Each job carries its own row's ``Image_size``, ``Slice_range`` and channel offsets
    (:func:`~.context.slice_offsets`, from ``context``, ``context_mm`` and the row's slice
    interval), so the worker checks every row on its own (issue 12 case 4).

    ``assigned`` maps patient -> split (after :func:`~.splits.resolve_patient_splits`).
    Crop boxes and crop-space RECIST points are computed here, once, because the sidecar
    needs them too; workers only decode, resample, rasterise and write.  The rows'
    ``context_slices`` are filled in from the workers' results.
    """
    by_series: dict[str, dict[int, list[tuple[LesionRecord, LesionJob]]]] = defaultdict(lambda: defaultdict(list))
    rows: dict[str, LesionRow] = {}
    settings = CropSettings(scale_policy, min_crop, size_range)  # the crop rule ulseg segment reuses (.crop)
    for r in records:
        case = r.case_id
        box = lesion_box(r.points, settings)
        crop_points = tuple(slice_to_crop(np.asarray(r.points).reshape(4, 2), box).ravel().tolist())
        split = assigned[r.patient]
        spacing = written_spacing(settings, r.spacing[:2])
        job = LesionJob(case, r.dl_row, r.file_name, split == 3, box, crop_points, spacing, r.image_size,
                        r.slice_range, slice_offsets(context, context_mm, r.spacing[2] if context_mm else None),
                        tuple(float(v) for v in r.window), pseudo)
        rows[case] = _sidecar_row(case, r, SPLIT_NAMES[split], box, crop_points)
        by_series[r.series_dir][r.key_slice].append((r, job))
    tasks = []
    for series in sorted(by_series):
        slices = []
        for key in sorted(by_series[series]):
            slices.append(SliceJob(key, tuple(job for _, job in by_series[series][key])))
        tasks.append(SeriesTask(os.path.join(images_dir, series), str(out_dir), context, tuple(slices)))
    return tasks, rows


def _axis_mm(p: Sequence[float], sx: float, sy: float) -> float:
    return math.hypot((p[2] - p[0]) * sx, (p[3] - p[1]) * sy)


def _sidecar_row(case: str, record: LesionRecord, split: str, box: CropBox,
                 crop_points: tuple[float, ...]) -> LesionRow:
    sx, sy, sz = record.spacing
    return LesionRow(
        case=case, split=split, dl_row=record.dl_row, File_name=record.file_name,
        patient=record.patient, study=record.study, series=record.series, key_slice=record.key_slice,
        crop_x0=box.x0, crop_y0=box.y0, crop_side=box.side, crop_size=box.size, scale=box.scale,
        spacing_x=sx, spacing_y=sy, spacing_z=sz, recist_slice=record.points, recist_crop=crop_points,
        long_mm=_axis_mm(record.points[:4], sx, sy), short_mm=_axis_mm(record.points[4:], sx, sy),
        lesion_type=record.lesion_type, possibly_noisy=record.possibly_noisy,
        window_min=record.window[0], window_max=record.window[1],
        image_width=record.image_size[0], image_height=record.image_size[1], context_slices=(),
    )


def _write_dataset_json(out_dir: Path, dataset_name: str, dl_dir: Path, n_training: int, n_test: int,
                        context: int, scale_policy: str, min_crop: float, size_range: tuple[int, int],
                        context_mm: float | None = None, exclude_noisy: bool = False,
                        pseudo: str = DEFAULT_PSEUDO) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    names = channel_names(context, context_mm)
    generate_dataset_json(
        str(out_dir),
        channel_names={str(c): "CT" for c in range(len(names))},
        labels=dict(LABELS),
        num_training_cases=n_training,
        file_ending=".mha",
        dataset_name=dataset_name,
        description=f"DeepLesion key-slice lesion crops with RECIST {pseudo} pseudo masks (nnunet_ulseg)",
        reference="https://nihcc.app.box.com/v/DeepLesion",
        license="DeepLesion terms of use (NIH Clinical Center)",
        converted_by=CONVERTED_BY,
        source="DeepLesion",
        pseudo=pseudo,
        recist_convention="edge",  # radiologists' caliper endpoints (sidecar.recist_convention)
        source_dir=str(dl_dir),
        scale_policy=scale_policy,
        context=context,
        context_mm=context_mm,
        exclude_noisy=exclude_noisy,
        channel_slices=names,
        min_crop=min_crop,
        crop_size_range=list(size_range) if scale_policy == "lesion" else None,
        nominal_spacing=scale_policy == "lesion",
        numTest=n_test,
        pseudolabels_test="pseudolabelsTs",
    )


def convert_deeplesion(deeplesion_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       num_processes: int | None = None, context: int = 0, strict: bool = False,
                       scale_policy: str = "lesion", min_crop: float = 32, overwrite: bool = False,
                       progress: bool = True, crop_size: int | Sequence[int] | None = None,
                       context_mm: float | None = None, exclude_noisy: bool = False,
                       pseudo: str = DEFAULT_PSEUDO) -> ConversionResult:
    """Convert a DeepLesion folder into the nnU-Net raw dataset folder ``out_dir``.

    ``context`` K adds slices key-K..key+K as extra channels (key slice stays channel 0,
    see :mod:`.context`); ``context_mm`` MM (with K >= 1) spaces them by distance instead:
    channel ``key+o`` is the slice nearest ``o * MM`` mm away by the row's slice interval
    (:func:`~.context.slice_offsets`).  ``exclude_noisy`` skips rows DeepLesion flags
    ``Possibly_noisy = 1`` (reason ``possibly_noisy``, reported and counted, never an
    error in strict mode).  ``scale_policy``/``min_crop`` define the crops (see
    :func:`~.geometry.crop_box`).  ``crop_size`` (policy ``lesion`` only) replaces the
    output side range 128..256 px: one int N gives every crop N x N px, a pair ``(lo, hi)``
    clamps the side to that range (see :func:`~.geometry.crop_size_range`); it is recorded as
    ``crop_size_range`` in ``dataset.json`` and per case as ``crop_size`` in ``lesions.csv``.
    ``pseudo`` names the pseudo-mask maker (module docstring).
    Bad rows/files are skipped and reported
    (``conversion_report.csv``, log, summary); ``strict`` raises
    :class:`~.report.ConversionError` on the first one instead.  ``progress`` shows a
    tqdm bar and prints the summary.  Raises ``FileExistsError`` when ``out_dir`` already
    holds a conversion and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    if scale_policy not in SCALE_POLICIES:
        raise ValueError(f"scale_policy must be one of {SCALE_POLICIES}, got {scale_policy!r}")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    check_context_mm(context, context_mm)
    check_pseudo(pseudo)
    if not min_crop > 0:
        raise ValueError(f"min_crop must be positive, got {min_crop}")
    size_range = crop_size_range(crop_size, scale_policy)
    num_processes = default_num_processes() if num_processes is None else int(num_processes)
    dl_dir = Path(deeplesion_dir).resolve()
    out = Path(out_dir).resolve()
    folder = _check_paths(dl_dir, out, overwrite)

    info = read_dl_info(dl_dir / "DL_info.csv", strict=strict, exclude_noisy=exclude_noisy)
    assigned, moves = resolve_patient_splits(info.patient_splits)
    tasks, planned = build_tasks(info.records, assigned, dl_dir / "Images_png", out, context, scale_policy, min_crop,
                                  size_range, context_mm, pseudo)

    if overwrite:
        folder.clear()
    # recorded before the first case file, so an interrupted run can be replaced with --overwrite
    folder.start(_case_files(out, ((job.case_id, job.test) for t in tasks for sj in t.slices for job in sj.lesions),
                             context))

    log = IssueLog(strict)
    log.issues.extend(info.issues)
    rows: list[LesionRow] = []
    fallbacks = 0
    from tqdm import tqdm

    with task_results(convert_series, tasks, num_processes) as results, \
            tqdm(total=len(planned), unit="lesion", desc="convert DeepLesion", disable=not progress) as bar:
        for batch in results:
            for res in batch:
                if res.issue is not None:
                    log.add(res.issue)
                    continue
                if res.note:
                    fallbacks += 1
                    logger.info("%s (DL_info line %d): %s", res.case_id, res.dl_row, res.note)
                rows.append(dataclasses.replace(planned[res.case_id], context_slices=res.context_slices,
                                                pseudo_status=res.pseudo_status))
            bar.update(len(batch))

    rows.sort(key=lambda r: r.dl_row)
    write_sidecar(folder.new_file("lesions.csv"), rows)
    write_report(folder.new_file("conversion_report.csv"), log.issues)
    splits = make_splits((r.case, assigned[r.patient]) for r in rows)
    # --overwrite replaces what this converter wrote before, the installed split included; without it a
    # different split in $nnUNet_preprocessed/<dataset>/ is kept with a warning
    folder.new_file(SPLITS_FILE)
    write_splits(splits, out, preprocessed_root_from_env(), overwrite=overwrite)
    n_test = sum(r.split == "test" for r in rows)
    n_training = len(rows) - n_test
    if not splits[0]["val"]:
        logger.warning("no validation cases: nnU-Net's fold 0 needs a non-empty 'val' list in splits_final.json")
    folder.write_new(DATASET_JSON, lambda tmp: _write_dataset_json(tmp, out.name, dl_dir, n_training, n_test,
                                                                   context, scale_policy, min_crop, size_range,
                                                                   context_mm, exclude_noisy, pseudo))
    folder.finish(_case_files(out, ((r.case, r.split == "test") for r in rows), context))

    result = ConversionResult(out, rows, sorted(log.issues, key=lambda i: i.dl_row), moves, info.n_rows,
                              fallbacks, time.perf_counter() - t0, pseudo)
    if progress:
        print(result.summary(), file=sys.stdout, flush=True)
    else:
        logger.info("%s", result.summary())
    return result
