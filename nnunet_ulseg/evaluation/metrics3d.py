"""Per-lesion 3D metrics and the per-offset Dice curve (WSSS Sec. 4, Table 5, Fig. 4).

WSSS scores its volumes with Dice, volumetric similarity and Taha & Hanbury's averaged
Hausdorff distance (Sec. 4 "Evaluation", Table 5) and plots Dice against the axial slice
distance to the RECIST slice (Fig. 4).  The definitions are those of the 2D metrics
(:mod:`.overlap`, :mod:`.metrics`, :mod:`.distances`), taken to ``[z, y, x]`` masks with
spacing ``(x, y, z)`` mm (:class:`nnunet_ulseg.conversion.geometry3d.Stack3D`):

* ``dice = 2TP / (2TP + FP + FN)``, ``vs = 1 - |FN - FP| / (2TP + FP + FN)`` over voxels
  (both empty: 1, as in 2D), precision and recall (NaN when undefined);
* ``avd_mm``: Taha & Hanbury's AVD, ``max(d(P, R), d(R, P))`` with ``d(A, B)`` the mean
  over every foreground voxel of A of the Euclidean mm distance to the nearest foreground
  voxel of B (voxels inside B count 0), from :func:`scipy.ndimage.distance_transform_edt`
  with ``sampling = (sz, sy, sx)``, so anisotropic voxels (5 mm slices, 0.8 mm pixels) are
  exact; ``avd_mean_mm`` their mean (EvaluateSegmentation's ``AVGDIST``).  The 2D functions
  in :mod:`.distances` are not changed; on a one-slice stack the two agree (tested).  NaN
  when either mask is empty;
* ``volume_mm3`` = voxel count x ``sx * sy * sz`` for prediction and reference;
* the per-offset curve (:func:`dice_by_offset`): for every slice of the aligned stacks, its
  signed offset ``index - key_slice`` (slices) and ``offset * sz`` (mm), the 2D Dice of
  that slice and both areas.  Fig. 4's x-axis is the unsigned voxel distance, which
  :func:`offset_curve` averages over lesions (``absolute=True``) or keeps signed.

Choices where the paper is silent, for the curve: a slice where both masks are empty is
left out (Dice 1 there would reward nothing); a slice where only the prediction has lesion
is kept with Dice 0 and ``ref_voxels = 0`` (a leak beyond the lesion's extent costs), but
:func:`offset_curve` averages over slices with a non-empty reference unless
``include_empty_reference``, since the paper's mDICE at offset d is taken over lesion
slices at that distance.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_ulseg.conversion.geometry3d import Stack3D, align_stacks, check_spacing3d
from nnunet_ulseg.evaluation.distances import AverageDistance
from nnunet_ulseg.evaluation.metrics import volumetric_similarity
from nnunet_ulseg.evaluation.overlap import Overlap

NAN = float("nan")


def _checked3d(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]):
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim != 3:
        raise ValueError(f"expected [z, y, x] masks, got shape {pred.shape}")
    return pred, ref, check_spacing3d(spacing)


def directed_average_distance_3d(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean over the foreground voxels of ``a`` of the mm distance to the nearest foreground voxel of ``b``.

    ``spacing`` is ``(x, y, z)``.  Voxels of ``a`` inside ``b`` count 0.  NaN when ``a`` is
    empty, inf when only ``b`` is (as :func:`.distances.directed_average_distance`).
    """
    a, b, (sx, sy, sz) = _checked3d(a, b, spacing)
    if not a.any():
        return NAN
    if not b.any():
        return float("inf")
    return float(ndimage.distance_transform_edt(~b, sampling=(sz, sy, sx))[a].mean())


