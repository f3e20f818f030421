"""The per-lesion metric record of ``ulseg evaluate`` (DESIGN "Metrics").

Everything is computed on a prediction and a reference that are already in the same 2D
geometry (``ulseg evaluate`` pastes both crops back into the key slice first) with the
true pixel spacing ``(sx, sy)`` in mm:

* overlap (AHRNet Table 1; WSSS Sec. 4): precision ``TP/(TP+FP)``, recall
  ``TP/(TP+FN)``, Dice ``2TP/(2TP+FP+FN)`` (:class:`~.overlap.Overlap`: precision is NaN
  for an empty prediction, recall for an empty reference; Dice of two empty masks is 1).
  nnU-Net's ``compute_metrics`` (nnunetv2/evaluation/evaluate_predictions.py) instead
  sets Dice (and IoU) to NaN when ``TP + FP + FN = 0`` and averages with ``np.nanmean``,
  so a both-empty case drops out of its mean where here it counts as 1.  Every lesion
  here has a non-empty reference, so the two only differ for an empty reference;
* volumetric similarity ``VS = 1 - |FN - FP| / (2TP + FP + FN)`` (DESIGN writes the
  absolute value; WSSS prints the formula without it, which would allow VS > 1).  Both
  empty: VS = 1, like Dice;
* distances in mm, each named by its definition (:mod:`~.distances`): surface average
  Hausdorff ``avg_hd_mm``, pooled nearest-rank ``hd95_mm``, MONAI's max-directed
  ``hd95_max_directed_mm``, ``hd_mm``, and Taha & Hanbury's all-pixel ``avd_mm`` (max of
  the directed averages) with EvaluateSegmentation's ``avd_mean_mm`` (their mean); NaN
  when either mask is empty;
* RECIST long/short axis in mm of prediction and reference
  (:func:`nnunet_ulseg.recist.mask_axes`) under both axis conventions: ``*_long_mm`` /
  ``*_short_mm`` with ULS23's (boundary pixel centres, ``"uls23"``) and
  ``*_long_edge_mm`` / ``*_short_edge_mm`` with the outer pixel edges (``"edge"``, about
  one pixel longer), measured on the **largest connected component** (8-connectivity,
  as nnU-Net's own connected-component post-processing; on a tie in size the first
  component in raster order; ULS23's evaluator uses 4-connectivity, which only matters
  for components touching diagonally), with the component count reported; NaN for an
  empty mask.  Overlap and distances use the whole mask, all components;
* the ULS23 symmetric axis errors ``|p - r| / (|p| + |r|)`` prediction vs reference:
  ``long_err``/``short_err`` under ULS23's convention (the numbers ULS23's
  ``LongAxisErrorPercentage``/``ShortAxisErrorPercentage`` compute, before their
  ``min(1, .)``), ``long_err_edge``/``short_err_edge`` under the edge convention;
* prediction (and reference) vs the RECIST mark that was drawn on the slice (sidecar
  ``long_mm``/``short_mm``), which shows how far the masks are from the annotation the
  weak labels were made from.  These use ``recist_convention``, by default ``"edge"``:
  a radiologist's calipers (DeepLesion) end at the visible lesion edge, and the demo's
  marks are measured with that convention; marks derived with ULS23's rule (a ULS23
  import) compare with ``"uls23"``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_ulseg.evaluation.distances import average_distance, surface_distances
from nnunet_ulseg.evaluation.overlap import Overlap
from nnunet_ulseg.recist import AXIS_CONVENTIONS, mask_axes, symmetric_error

#: DeepLesion ``Coarse_lesion_type`` (DESIGN "DeepLesion on disk"), in WSSS Table 4's column order.
LESION_TYPES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney",
                7: "soft tissue", 8: "pelvis"}
UNKNOWN_TYPE = "unknown"

_EIGHT = np.ones((3, 3), dtype=bool)
NAN = float("nan")


def lesion_type_name(lesion_type: int | None) -> str:
    """Name of a coarse lesion type; -1, None or anything outside 1..8 is ``"unknown"``."""
    return LESION_TYPES.get(lesion_type, UNKNOWN_TYPE) if lesion_type is not None else UNKNOWN_TYPE


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected component of a 2D mask and the number of components.

    Ties go to the component met first in raster order.  An empty mask gives an empty
    mask and 0.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"largest_component: expected a 2D mask, got shape {mask.shape}")
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask.copy(), int(n)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1, int(n)


@dataclass(frozen=True)
class MaskMeasurement:
    """Clinical measurement of one mask (``ulseg measure``; also both sides of ``ulseg evaluate``).

    ``long_mm``/``short_mm``/``area_mm2`` and the endpoints (0-based ``(x, y)`` pixel
    coordinates of the array measured) refer to the largest component, the axes under
    ``convention`` (:data:`nnunet_ulseg.recist.AXIS_CONVENTIONS`); ``total_area_mm2``
    counts all components.  Empty mask: axes NaN, areas 0, 0 components.
    """

    long_mm: float
    short_mm: float
    area_mm2: float
    total_area_mm2: float
    components: int
    long_endpoints: np.ndarray | None
    short_endpoints: np.ndarray | None
    convention: str = "edge"


def measure_mask(mask: np.ndarray, spacing: Sequence[float], convention: str = "edge") -> MaskMeasurement:
    """Long/short axis (largest component, ``convention``), areas in mm² and component count of a 2D mask.

    The default, ``"edge"``, is :func:`~nnunet_ulseg.recist.mask_axes`' (the physical extent,
    and what every earlier caller measured); numbers to compare with ULS23 ask for ``"uls23"``,
    as :func:`lesion_metrics` does for ``long_err``/``short_err``.
    """
    if convention not in AXIS_CONVENTIONS:
        raise ValueError(f"measure_mask: convention must be one of {AXIS_CONVENTIONS}, got {convention!r}")
    sx, sy = float(spacing[0]), float(spacing[1])
    mask = np.asarray(mask, dtype=bool)
    largest, n = largest_component(mask)
    if n == 0:
        return MaskMeasurement(NAN, NAN, 0.0, 0.0, 0, None, None, convention)
    axes = mask_axes(largest, (sx, sy), convention=convention)
    pixel = sx * sy
    return MaskMeasurement(axes.long_mm, axes.short_mm, float(largest.sum()) * pixel, float(mask.sum()) * pixel,
                           n, axes.long_endpoints, axes.short_endpoints, convention)


def volumetric_similarity(o: Overlap) -> float:
    """``1 - |FN - FP| / (2TP + FP + FN)``; 1.0 when both masks are empty."""
    denom = 2 * o.tp + o.fp + o.fn
    return 1.0 if denom == 0 else 1.0 - abs(o.fn - o.fp) / denom


def axis_error(pred: float, ref: float) -> float:
    """ULS23 symmetric error :func:`nnunet_ulseg.recist.symmetric_error`; NaN when either length is NaN."""
    if not (math.isfinite(pred) and math.isfinite(ref)):
        return NAN
    return symmetric_error(pred, ref)


@dataclass(frozen=True)
class LesionMetrics:
    """All per-lesion numbers of ``ulseg evaluate`` (one ``metrics.csv`` row without the case fields).

    Pixel counts ``tp``/``fp``/``fn`` are in the evaluation geometry (key slice).
    """

    tp: int
    fp: int
    fn: int
    pred_empty: bool
    ref_empty: bool
    precision: float
    recall: float
    dice: float
    vs: float
    avg_hd_mm: float
    hd95_mm: float
    hd95_max_directed_mm: float
    hd_mm: float
    avd_mm: float
    avd_mean_mm: float
    pred_area_mm2: float
    ref_area_mm2: float
    pred_long_mm: float
    pred_short_mm: float
    pred_components: int
    ref_long_mm: float
    ref_short_mm: float
    ref_components: int
    long_err: float
    short_err: float
    pred_long_edge_mm: float
    pred_short_edge_mm: float
    ref_long_edge_mm: float
    ref_short_edge_mm: float
    long_err_edge: float
    short_err_edge: float
    recist_long_mm: float
    recist_short_mm: float
    pred_long_err_recist: float
    pred_short_err_recist: float
    ref_long_err_recist: float
    ref_short_err_recist: float

    def as_dict(self) -> dict:
        return asdict(self)


#: Metrics summarised by ``aggregate``: name -> True when higher is better (sets "worst").
SUMMARY_METRICS = {
    "precision": True, "recall": True, "dice": True, "vs": True,
    "avg_hd_mm": False, "hd95_mm": False, "hd95_max_directed_mm": False, "hd_mm": False,
    "avd_mm": False, "avd_mean_mm": False,
    "long_err": False, "short_err": False, "long_err_edge": False, "short_err_edge": False,
    "pred_long_err_recist": False, "pred_short_err_recist": False,
    "pred_long_mm": None, "pred_short_mm": None, "ref_long_mm": None, "ref_short_mm": None,
}


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   recist_long_mm: float = NAN, recist_short_mm: float = NAN,
                   recist_convention: str = "edge") -> LesionMetrics:
    """Every per-lesion metric of a 2D prediction against a 2D reference (module docstring).

    ``spacing`` is ``(sx, sy)`` in mm; ``recist_*_mm`` are the annotation's axis lengths
    (NaN when unknown gives NaN errors), compared with the masks' axes under
    ``recist_convention``.  Never raises for empty masks.
    """
    if recist_convention not in AXIS_CONVENTIONS:
        raise ValueError(f"lesion_metrics: recist_convention must be one of {AXIS_CONVENTIONS}, "
                         f"got {recist_convention!r}")
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.ndim != 2:
        raise ValueError(f"lesion_metrics: expected 2D masks, got shape {pred.shape}")
    o = Overlap.of(pred, ref)
    d = surface_distances(pred, ref, spacing)
    avd = average_distance(pred, ref, spacing)
    mp, mr = measure_mask(pred, spacing, "uls23"), measure_mask(ref, spacing, "uls23")
    ep, er = measure_mask(pred, spacing, "edge"), measure_mask(ref, spacing, "edge")
    kp, kr = (ep, er) if recist_convention == "edge" else (mp, mr)
    rl, rs = float(recist_long_mm), float(recist_short_mm)
    return LesionMetrics(
        tp=o.tp, fp=o.fp, fn=o.fn, pred_empty=mp.components == 0, ref_empty=mr.components == 0,
        precision=o.precision, recall=o.recall, dice=o.dice, vs=volumetric_similarity(o),
        avg_hd_mm=d.avg_hd_mm, hd95_mm=d.hd95_mm, hd95_max_directed_mm=d.hd95_max_directed_mm, hd_mm=d.hd_mm,
        avd_mm=avd.avd_mm, avd_mean_mm=avd.avd_mean_mm,
        pred_area_mm2=mp.total_area_mm2, ref_area_mm2=mr.total_area_mm2,
        pred_long_mm=mp.long_mm, pred_short_mm=mp.short_mm, pred_components=mp.components,
        ref_long_mm=mr.long_mm, ref_short_mm=mr.short_mm, ref_components=mr.components,
        long_err=axis_error(mp.long_mm, mr.long_mm), short_err=axis_error(mp.short_mm, mr.short_mm),
        pred_long_edge_mm=ep.long_mm, pred_short_edge_mm=ep.short_mm,
        ref_long_edge_mm=er.long_mm, ref_short_edge_mm=er.short_mm,
        long_err_edge=axis_error(ep.long_mm, er.long_mm), short_err_edge=axis_error(ep.short_mm, er.short_mm),
        recist_long_mm=rl, recist_short_mm=rs,
        pred_long_err_recist=axis_error(kp.long_mm, rl), pred_short_err_recist=axis_error(kp.short_mm, rs),
        ref_long_err_recist=axis_error(kr.long_mm, rl), ref_short_err_recist=axis_error(kr.short_mm, rs),
    )
