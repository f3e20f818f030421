"""Per-VOI ULS23 conversion work unit, run in worker processes (DESIGN "Crops", "Labels").

For one VOI pair the worker reads and binarises the volumes (:mod:`.uls23_voi`), picks
the key slice, derives the RECIST mark from the label, and then writes exactly what the
DeepLesion worker writes for a lesion: the crop box of :func:`~.geometry.crop_box`
around the mark, each channel (key slice, then context slices, :mod:`.context`) cropped
from the VOI's HU values with :func:`~.geometry.crop_hu_slice` (-1024 HU outside the
VOI), and the pseudo mask made directly in crop geometry from the mark mapped to crop
pixels by the task's maker (:mod:`nnunet_ulseg.pseudo_masks.registry`: the ellipse of AHRNet
Sec. 2.2 by default, or GrabCut-R etc. on the key-slice crop, in the window of the file name).  Test VOIs also get their 3D reference: the
label squeezed to uint8 with the label's header, in ``referencesTs/<File_name>``.

Context slices outside the VOI are replaced by the nearest slice toward the key (the
rule of :func:`~.context.resolve_slice`).  Any exception while converting one VOI is
returned as an issue, never raised, and nothing half-written stays behind.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from ..pseudo_masks.registry import DEFAULT_PSEUDO, make_pseudo_mask
from .context import channel_offsets, resolve_slice
from .dl_info import SPLIT_NAMES
from .geometry import crop_box, crop_hu_slice, slice_to_crop
from .io import write_mha
from .output import create_new_file
from .report import Issue
from .sidecar import LesionRow
from .uls23_names import VoiName
from .uls23_voi import VoiError, choose_key_slice, derive_recist, labelled_slices, read_voi
from .worker import output_paths

REFERENCE_DIR = "referencesTs"


@dataclass(frozen=True, slots=True)
class VoiIssue(Issue):
    """An :class:`~.report.Issue` about a VOI: ``dl_row`` is the VOI's line in ``conversion_report.csv``."""

    def message(self) -> str:
        where = f" [{self.file}]" if self.file else ""
        return f"VOI {self.file_name} (conversion_report.csv line {self.dl_row}){where}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VoiTask:
    """One VOI to convert: paths, its name facts, patient and split, and the crop options."""

    dl_row: int
    name: VoiName
    patient: int
    split: int
    case_id: str
    image_path: str
    label_path: str
    out_dir: str
    context: int
    scale_policy: str
    min_crop: float
    size_range: tuple[int, int]
    nominal_spacing: tuple[float, float] | None  # written spacing for scale policy lesion
    pseudo: str = DEFAULT_PSEUDO  # pseudo-mask maker (--pseudo)


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """One ``uls23_volumes.csv`` row: what the VOI holds, converted or not (None where unknown)."""

    dl_row: int
    File_name: str
    case: str
    case_key: str
    patient: int
    split: str
    status: str
    size_x: int | None = None
    size_y: int | None = None
    size_z: int | None = None
    spacing_x: float | None = None
    spacing_y: float | None = None
    spacing_z: float | None = None
    labelled_slices: int | None = None
    first_labelled: int | None = None
    last_labelled: int | None = None
    partial: int | None = None
    key_slice: int | None = None
    key_components: int | None = None
    long_mm: float | None = None  # the derived mark (the sidecar's long_mm/short_mm)
    short_mm: float | None = None
    uls23_long_mm: float | None = None  # ULS23's evaluator measurement of the key slice
    uls23_short_mm: float | None = None


@dataclass(frozen=True, slots=True)
class VoiResult:
    """Outcome for one VOI: ``row`` (sidecar) on success, else ``issue``; ``volume`` always."""

    dl_row: int
    case_id: str
    volume: VolumeInfo
    row: LesionRow | None = None
    issue: VoiIssue | None = None
    note: str = ""


def reference_path(out_dir: str, file_name: str) -> str:
    """Where the 3D reference of a test VOI goes: ``<out>/referencesTs/<File_name>``."""
    return os.path.join(out_dir, REFERENCE_DIR, file_name)


def _write_reference(path: str, label: np.ndarray, label_image) -> None:
    import SimpleITK as sitk

    ref = sitk.GetImageFromArray(np.ascontiguousarray(label, dtype=np.uint8))
    n = label_image.GetDimension()
    ref.SetSpacing(tuple(label_image.GetSpacing())[:3])
    ref.SetOrigin(tuple(label_image.GetOrigin())[:3])
    direction = np.asarray(label_image.GetDirection(), dtype=np.float64).reshape(n, n)[:3, :3]
    ref.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(ref, path, useCompression=path.endswith(".gz"))