def average_distance_3d(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> AverageDistance:
    """Taha & Hanbury's AVD (max of the directed means) and its mean variant between two 3D masks, mm."""
    pred, ref, spacing = _checked3d(pred, ref, spacing)
    if not pred.any() or not ref.any():
        return AverageDistance(NAN, NAN, NAN, NAN)
    d_pr = directed_average_distance_3d(pred, ref, spacing)
    d_rp = directed_average_distance_3d(ref, pred, spacing)
    return AverageDistance(max(d_pr, d_rp), 0.5 * (d_pr + d_rp), d_pr, d_rp)


def volume_mm3(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Voxel count x voxel volume ``sx * sy * sz`` (mm³) of a 3D mask."""
    sx, sy, sz = check_spacing3d(spacing)
    return float(np.count_nonzero(mask)) * sx * sy * sz


@dataclass(frozen=True)
class LesionMetrics3D:
    """The 3D record of one lesion (module docstring)."""

    dice_3d: float
    vs_3d: float
    precision_3d: float
    recall_3d: float
    avd_3d_mm: float
    avd_mean_3d_mm: float
    pred_volume_mm3: float
    ref_volume_mm3: float
    tp_voxels: int
    fp_voxels: int
    fn_voxels: int
    #: slices (z) with reference / predicted lesion
    ref_slices: int
    pred_slices: int

    def as_dict(self) -> dict:
        return asdict(self)


def lesion_metrics_3d(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> LesionMetrics3D:
    """Dice, VS, precision, recall, AVD and volumes of two ``[z, y, x]`` masks in one geometry."""
    pred, ref, spacing = _checked3d(pred, ref, spacing)
    o = Overlap.of(pred, ref)
    d = average_distance_3d(pred, ref, spacing)
    return LesionMetrics3D(
        dice_3d=o.dice, vs_3d=volumetric_similarity(o), precision_3d=o.precision, recall_3d=o.recall,
        avd_3d_mm=d.avd_mm, avd_mean_3d_mm=d.avd_mean_mm,
        pred_volume_mm3=volume_mm3(pred, spacing), ref_volume_mm3=volume_mm3(ref, spacing),
        tp_voxels=o.tp, fp_voxels=o.fp, fn_voxels=o.fn,
        ref_slices=int(ref.any(axis=(1, 2)).sum()), pred_slices=int(pred.any(axis=(1, 2)).sum()))


def stack_metrics(pred: Stack3D, ref: Stack3D) -> LesionMetrics3D:
    """:func:`lesion_metrics_3d` of two stacks of one lesion, aligned by slice index (:func:`align_stacks`)."""
    p, r, _ = align_stacks(pred, ref)
    return lesion_metrics_3d(p, r, ref.spacing)


@dataclass(frozen=True)
class OffsetDice:
    """One slice of the per-offset curve."""

    slice_index: int
    offset: int
    offset_mm: float
    dice: float
    ref_voxels: int
    pred_voxels: int


def dice_by_offset(pred: Stack3D, ref: Stack3D) -> list[OffsetDice]:
    """Per-slice 2D Dice of one lesion against its slice offset from the key slice (WSSS Fig. 4).

    Slices where both stacks are empty are left out (module docstring).
    """
    p, r, first = align_stacks(pred, ref)
    sz = float(ref.spacing[2])
    out = []
    for k in range(p.shape[0]):
        o = Overlap.of(p[k], r[k])
        if o.tp + o.fp + o.fn == 0:
            continue
        offset = first + k - ref.key_slice
        out.append(OffsetDice(first + k, offset, offset * sz, o.dice, o.tp + o.fn, o.tp + o.fp))
    return out


def offset_curve(curves: Iterable[Sequence[OffsetDice]], absolute: bool = True,
                 include_empty_reference: bool = False) -> list[dict]:
    """Mean Dice over lesions at each offset (Fig. 4): rows ``offset``, ``mean_dice``, ``n``, ``mean_offset_mm``.

    ``absolute``: group by ``|offset|`` (Fig. 4's "voxel distance"), else by signed offset.
    ``mean_offset_mm``: the mean mm distance of the grouped slices (series differ in slice
    interval, so one offset in slices is several distances in mm); unsigned when
    ``absolute``.  Sorted by offset.
    """
    groups: dict[int, list[tuple[float, float]]] = {}
    for curve in curves:
        for s in curve:
            if s.ref_voxels == 0 and not include_empty_reference:
                continue
            key = abs(s.offset) if absolute else s.offset
            groups.setdefault(key, []).append((s.dice, abs(s.offset_mm) if absolute else s.offset_mm))
    rows = []
    for key in sorted(groups):
        v = np.asarray(groups[key], dtype=np.float64)
        rows.append({"offset": key, "mean_dice": float(v[:, 0].mean()), "n": int(len(v)),
                     "mean_offset_mm": float(v[:, 1].mean())})
    return rows


def recist_ellipsoid_volume(long_mm: float, short_mm: float) -> float:
    """WSSS Sec. 4.1 (Fig. 7)'s RECIST volume estimate, the ellipsoid ``pi * L * S² / 6`` (mm³)."""
    long_mm, short_mm = float(long_mm), float(short_mm)
    if not (math.isfinite(long_mm) and math.isfinite(short_mm)):
        return NAN
    return math.pi * long_mm * short_mm ** 2 / 6.0
