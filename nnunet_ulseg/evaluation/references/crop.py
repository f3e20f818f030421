"""Crop-geometry reference masks ``<ref>/<case><file_ending>`` (``--ref-format crop``): the lossy path.

The files have the prediction's geometry (``crop_size x crop_size``, label 1 = lesion,
everything else background), as :func:`~.crop_writer.write_reference_crops` writes them.
They are pasted back into the key slice exactly like a prediction
(:func:`nnunet_ulseg.conversion.sidecar.paste_back`, the same ``interpolation``), so the
reference has been through slice -> crop -> slice and is *not* the original mask; the
output names this kind and geometry so a number scored this way is never mistaken for
one scored against a slice-geometry reference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back
from nnunet_ulseg.evaluation.label_io import read_crop_mask
from nnunet_ulseg.evaluation.references.base import Reference, RefMask

LESION_LABEL = 1


def crop_label(path: Path, row: LesionRow) -> np.ndarray:
    """Boolean lesion mask (label 1) of a crop file, checked against the sidecar's crop size."""
    array = read_crop_mask(path)
    if array.shape != (row.crop_size, row.crop_size):
        raise ValueError(f"{path}: shape {array.shape} does not match case {row.case}'s crop "
                         f"size {row.crop_size} in lesions.csv")
    return array == LESION_LABEL


class CropReference(Reference):
    """``<case><file_ending>`` crops, pasted back with ``interpolation`` (module docstring)."""

    kind = "crop"
    geometry = "crop"

    def __init__(self, folder: str | Path, file_ending: str = ".mha", interpolation: str = "linear"):
        super().__init__(folder)
        self.file_ending, self.interpolation = file_ending, interpolation
        self.rule_text = (f"<ref>/<case>{file_ending}, crop geometry, label 1 = lesion; pasted back into the key "
                          f"slice like the predictions ({interpolation}): slice -> crop -> slice, lossy")

    def path(self, row: LesionRow) -> Path:
        return self.folder / f"{row.case}{self.file_ending}"

    def get(self, row: LesionRow) -> RefMask:
        path = self.path(row)
        if not path.is_file():
            return RefMask(None, "", f"case {row.case}: no {path}")
        out = paste_back(crop_label(path, row).astype(np.uint8), row, interpolation=self.interpolation)
        return RefMask(np.asarray(out, dtype=bool), str(path))