def _base_volume(task: VoiTask, status: str) -> VolumeInfo:
    return VolumeInfo(task.dl_row, task.name.file_name, task.case_id, task.name.case_key, task.patient,
                      SPLIT_NAMES[task.split], status)


def convert_voi(task: VoiTask) -> VoiResult:
    """Convert one VOI; never raises for per-VOI problems (they come back as ``issue``)."""
    volume = _base_volume(task, "skipped")
    written: list[str] = []
    try:
        voi = read_voi(task.image_path, task.label_path)
        sx, sy, sz = voi.spacing
        nx, ny, nz = voi.size_xyz
        labelled = labelled_slices(voi.label)
        volume = dataclasses.replace(volume, size_x=nx, size_y=ny, size_z=nz, spacing_x=sx, spacing_y=sy,
                                     spacing_z=sz, labelled_slices=labelled.count,
                                     first_labelled=labelled.indices[0], last_labelled=labelled.indices[-1],
                                     partial=int(labelled.partial))
        key = choose_key_slice(voi.label, voi.spacing)
        derived = derive_recist(voi.label[key.z], voi.spacing)
        recist = derived.recist
        points = tuple(recist.points.ravel().tolist())
        box = crop_box(recist, task.min_crop, task.scale_policy, task.size_range)
        crop_points = tuple(slice_to_crop(recist.points, box).ravel().tolist())
        used = tuple(resolve_slice(key.z, o, lambda i: 0 <= i < nz) for o in channel_offsets(task.context))
        spacing2 = task.nominal_spacing if task.scale_policy == "lesion" else (sx, sy)
        test = task.split == 3
        image_paths, label_path = output_paths(task.out_dir, task.case_id, len(used), test)
        # files are created new (never replaced, no link followed: .output); only those are removed on failure
        key_crop = None
        for z, path in zip(used, image_paths):
            written.append(create_new_file(path))
            crop = crop_hu_slice(voi.image[z], box)
            key_crop = crop if key_crop is None else key_crop  # channel 0 is the key slice
            write_mha(path, crop, spacing2)
        label, pseudo_status = make_pseudo_mask(task.pseudo, crop_points, key_crop, (box.size, box.size),
                                                task.name.window)
        written.append(create_new_file(label_path))
        write_mha(label_path, label, spacing2)
        if test:
            ref = reference_path(task.out_dir, task.name.file_name)
            written.append(create_new_file(ref))
            _write_reference(ref, voi.label, voi.label_image)
        long_mm, short_mm = derived.long_mm, derived.short_mm
        row = LesionRow(
            case=task.case_id, split=SPLIT_NAMES[task.split], dl_row=task.dl_row, File_name=task.name.file_name,
            patient=task.patient, study=task.name.study, series=task.name.series, key_slice=key.z,
            crop_x0=box.x0, crop_y0=box.y0, crop_side=box.side, crop_size=box.size, scale=box.scale,
            spacing_x=sx, spacing_y=sy, spacing_z=sz, recist_slice=points, recist_crop=crop_points,
            long_mm=long_mm, short_mm=short_mm, lesion_type=task.name.lesion_type, possibly_noisy=None,
            window_min=task.name.window[0], window_max=task.name.window[1],
            image_width=nx, image_height=ny, context_slices=used, pseudo_status=pseudo_status,
        )
        missing = [f"{key.z + o}->{z}" for o, z in zip(channel_offsets(task.context), used) if z != key.z + o]
        note = f"context slices outside the VOI, replaced toward the key: {', '.join(missing)}" if missing else ""
        volume = dataclasses.replace(volume, status="converted", key_slice=key.z, key_components=key.n_components,
                                     long_mm=long_mm, short_mm=short_mm, uls23_long_mm=derived.uls23_long_mm,
                                     uls23_short_mm=derived.uls23_short_mm)
        return VoiResult(task.dl_row, task.case_id, volume, row=row, note=note)
    except VoiError as e:
        issue = VoiIssue(task.dl_row, task.name.file_name, e.file, e.reason, e.detail)
    except Exception as e:  # noqa: BLE001 - reported per VOI, never fatal
        issue = VoiIssue(task.dl_row, task.name.file_name, task.label_path, "internal_error",
                         f"{type(e).__name__}: {e}")
    for path in written:  # no half-written case may stay behind
        if os.path.exists(path):
            os.remove(path)
    return VoiResult(task.dl_row, task.case_id, volume, issue=issue)
