"""Round k's training set of Algorithm 1 as an nnU-Net raw dataset (WSSS Sec. 3.3, Algorithm 1 lines 6-11).

Line 8-10: for every training lesion and every ``τ`` in ``-k..k``, the round-(k-1) model's
probabilities ``Ŷ_{r+τ}`` on slice ``r + τ``, the estimated mark ``R̂_{r+τ}`` and GrabCut
give ``Y_{r+τ}`` (:func:`slice_label`, which is
:func:`~nnunet_ulseg.pseudo_masks.cnn_trimap.off_key_slice_labels` on the slice's crop);
line 11 adds ``(V_{r+τ}, Y_{r+τ})`` to the training set ``F``, which line 6 empties at the
start of every round.  :func:`build_slice_dataset` writes ``F`` as a dataset.

Choices where the paper is silent:

* ``τ = 0``: the key slice keeps the round-0 dataset's label (the converter's pseudo mask
  from the RECIST mark itself, Algorithm 1 line 2); the mark is the only ground evidence and
  the key slice is where it lies, so a CNN round does not overwrite it.
* ``τ ≠ 0`` are all relabelled by the newest model, as line 6 (``F = ∅``) and lines 7-11
  say: a slice labelled in round k-1 gets a new label in round k from model k-1.
* A slice whose estimate ``R̂`` is empty (beyond the lesion's reach, ``None``) is not added.
* The crop's pixel spacing in mm is the slice spacing over the crop scale
  (``spacing_x / scale``): the estimate shrinks the axes by Pythagoras in mm.
* Off-key cases follow their key case in ``splits_final.json`` (same fold side), so no
  slice of a validation lesion is trained on.
* Images are linked, never copied (:func:`nnunet_ulseg.refine.labels.link_file`); the
  dataset is written as ``.<name>.partial`` and renamed, like refine's rounds.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_ulseg import nnunet_layout as layout
from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.conversion.slices import SLICES_FILE, SliceRow, write_slices
from nnunet_ulseg.pseudo_masks.cnn_trimap import off_key_slice_labels
from nnunet_ulseg.pseudo_masks.recist3d import slice_distance_mm
from nnunet_ulseg.recist import Recist
from nnunet_ulseg.refine.labels import link_file, training_cases, write_label
from nnunet_ulseg.refine.manifest import write_json_atomic

#: ``label_status`` of a key-slice case (:mod:`nnunet_ulseg.conversion.slices`)
KEY_STATUS = "key"


def lesion_probability(npz_path: str | os.PathLike) -> np.ndarray:
    """The lesion channel (label 1) of nnU-Net's ``--save_probabilities`` file, as a 2D float64 map in [0, 1]."""
    with np.load(npz_path) as data:
        probs = np.asarray(data["probabilities"])
    if probs.ndim < 3 or probs.shape[0] < 2:
        raise ValueError(f"{npz_path}: expected nnU-Net softmax probabilities (classes, ..., y, x), got {probs.shape}")
    p = probs[1].astype(np.float64)
    return np.clip(p.reshape(p.shape[-2:]), 0.0, 1.0)


def read_crop(path: str | os.PathLike) -> np.ndarray:
    """Channel 0 of a crop (``.mha``) as a 2D ``[y, x]`` array."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return array.reshape(array.shape[-2:])


def slice_label(row: LesionRow, offset: int, prob: np.ndarray, image_hu: np.ndarray):
    """Algorithm 1 lines 8-10 on the crop of slice ``key + offset`` of ``row``'s lesion; None beyond its reach."""
    spacing_xy = row.crop_spacing_xy
    recist = Recist.from_points(row.recist_crop)
    return off_key_slice_labels(recist, slice_distance_mm(offset, row.spacing_z), prob, image_hu,
                                (row.window_min, row.window_max), spacing_xy)


def extended_splits(splits: list, key_of: Mapping[str, str]) -> list:
    """``splits`` with every off-key case (``key_of``: case -> key case) on its key case's side of each fold."""
    out = []
    for fold in splits:
        new = {}
        for side in ("train", "val"):
            members = set(fold.get(side, ()))
            new[side] = sorted(members | {c for c, key in key_of.items() if key in members})
        out.append(new)
    return out


