"""The true masks of a generated sample (``--ref-format sample``): ``masks.csv`` + ``Masks_png``.

:func:`nnunet_ulseg.demo.make_sample` writes, per ``DL_info.csv`` row, the instance of a
key-slice instance map ``Masks_png/<series folder>/<slice>.png`` that is the lesion
(``masks.csv``: ``File_name, lesion_instance, mask_path, true_type`` in DL_info order).
The lesion is looked up by the sidecar's ``dl_row`` (exact, unlike the RECIST-mark rule of
the PNG kind), in key-slice geometry.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.references.base import Reference, RefMask, check_slice_shape


class TrueMasks:
    """True lesion masks of a generated sample, looked up by ``DL_info.csv`` row."""

    def __init__(self, sample_dir: str | Path):
        self.root = Path(sample_dir)
        path = self.root / "masks.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (a sample made by ulseg make-sample has one)")
        with open(path, newline="") as f:
            self.rows = list(csv.DictReader(f))
        self._cache: dict[str, np.ndarray] = {}

    def path(self, dl_row: int) -> Path:
        """The instance map of ``DL_info.csv`` line ``dl_row``."""
        return self.root / self.rows[dl_row - 2]["mask_path"]

    def mask(self, dl_row: int, file_name: str) -> np.ndarray:
        """Boolean mask of the lesion on ``DL_info.csv`` line ``dl_row`` (header = line 1)."""
        index = dl_row - 2
        if not 0 <= index < len(self.rows):
            raise ValueError(f"masks.csv has no entry for DL_info.csv line {dl_row}")
        row = self.rows[index]
        if row["File_name"] != file_name:
            raise ValueError(f"masks.csv line {index + 2} is {row['File_name']}, expected {file_name}")
        path = self.root / row["mask_path"]
        if path.as_posix() not in self._cache:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise FileNotFoundError(f"cannot read true mask {path}")
            self._cache[path.as_posix()] = image
        return self._cache[path.as_posix()] == int(row["lesion_instance"])


class SampleReference(Reference):
    """A generated sample's true masks as a slice-geometry reference (module docstring)."""

    kind = "sample"
    rule_text = "masks.csv row dl_row: instance lesion_instance of the key-slice instance map mask_path"

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        self.truth = TrueMasks(folder)

    def get(self, row: LesionRow) -> RefMask:
        mask = self.truth.mask(row.dl_row, row.File_name)
        path = self.truth.path(row.dl_row)
        check_slice_shape(mask, row, path)
        return RefMask(mask, f"{path} (instance {self.truth.rows[row.dl_row - 2]['lesion_instance']})")
