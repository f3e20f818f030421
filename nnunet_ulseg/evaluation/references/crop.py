"""Crop-geometry reference masks ``<ref>/<case><file_ending>`` (``--ref-format crop``): the lossy path.

The files have the prediction's geometry (``crop_size x crop_size``, 0 background,
1 lesion, 2 ignore = background; any other value is an error naming the file), as
:func:`~.crop_writer.write_reference_crops` writes them.
They are pasted back into the key slice exactly like a prediction
(:func:`nnunet_ulseg.conversion.sidecar.paste_back`, the same ``interpolation``), so the
reference has been through slice -> crop -> slice and is *not* the original mask; the
output names this kind and geometry so a number scored this way is never mistaken for
one scored against a slice-geometry reference.

:func:`crop_label` is also the one reader of prediction crops in ``ulseg evaluate`` and
``ulseg measure``: every crop-geometry label file is read through it, so its shape and
label values (:func:`~nnunet_ulseg.evaluation.label_io.lesion_and_ignore`) are checked in
one place.  ``--lesion-label``/``--threshold`` apply to the predictions only; a crop
reference is always read with the contract (a reference the converter wrote is 0/1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back
from nnunet_ulseg.evaluation.label_io import DEFAULT_RULE, LESION_LABEL, LabelRule, lesion_and_ignore, read_crop_mask
from nnunet_ulseg.evaluation.references.base import Reference, RefMask

__all__ = ["LESION_LABEL", "REFERENCE_RULE", "CropReference", "crop_label", "crop_labels"]

#: Crop references are read with the contract; the error says so (the options are the predictions').
REFERENCE_RULE = DEFAULT_RULE.with_hint(
    "a crop-geometry reference holds 0 background, 1 lesion, 2 ignore (--lesion-label/--threshold apply to the "
    "predictions only); rewrite it, or give the masks in key-slice geometry (PNG/NIfTI: any value > 0 is lesion)")


def crop_labels(path: Path, row: LesionRow, rule: LabelRule = DEFAULT_RULE) -> tuple[np.ndarray, np.ndarray]:
    """``(lesion, ignore)`` boolean masks of a crop file, checked against the sidecar's crop size and ``rule``.

    Raises ``ValueError`` naming ``path`` for a wrong shape or label values ``rule`` does
    not allow (:func:`~nnunet_ulseg.evaluation.label_io.lesion_and_ignore`).
    """
    array = read_crop_mask(path)
    if array.shape != (row.crop_size, row.crop_size):
        raise ValueError(f"{path}: shape {array.shape} does not match case {row.case}'s crop "
                         f"size {row.crop_size} in lesions.csv")
    return lesion_and_ignore(array, path, rule)


def crop_label(path: Path, row: LesionRow, rule: LabelRule = DEFAULT_RULE) -> np.ndarray:
    """Boolean lesion mask of a crop file (:func:`crop_labels`; the ignore label is background)."""
    return crop_labels(path, row, rule)[0]


class CropReference(Reference):
    """``<case><file_ending>`` crops, pasted back with ``interpolation`` (module docstring)."""

    kind = "crop"
    geometry = "crop"

    def __init__(self, folder: str | Path, file_ending: str = ".mha", interpolation: str = "linear"):
        super().__init__(folder)
        self.file_ending, self.interpolation = file_ending, interpolation
        self.rule_text = (f"<ref>/<case>{file_ending}, crop geometry, label 1 = lesion (0, 2 background, other "
                          f"values an error); pasted back into the key "
                          f"slice like the predictions ({interpolation}): slice -> crop -> slice, lossy")

    def path(self, row: LesionRow) -> Path:
        return self.folder / f"{row.case}{self.file_ending}"

    def get(self, row: LesionRow) -> RefMask:
        path = self.path(row)
        if not path.is_file():
            return RefMask(None, "", f"case {row.case}: no {path}")
        out = paste_back(crop_label(path, row, REFERENCE_RULE).astype(np.uint8), row, interpolation=self.interpolation)
        return RefMask(np.asarray(out, dtype=bool), str(path))
