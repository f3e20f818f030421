"""Patient-level train/val/test assignment and nnU-Net's ``splits_final.json``.

DeepLesion's ``Train_Val_Test`` is given per row.  A patient must never be in two splits
(leakage), so each patient gets the highest split value found on any of its rows (test
wins over val over train); every patient moved this way is reported.  The converter
writes one fold: ``train`` = cases of train patients, ``val`` = cases of val patients;
test cases go to ``imagesTs`` and are in no fold.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nnunet_ulseg import nnunet_layout as layout
from nnunet_ulseg.nnunet_layout import RawDataset

from .dl_info import SPLIT_NAMES

logger = logging.getLogger("nnunet_ulseg.conversion")


@dataclass(frozen=True)
class SplitMove:
    """A patient whose rows carry several split values and who was assigned to ``assigned``."""

    patient: int
    values: tuple[int, ...]
    assigned: int

    def message(self) -> str:
        names = "/".join(SPLIT_NAMES[v] for v in self.values)
        return f"patient {self.patient} has rows in {names}: all its lesions go to {SPLIT_NAMES[self.assigned]}"


def resolve_patient_splits(patient_values: dict[int, set[int]]) -> tuple[dict[int, int], list[SplitMove]]:
    """Patient -> split (the highest value among its rows) and the list of patients that moved."""
    assigned: dict[int, int] = {}
    moves: list[SplitMove] = []
    for patient in sorted(patient_values):
        values = patient_values[patient]
        assigned[patient] = max(values)
        if len(values) > 1:
            move = SplitMove(patient, tuple(sorted(values)), max(values))
            moves.append(move)
            logger.warning("split conflict: %s", move.message())
    return assigned, moves


def make_splits(cases: Iterable[tuple[str, int]]) -> list[dict[str, list[str]]]:
    """One nnU-Net fold from ``(case_id, split)`` pairs: split 1 -> train, 2 -> val, 3 is left out."""
    train, val = [], []
    for case, split in cases:
        if split == 1:
            train.append(case)
        elif split == 2:
            val.append(case)
    return [{"train": sorted(train), "val": sorted(val)}]


def write_splits(splits: list[dict[str, list[str]]], out_dir: str | Path,
                 preprocessed_root: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write ``splits_final.json`` into ``out_dir`` and, when given, ``<preprocessed_root>/<out_dir name>/``.

    The preprocessed copy is what nnU-Net reads (``nnUNet_preprocessed/DatasetXXX_Name``);
    it is only written when ``out_dir``'s name is a valid nnU-Net dataset folder name,
    since nnU-Net could not find it otherwise, and a different split already there is
    kept with a warning unless ``overwrite``
    (:func:`nnunet_ulseg.nnunet_layout.install_splits_file`).  Returns the paths written.
    """
    out_dir = Path(out_dir)
    written = [RawDataset(out_dir).splits_file]
    with open(written[0], "w") as f:
        json.dump(splits, f, indent=1)
    if preprocessed_root:
        if layout.DATASET_NAME.fullmatch(out_dir.name):
            dest = Path(preprocessed_root) / out_dir.name / layout.SPLITS_FILE
            if layout.install_splits_file(written[0], dest, overwrite) != "kept":
                written.append(dest)
        else:
            logger.warning("output folder %r is not named DatasetXXX_Name: splits_final.json not copied to %s",
                           out_dir.name, preprocessed_root)
    return written


def preprocessed_root_from_env() -> str | None:
    """``$nnUNet_preprocessed`` if set and non-empty."""
    return os.environ.get("nnUNet_preprocessed") or None