def build_slice_dataset(base_raw: str | os.PathLike, target_raw: str | os.PathLike, crops_dir: str | os.PathLike,
                        labels: Mapping[str, tuple[np.ndarray, str]], slice_rows: Sequence[SliceRow],
                        splits: list | None, provenance: dict) -> dict:
    """Write round k's raw dataset: the base's key cases and labels plus the labelled off-key slices.

    ``labels``: off-key case -> ``(label array, status)``; ``slice_rows``: their rows of the
    crops' ``slices.csv``; ``crops_dir/imagesTr`` holds their images.  Returns counts per offset
    and per status.
    """
    base_raw, target_raw, crops_dir = Path(base_raw), Path(target_raw), Path(crops_dir)
    if target_raw.exists():
        raise FileExistsError(f"{target_raw} already exists")
    base = layout.RawDataset(base_raw)
    ending = base.file_ending
    n_channels = len(base.dataset_json["channel_names"])
    key_cases = training_cases(base_raw)
    rows = {r.case: r for r in slice_rows}
    unknown = sorted(set(labels) - set(rows))
    if unknown:
        raise ValueError(f"labels for slices without a slices.csv row in {crops_dir}: {unknown[:5]}")
    partial = target_raw.with_name(f".{target_raw.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    out = layout.RawDataset(partial, ending)
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "labelsTr").mkdir(parents=True)
    methods: set[str] = set()
    for f in sorted((base_raw / "imagesTr").iterdir()):
        if f.name.endswith(ending):
            methods.add(link_file(f, partial / "imagesTr" / f.name))
    for case in key_cases:
        methods.add(link_file(base.label_path(case), out.label_path(case)))
    table = [SliceRow(case, case, 0, 0.0, -1, "", KEY_STATUS) for case in key_cases]
    statuses: Counter = Counter()
    per_offset: Counter = Counter()
    for case in sorted(labels):
        label, status = labels[case]
        for c in range(n_channels):
            name = layout.image_filename(case, ending, c)
            methods.add(link_file(crops_dir / "imagesTr" / name, partial / "imagesTr" / name))
        reference = sitk.ReadImage(str(crops_dir / "imagesTr" / layout.image_filename(case, ending)))
        write_label(out.label_path(case), label, reference)
        row = rows[case]
        table.append(SliceRow(case, row.key_case, row.offset, row.offset_mm, row.slice_index, row.split, status))
        statuses[status] += 1
        per_offset[row.offset] += 1
    key_rows = _key_rows(base_raw, key_cases)
    table = [key_rows.get(r.case, r) if r.label_status == KEY_STATUS else r for r in table]
    write_slices(partial / SLICES_FILE, table)
    new_json = dict(base.dataset_json)
    new_json["name"] = target_raw.name
    new_json["numTraining"] = len(key_cases) + len(labels)
    new_json["ulseg_propagate"] = dict(provenance)
    write_json_atomic(out.dataset_json_file, new_json)
    if splits is not None:
        write_json_atomic(out.splits_file, extended_splits(splits, {c: rows[c].key_case for c in labels}))
    if (base_raw / "lesions.csv").exists():
        shutil.copy2(base_raw / "lesions.csv", partial / "lesions.csv")
    os.replace(partial, target_raw)
    return {"key_cases": len(key_cases), "slices": len(labels),
            "per_offset": {str(k): per_offset[k] for k in sorted(per_offset)},
            "label_status": dict(sorted(statuses.items())),
            "fallbacks": sum(v for k, v in statuses.items() if k.startswith("fallback")),
            "link_method": sorted(methods)}


def _key_rows(base_raw: Path, cases: Sequence[str]) -> dict[str, SliceRow]:
    """``slices.csv`` rows of the key cases (offset 0, status ``key``) with split and slice from ``lesions.csv``."""
    from nnunet_ulseg.conversion.sidecar import read_sidecar

    sidecar = base_raw / "lesions.csv"
    if not sidecar.exists():
        return {}
    wanted = set(cases)
    return {r.case: key_slice_row(r) for r in read_sidecar(sidecar) if r.case in wanted}


def key_slice_row(row: LesionRow, status: str = KEY_STATUS) -> SliceRow:
    """The ``slices.csv`` row of a key case (offset 0)."""
    return SliceRow(row.case, row.case, 0, 0.0, row.key_slice, row.split, status)
