"""Score crop-geometry masks in the original key-slice geometry against reference masks.

Used by ``ulseg demo``, ``ulseg refine --truth`` (its per-round report) and the
benchmarks.  The reference is any kind ``ulseg evaluate`` reads
(:mod:`nnunet_ulseg.evaluation.references`: a generated sample's ``masks.csv``, key-slice
PNGs, NIfTI/MHA volumes, ULS23 VOIs, crop-geometry files), read in key-slice geometry.
Each crop (prediction or pseudo mask) is pasted back into its slice once, with the crop
box recorded in ``lesions.csv``, so the Dice is that of the lesion as a radiologist sees
it, independent of how the crop was scaled.

``TrueMasks`` and ``read_crop_mask`` live in :mod:`nnunet_ulseg.evaluation`; they are
re-exported here for older imports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.sidecar import paste_back, read_sidecar
from nnunet_ulseg.evaluation.label_io import LabelRule, read_crop_mask
from nnunet_ulseg.evaluation.overlap import Overlap, summarize
from nnunet_ulseg.evaluation.references import TrueMasks, open_reference
from nnunet_ulseg.evaluation.references.crop import crop_labels

__all__ = ["TrueMasks", "read_crop_mask", "score_folder"]


def _axis_errors(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """ULS23's SAPE ``|p - t| / (|p| + |t|)`` of the long and short axes (mm, largest components).

    Axes follow ULS23's own evaluator (``convention="uls23"``: boundary pixel centres, see
    :func:`nnunet_ulseg.recist.mask_axes`), so these errors compare with ULS23's leaderboard.
    An empty prediction (or reference) scores 1.0, the most ULS23's ``min(1, SAPE)`` gives.
    """
    from nnunet_ulseg.evaluation.metrics import axis_error, measure_mask

    mp, mr = measure_mask(pred, spacing, convention="uls23"), measure_mask(ref, spacing, convention="uls23")
    if mp.components == 0 or mr.components == 0:
        return 1.0, 1.0
    return min(1.0, axis_error(mp.long_mm, mr.long_mm)), min(1.0, axis_error(mp.short_mm, mr.short_mm))


def score_folder(mask_dir: str | Path, sidecar: str | Path, truth: str | Path,
                 split: str = "test", file_ending: str = ".mha", ignore_label: int = 2,
                 postprocess: str = "none", images_dir: str | Path | None = None,
                 ref_format: str = "auto", lesion_label: int | None = None,
                 threshold: float | None = None) -> dict:
    """Dice/precision/recall of every ``<case><file_ending>`` in ``mask_dir`` for the cases of ``split``.

    ``truth``: a reference folder of kind ``ref_format``
    (:func:`~nnunet_ulseg.evaluation.references.open_reference`; ``auto`` detects it).
    Cases of ``split`` that have no reference there are skipped and listed under
    ``cases_without_reference`` (real reference sets cover part of the lesions); the
    result's ``reference`` says which kind, geometry and folder were used.

    The lesion is label 1.  Label ``ignore_label`` (nnU-Net's ignore label of a refined
    pseudo mask) counts as not-lesion for ``dice``; ``dice_labelled`` (summarised in
    ``summary_labelled``) leaves its pixels out, see :meth:`Overlap.outside`.  Without
    ignore pixels both are equal.  Any other value in a mask file is a ``ValueError``
    naming the file and the values (a 0/255 mask or a probability map scored Dice 0
    before), unless ``lesion_label`` (the lesion value, e.g. 255) or ``threshold`` (a
    probability map: lesion where value >= ``threshold``, no ignore pixels) says how to
    read it (:class:`~nnunet_ulseg.evaluation.label_io.LabelRule`, the rule of
    ``ulseg evaluate``).  Files are read through
    :func:`~nnunet_ulseg.evaluation.references.crop.crop_labels`, which also checks their
    shape against the crop size.  A case with a reference but missing from
    ``mask_dir`` is an error: a silently shorter table would overstate the result.

    ``postprocess``: a mode of :data:`nnunet_ulseg.postprocess.MODES`, applied to each crop
    with its crop-geometry mark (:func:`~nnunet_ulseg.postprocess.postprocess_crop`) before
    paste-back; each per-lesion entry records its ``postprocess_status`` and the result its
    ``postprocess`` mode.
    """
    from nnunet_ulseg.postprocess import IMAGE_MODES, check_mode, postprocess_crop, read_crop_image

    check_mode(postprocess)
    rule = LabelRule(lesion_label, threshold, ignore_label)
    if images_dir is None:  # the converted dataset's own crops, next to its lesions.csv
        images_dir = Path(sidecar).parent / ("imagesTs" if split == "test" else "imagesTr")
    mask_dir = Path(mask_dir)
    all_rows = read_sidecar(sidecar)
    rows = [row for row in all_rows if row.split == split]
    if not rows:
        raise ValueError(f"no {split} cases in {sidecar}")
    # the kind is detected on every row: a reference set may cover another split only
    reference = open_reference(truth, ref_format, all_rows, file_ending)
    per_lesion, without = [], []
    for row in rows:
        got = reference.get(row)
        if got.mask is None:
            without.append(row.case)
            continue
        ref = got.mask
        path = mask_dir / f"{row.case}{file_ending}"
        if not path.exists():
            raise FileNotFoundError(f"no mask for case {row.case} in {mask_dir}")
        lesion, ignored = crop_labels(path, row, rule)
        try:
            ct = read_crop_image(images_dir, row.case, file_ending) if postprocess in IMAGE_MODES else None
            kept = postprocess_crop(lesion, row, postprocess, image=ct)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        pred = paste_back(kept.mask, row)
        o = Overlap.of(pred, ref)
        labelled = Overlap.outside(pred, ref, paste_back(ignored, row)) if ignored.any() else o
        long_err, short_err = _axis_errors(pred, ref, (row.spacing_x, row.spacing_y))
        per_lesion.append({"case": row.case, "dice": o.dice, "precision": o.precision, "recall": o.recall,
                           "dice_labelled": labelled.dice, "postprocess_status": kept.status,
                           "long_err": long_err, "short_err": short_err})
    return {"reference": reference.describe(), "n_without_reference": len(without),
            "cases_without_reference": without, "per_lesion": per_lesion,
            "summary": summarize([r["dice"] for r in per_lesion]),
            "long_err": summarize([r["long_err"] for r in per_lesion]),
            "short_err": summarize([r["short_err"] for r in per_lesion]),
            "summary_labelled": summarize([r["dice_labelled"] for r in per_lesion]), "postprocess": postprocess}
