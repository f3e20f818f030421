"""Per-offset Dice against a generated sample's true 3D masks (``--truth``): WSSS Fig. 4's curve, per model.

Fig. 4 plots Dice against the distance from the RECIST slice.  With ``--truth SAMPLE_DIR``
(a ``make-sample`` folder: ``masks3d.csv`` + ``Masks_png``, read by
:class:`nnunet_ulseg.demo.truth3d.TrueMasks3D`) every slice a model labels for the next
round, and every test slice it predicts, is pasted back into slice geometry with its key
case's ``lesions.csv`` row (nearest neighbour, label values kept) and scored there.

Choices: a label's ignore pixels (2) are left out of both masks (they are neither lesion
nor background in training); a slice where both masks are empty is not averaged (no
lesion there and none found: Dice is undefined, and counting it as 1 would reward slices
beyond every lesion); offsets are slice indices, as in ``slices.csv``.  The full 3D
evaluation (3D Dice, VS, AVD per lesion) is ``ulseg evaluate``'s; this is a per-round
check of the propagation itself.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back
from nnunet_ulseg.labels import IGNORE, LESION


class SliceTruth:
    """True lesion masks of a sample's slices, by key case row and offset."""

    def __init__(self, sample_dir: str | Path):
        from nnunet_ulseg.demo.truth3d import TrueMasks3D

        self.masks = TrueMasks3D(sample_dir)
        self._volumes: dict[int, object] = {}

    def mask(self, row: LesionRow, offset: int) -> np.ndarray | None:
        """The lesion's true mask on slice ``key + offset`` (bool, slice geometry), None outside its sub-volume."""
        if row.dl_row not in self._volumes:
            self._volumes[row.dl_row] = self.masks.volume(row.dl_row, row.File_name)
        vol = self._volumes[row.dl_row]
        where = np.flatnonzero(np.asarray(vol.slice_indices) == row.key_slice + offset)
        return None if where.size == 0 else np.asarray(vol.mask[where[0]], bool)


def slice_dice(label_crop: np.ndarray, row: LesionRow, offset: int, truth: SliceTruth) -> float | None:
    """Dice of a crop-geometry label (1 lesion, 2 ignore) with the true mask of slice ``key + offset``."""
    true = truth.mask(row, offset)
    if true is None:
        return None
    label = paste_back(np.asarray(label_crop, np.uint8), row, "nearest")
    valid = label != IGNORE
    pred, true = (label == LESION) & valid, true & valid
    total = int(pred.sum() + true.sum())
    return None if total == 0 else 2.0 * int((pred & true).sum()) / total


def per_offset_mean(scores: Iterable[tuple[int, float | None]]) -> dict[str, dict]:
    """``{offset: {"dice": mean, "slices": n}}`` over the defined scores, offsets ascending."""
    by: dict[int, list[float]] = defaultdict(list)
    for offset, dice in scores:
        if dice is not None:
            by[offset].append(dice)
    return {str(k): {"dice": float(np.mean(v)), "slices": len(v)} for k, v in sorted(by.items())}
