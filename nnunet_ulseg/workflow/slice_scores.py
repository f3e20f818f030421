"""Score crop-geometry masks in the original key-slice geometry against true masks.

Used by ``ulseg demo`` (and its tests) on samples written by
:func:`nnunet_ulseg.demo.make_sample`, whose ``masks.csv`` pairs every ``DL_info.csv``
row with an instance of a ``Masks_png`` instance map.  Each crop (prediction or pseudo
mask) is pasted back into its slice with the crop box recorded in ``lesions.csv``, so
the Dice is that of the lesion as a radiologist sees it, independent of how the crop
was scaled.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from nnunet_ulseg.conversion.sidecar import paste_back, read_sidecar
from nnunet_ulseg.evaluation.overlap import Overlap, summarize


class TrueMasks:
    """True lesion masks of a generated sample, looked up by ``DL_info.csv`` row."""

    def __init__(self, sample_dir: str | Path):
        self.root = Path(sample_dir)
        with open(self.root / "masks.csv", newline="") as f:
            self.rows = list(csv.DictReader(f))
        self._cache: dict[str, np.ndarray] = {}

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


def read_crop_mask(path: str | Path) -> np.ndarray:
    """A 2D crop-geometry label image (``.mha`` etc.) as a ``[y, x]`` array."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return array.reshape(array.shape[-2:])


def _axis_errors(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """ULS23's SAPE ``|p - t| / (|p| + |t|)`` of the long and short axes (mm, largest components).

    An empty prediction (or reference) scores 1.0, the most ULS23's ``min(1, SAPE)`` gives.
    """
    from nnunet_ulseg.evaluation.metrics import axis_error, measure_mask

    mp, mr = measure_mask(pred, spacing), measure_mask(ref, spacing)
    if mp.components == 0 or mr.components == 0:
        return 1.0, 1.0
    return min(1.0, axis_error(mp.long_mm, mr.long_mm)), min(1.0, axis_error(mp.short_mm, mr.short_mm))


def score_folder(mask_dir: str | Path, sidecar: str | Path, sample_dir: str | Path,
                 split: str = "test", file_ending: str = ".mha", ignore_label: int = 2,
                 postprocess: str = "none", images_dir: str | Path | None = None) -> dict:
    """Dice/precision/recall of every ``<case><file_ending>`` in ``mask_dir`` for the cases of ``split``.

    The lesion is label 1.  Label ``ignore_label`` (nnU-Net's ignore label of a refined
    pseudo mask) counts as not-lesion for ``dice``; ``dice_labelled`` (summarised in
    ``summary_labelled``) leaves its pixels out, see :meth:`Overlap.outside`.  Without
    ignore pixels both are equal.  A case listed in the sidecar but missing from
    ``mask_dir`` is an error: a silently shorter table would overstate the result.

    ``postprocess``: a mode of :data:`nnunet_ulseg.postprocess.MODES`, applied to each crop
    with its crop-geometry mark (:func:`~nnunet_ulseg.postprocess.postprocess_crop`) before
    paste-back; each per-lesion entry records its ``postprocess_status`` and the result its
    ``postprocess`` mode.
    """
    from nnunet_ulseg.postprocess import IMAGE_MODES, check_mode, postprocess_crop, read_crop_image

    check_mode(postprocess)
    if images_dir is None:  # the converted dataset's own crops, next to its lesions.csv
        images_dir = Path(sidecar).parent / ("imagesTs" if split == "test" else "imagesTr")
    mask_dir = Path(mask_dir)
    truth = TrueMasks(sample_dir)
    per_lesion = []
    for row in read_sidecar(sidecar):
        if row.split != split:
            continue
        path = mask_dir / f"{row.case}{file_ending}"
        if not path.exists():
            raise FileNotFoundError(f"no mask for case {row.case} in {mask_dir}")
        crop = read_crop_mask(path)
        try:
            ct = read_crop_image(images_dir, row.case, file_ending) if postprocess in IMAGE_MODES else None
            kept = postprocess_crop(crop, row, postprocess, image=ct)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        pred = paste_back(kept.mask, row)
        ref = truth.mask(row.dl_row, row.File_name)
        o = Overlap.of(pred, ref)
        ignored = crop == ignore_label
        labelled = Overlap.outside(pred, ref, paste_back(ignored, row)) if ignored.any() else o
        long_err, short_err = _axis_errors(pred, ref, (row.spacing_x, row.spacing_y))
        per_lesion.append({"case": row.case, "dice": o.dice, "precision": o.precision, "recall": o.recall,
                           "dice_labelled": labelled.dice, "postprocess_status": kept.status,
                           "long_err": long_err, "short_err": short_err})
    if not per_lesion:
        raise ValueError(f"no {split} cases in {sidecar}")
    return {"per_lesion": per_lesion, "summary": summarize([r["dice"] for r in per_lesion]),
            "long_err": summarize([r["long_err"] for r in per_lesion]),
            "short_err": summarize([r["short_err"] for r in per_lesion]),
            "summary_labelled": summarize([r["dice_labelled"] for r in per_lesion]), "postprocess": postprocess}
