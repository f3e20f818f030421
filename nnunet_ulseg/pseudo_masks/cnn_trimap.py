"""Training masks of off-key slices from a CNN probability map and the estimated RECIST (WSSS Sec. 3.3).

WSSS (``papers/wsss_self_paced_3d.txt``) Sec. 3.3 "Trimap from CNN Output" and Algorithm 1
line 9-10: on slice ``r + τ`` the trimap ``T̂ = trimap(Ŷ, R̂, R)`` is built from the CNN's
probability map ``Ŷ`` and the estimated mark ``R̂`` (``recist3d.py``), and
``Y = GrabCut(T̂, X)`` becomes that slice's training mask in the next round.  Here
``R`` on an off-key slice is its estimate ``R̂``: the key slice's own axes do not lie on it.

Steps, with the choices where the paper is silent:

1. **Threshold** (:func:`adjusted_threshold`): "Ŷ is first binarized by adjusting the
   threshold so that it covers at least 50% of R's pixels".  R's pixels are the rasterised
   axes (:func:`axis_pixels`).  The threshold starts at 0.5 (the argmax decision of a
   two-class softmax) and is only lowered: it is the largest ``t <= 0.5`` with
   ``p >= t`` on at least :data:`MIN_COVERAGE` of the axis pixels, computed exactly as the
   ``ceil(n / 2)``-th largest probability on the ``n`` axis pixels (no step size to choose).
2. **CNN failure**: "where the CNN fails to detect any foreground regions, we generate T̂
   solely from R̂".  The CNN is taken to have failed when that threshold would fall below
   :data:`MIN_THRESHOLD` = 0.1 (a pixel the softmax calls background 9 : 1 is no detection);
   the trimap is then the same rule with an empty prediction (FG the axes, uncertain the
   estimated region, BG outside it).
3. **Regions**, with ``B = p >= t`` and ``E`` the estimated region (the ellipse of ``R̂``,
   :func:`~nnunet_ulseg.pseudo_masks.recist3d.estimated_region`): FG = ``(B ∩ E) ∪ axes``
   ("high foreground probability and overlap with R ... FG together with R"); BG =
   ``not B and not E`` ("high background probabilities and no overlap with R"); uncertain =
   the rest, i.e. where the CNN and the estimate disagree (``B xor E``).  This is the same
   partition as the paper's fallback (below), so GrabCut decides exactly where the two sources
   of evidence disagree.  Overlap is read pixel by pixel, the fallback's wording ("predicted
   foreground regions that overlap with R̂").
4. **PFG / PBG** (:func:`split_uncertain`): "the same distance criteria as in the 2D mask
   generation case", where the uncertain band "is divided in half between PFG and PBG based on
   the distances to FG and BG": the uncertain pixels are ranked by their relative position
   ``d_FG / (d_FG + d_BG)`` (Euclidean distances in mm with the in-plane spacing), and the
   half nearer to FG (``ceil(n / 2)`` pixels; ties by raster order) is PFG, the rest PBG.
5. **GrabCut**: OpenCV's ``cv2.grabCut`` with this mask (``GC_INIT_WITH_MASK``), on the CT
   slice in its DICOM window (:func:`~nnunet_ulseg.pseudo_masks.grabcut.window_to_uint8`),
   :data:`~nnunet_ulseg.pseudo_masks.grabcut.ITERATIONS` iterations, OpenCV's RNG seeded (its
   GMM initialisation draws from it): same input, same mask.  Of the result only the
   8-connected components holding a FG seed are kept: a RECIST mark names one lesion, so a
   blob GrabCut grows from a stray CNN detection elsewhere is not it (``update.py`` keeps only
   components touching the ellipse for the same reason).
6. **Fallback**: "it is possible that GrabCut gives no or very few foreground areas or pixels if
   the initial trimap and CT image are of bad quality.  In these cases ... CNN predicted
   foreground regions that overlap with R̂ are assigned as foreground; predicted background
   regions that have no overlap with RECIST are set as background; with the remaining pixels
   ignored".  That is the trimap of step 3 with FG -> lesion, BG -> background and the
   uncertain pixels -> ignore (labels from :mod:`nnunet_ulseg.labels`).  It is used when
   (status names): the windowed image has less than :data:`MIN_CONTRAST` grey levels of range
   (``fallback_no_contrast``: a flat slice, e.g. all of it outside the window, leaves GrabCut's
   colour models nothing to separate and its result would be the trimap's geometry only); the
   trimap has no BG pixel (``fallback_no_background``: the CNN called every pixel outside
   ``E`` lesion, so there is no background sample to fit GrabCut's background model on, and
   OpenCV 4 then returned the whole image on our synthetic slices); OpenCV raises (``fallback_grabcut_error``, defensive:
   no input of this module is known to trigger it); or the kept result is smaller than
   :data:`MIN_FG_FRACTION` of the estimated region's area (``fallback_too_small``: "very few
   foreground pixels"; a quarter of ``E`` is both semi-axes halved).

Limit of the rule (the paper's, kept): FG and BG are hard constraints for GrabCut, so an error
the CNN and the estimate make together (both call a pixel lesion, or both background) stays in
the result; GrabCut only decides where they disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage

from nnunet_ulseg.labels import BACKGROUND, IGNORE, LESION
from nnunet_ulseg.pseudo_masks.grabcut import ITERATIONS, window_to_uint8
from nnunet_ulseg.pseudo_masks.recist3d import estimate_recist, estimated_region
from nnunet_ulseg.recist import Recist, axis_pixels

#: the threshold starts here (argmax of a two-class softmax) and is only lowered
MAX_THRESHOLD = 0.5
#: below this adjusted threshold the CNN "fails to detect any foreground": trimap from R̂ alone
MIN_THRESHOLD = 0.1
#: fraction of R's (axis) pixels the binarised prediction must cover
MIN_COVERAGE = 0.5
#: GrabCut results smaller than this fraction of the estimated region's area are "very few" pixels
MIN_FG_FRACTION = 0.25
#: windowed images with a smaller grey-level range (uint8) are flat: no GrabCut
MIN_CONTRAST = 2
#: the statuses of :class:`CnnGrabCutResult`
STATUSES = ("grabcut", "fallback_no_contrast", "fallback_no_background", "fallback_grabcut_error",
            "fallback_too_small")

_EIGHT = np.ones((3, 3), bool)


def adjusted_threshold(prob: np.ndarray, axes: np.ndarray) -> tuple[float, float]:
    """``(t, coverage)``: the largest ``t <= 0.5`` with ``prob >= t`` on >= 50 % of the ``axes`` pixels.

    ``t`` is the ``ceil(n * MIN_COVERAGE)``-th largest probability on the ``n`` axis pixels when
    that is below 0.5, else 0.5; ``coverage`` is the covered fraction at ``t`` (>= 0.5 by
    construction).  Raises ``ValueError`` when no axis pixel lies in the image.
    """
    values = np.asarray(prob, dtype=np.float64)[np.asarray(axes, bool)]
    if values.size == 0:
        raise ValueError("the RECIST axes lie outside the probability map: no pixel of R to cover")
    k = int(math.ceil(MIN_COVERAGE * values.size))
    kth_largest = float(np.sort(values)[::-1][k - 1])
    t = min(MAX_THRESHOLD, kth_largest)
    return t, float(np.mean(values >= t))


def split_uncertain(uncertain: np.ndarray, fg: np.ndarray, bg: np.ndarray,
                    spacing_xy: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """The PFG half of ``uncertain`` (bool): its ``ceil(n / 2)`` pixels of smallest ``d_FG / (d_FG + d_BG)``.

    Distances are Euclidean in mm (``spacing_xy`` = ``(sx, sy)``) to the nearest FG and BG pixel;
    with no BG pixel every uncertain pixel counts as nearest to FG.  Ties go by raster order.
    """
    uncertain, fg, bg = (np.asarray(a, bool) for a in (uncertain, fg, bg))
    pfg = np.zeros_like(uncertain)
    n = int(uncertain.sum())
    if n == 0:
        return pfg
    sampling = (float(spacing_xy[1]), float(spacing_xy[0]))
    d_fg = ndimage.distance_transform_edt(~fg, sampling=sampling) if fg.any() else np.full(fg.shape, np.inf)
    d_bg = ndimage.distance_transform_edt(~bg, sampling=sampling) if bg.any() else np.full(bg.shape, np.inf)
    idx = np.flatnonzero(uncertain)
    a, b = d_fg.ravel()[idx], d_bg.ravel()[idx]
    with np.errstate(invalid="ignore"):
        score = np.where(np.isinf(b), 0.0, np.where(np.isinf(a), 1.0, a / (a + b)))
    order = np.lexsort((idx, score))
    pfg.ravel()[idx[order[: int(math.ceil(n / 2))]]] = True
    return pfg


@dataclass(frozen=True)
class CnnTrimap:
    """The four-region trimap (OpenCV codes ``GC_BGD``/``GC_FGD``/``GC_PR_BGD``/``GC_PR_FGD``) and how it was made.

    ``threshold``/``coverage`` from :func:`adjusted_threshold`; ``from_cnn`` is False when the CNN
    failed (threshold below :data:`MIN_THRESHOLD`) and the trimap comes from ``R̂`` alone.
    """

    labels: np.ndarray
    threshold: float
    coverage: float
    from_cnn: bool

    @property
    def fg(self) -> np.ndarray:
        return self.labels == cv2.GC_FGD

    @property
    def bg(self) -> np.ndarray:
        return self.labels == cv2.GC_BGD

    @property
    def uncertain(self) -> np.ndarray:
        return (self.labels == cv2.GC_PR_FGD) | (self.labels == cv2.GC_PR_BGD)


def _checked_prob(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"expected a 2D float probability map, got {p.dtype} array of shape {p.shape}")
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError("probability map values must be finite and in [0, 1]")
    return p


def trimap_from_cnn(prob: np.ndarray, recist_hat: Recist, spacing_xy: Sequence[float] = (1.0, 1.0)) -> CnnTrimap:
    """``T̂ = trimap(Ŷ, R̂)`` of the module docstring (steps 1-4) for one slice.

    ``prob``: 2D lesion probabilities of the slice (e.g. nnU-Net's softmax channel 1);
    ``recist_hat``: the estimated mark on that slice in the same pixel grid (from
    :func:`~nnunet_ulseg.pseudo_masks.recist3d.estimate_recist`; a slice where it is ``None`` is
    beyond the lesion's reach and has no trimap, so ``None`` is refused).
    """
    if not isinstance(recist_hat, Recist):
        raise ValueError("no RECIST estimate on this slice (beyond the lesion's reach): no trimap to build")
    p = _checked_prob(prob)
    axes = axis_pixels(recist_hat, p.shape)
    region = estimated_region(recist_hat, p.shape)
    t, coverage = adjusted_threshold(p, axes)
    from_cnn = t >= MIN_THRESHOLD
    predicted = p >= t if from_cnn else np.zeros(p.shape, bool)
    fg = (predicted & region) | axes
    bg = ~predicted & ~region & ~axes
    uncertain = ~fg & ~bg
    pfg = split_uncertain(uncertain, fg, bg, spacing_xy)
    labels = np.full(p.shape, cv2.GC_BGD, np.uint8)
    labels[uncertain] = cv2.GC_PR_BGD
    labels[pfg] = cv2.GC_PR_FGD
    labels[fg] = cv2.GC_FGD
    return CnnTrimap(labels, float(t), coverage, bool(from_cnn))


@dataclass(frozen=True)
class CnnGrabCutResult:
    """``labels``: uint8, 0/1 from GrabCut, or 0/1/2 for a fallback; ``status`` one of :data:`STATUSES`."""

    labels: np.ndarray
    status: str
    trimap: CnnTrimap

    @property
    def fallback(self) -> bool:
        return self.status != "grabcut"


def fallback_labels(trimap: CnnTrimap) -> np.ndarray:
    """The paper's fallback: trimap FG -> lesion, BG -> background, uncertain -> ignore."""
    out = np.full(trimap.labels.shape, IGNORE, np.uint8)
    out[trimap.fg] = LESION
    out[trimap.bg] = BACKGROUND
    return out


def grabcut_from_cnn(prob: np.ndarray, image_hu: np.ndarray, recist_hat: Recist, window: tuple[float, float],
                     spacing_xy: Sequence[float] = (1.0, 1.0),
                     min_fg_fraction: float = MIN_FG_FRACTION) -> CnnGrabCutResult:
    """``Y = GrabCut(trimap(Ŷ, R̂), X)`` for one slice, with the paper's fallback (module docstring, steps 5-6).

    ``image_hu``: the slice's HU (same shape as ``prob``); ``window``: its DICOM window
    ``(min, max)`` HU; ``spacing_xy``: in-plane mm, for the PFG/PBG distances.
    """
    trimap = trimap_from_cnn(prob, recist_hat, spacing_xy)
    image_hu = np.asarray(image_hu)
    if image_hu.shape != trimap.labels.shape:
        raise ValueError(f"image shape {image_hu.shape} differs from probability map shape {trimap.labels.shape}")
    grey = window_to_uint8(image_hu, window)
    if int(grey.max()) - int(grey.min()) < MIN_CONTRAST:
        return CnnGrabCutResult(fallback_labels(trimap), "fallback_no_contrast", trimap)
    if not trimap.bg.any():
        return CnnGrabCutResult(fallback_labels(trimap), "fallback_no_background", trimap)
    mask = trimap.labels.copy()
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(cv2.merge([grey, grey, grey]), mask, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # e.g. no BG sample left to fit a colour model
        return CnnGrabCutResult(fallback_labels(trimap), "fallback_grabcut_error", trimap)
    result = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    components, _ = ndimage.label(result, structure=_EIGHT)
    seeded = np.unique(components[trimap.fg & result])
    result = np.isin(components, seeded[seeded > 0])
    region_area = int(estimated_region(recist_hat, result.shape).sum())
    if result.sum() < min_fg_fraction * region_area:
        return CnnGrabCutResult(fallback_labels(trimap), "fallback_too_small", trimap)
    return CnnGrabCutResult(np.where(result, LESION, BACKGROUND).astype(np.uint8), "grabcut", trimap)


def off_key_slice_labels(recist: Recist, offset_mm: float, prob: np.ndarray, image_hu: np.ndarray,
                         window: tuple[float, float], spacing_xy: Sequence[float] = (1.0, 1.0),
                         mode: str = "ratio") -> CnnGrabCutResult | None:
    """Algorithm 1 lines 8-10 for one slice: ``R̂`` from the key-slice mark, then :func:`grabcut_from_cnn`.

    ``recist``: the key slice's mark in this slice's pixel grid (the same crop geometry);
    ``offset_mm``: the slice's distance from the key slice
    (:func:`~nnunet_ulseg.pseudo_masks.recist3d.slice_distance_mm`); ``mode``: the 3D RECIST
    reading (:data:`~nnunet_ulseg.pseudo_masks.recist3d.MODES`).  ``None`` when the estimate is
    empty there (beyond the lesion's reach): the slice gets no training mask from this rule.
    """
    recist_hat = estimate_recist(recist, offset_mm, spacing_xy, mode)
    if recist_hat is None:
        return None
    return grabcut_from_cnn(prob, image_hu, recist_hat, window, spacing_xy)
