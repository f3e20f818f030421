"""GrabCut refinement of a lesion mask from a CNN output and the RECIST mark ("CNN-GC").

WSSS (``papers/wsss_self_paced_3d.txt``) Sec. 3.3 "Trimap from CNN Output" and Table 2
"CNN-GC": GrabCut (OpenCV's, Rother et al.) initialised from the CNN's mask and the RECIST
axes refines the lesion boundary with the image itself.  At inference the mark is always
at hand, so this is a post-processing a user can always run (``postprocess.py``, mode
``mark-grabcut``).

Trimap (four regions, as the paper's; the paper works with probabilities, nnU-Net exports
label maps, so "high probability" becomes "inside the predicted mask"):

* **FG**: the RECIST axes (they are chords of the lesion) and the core of the predicted
  mask: the mask eroded by 15 % of its equivalent side (``sqrt(area)``), at least 1 px;
* **PFG**: the rest of the predicted mask;
* **PBG**: the RECIST ellipse scaled by 2 about its centre (the region I' of the level-set
  loss, AHRNet Sec. 2.2; it contains the lesion's long x short box) outside the mask;
* **BG**: everything else (the paper: the outer part of a [2w, 2h] ROI around the mark).

Choices where the paper is silent:

* Intensities: the crop's HU mapped linearly to 0..255 with the lesion's DICOM window
  (``DICOM_windows`` in DL_info.csv, recorded in ``lesions.csv``), clipped; the three colour
  channels GrabCut wants are that grey image.  5 iterations (OpenCV's examples use 5; the
  energy changes little after that on 64-256 px crops).
* The paper's axis clamp ("the long/short axes of R roughly clamp the size") becomes an
  acceptance test, as ULS23 selects its GrabCut candidates: the refined mask's largest
  component must reproduce the mark's axes, ULS23's symmetric error
  ``|a - b| / (a + b)`` at most :data:`AXIS_TOLERANCE` = 0.15 for both the long and the
  short axis (a length ratio up to 1.35: wider than the ~10-20 % inter-reader variability of
  RECIST, narrower than a collapse to a blob or a leak into an organ).  Otherwise GrabCut
  collapsed or exploded and the input mask is returned unchanged, with ``accepted=False``.
* An empty input mask uses the RECIST ellipse as its mask (the paper: "we generate T solely
  from the estimated RECIST" when the CNN finds nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from nnunet_ulseg.pseudo_masks.update import scale_about_centroid
from nnunet_ulseg.recist import Recist, ellipse_mask, mask_axes, symmetric_error

#: largest ULS23 axis error (long and short) of an accepted GrabCut result
AXIS_TOLERANCE = 0.15
#: GrabCut iterations
ITERATIONS = 5
#: FG core: the mask eroded by this fraction of sqrt(mask area)
CORE_EROSION = 0.15


@dataclass(frozen=True)
class GrabCutResult:
    mask: np.ndarray
    accepted: bool
    long_err: float
    short_err: float


def window_to_uint8(image_hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU -> 0..255 with the display window ``(min, max)``, clipped (uint8)."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must have max > min, got {window}")
    scaled = (np.asarray(image_hu, np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def cnn_trimap(mask: np.ndarray, recist: Recist, axes: np.ndarray) -> np.ndarray:
    """OpenCV GrabCut labels (GC_BGD/GC_FGD/GC_PR_BGD/GC_PR_FGD) of the module docstring's trimap.

    ``mask``: bool prediction (non-empty); ``axes``: bool pixels of the rasterised RECIST axes.
    """
    e = ellipse_mask(recist, mask.shape).astype(bool)
    labels = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    labels[scale_about_centroid(e if e.any() else mask, 2.0)] = cv2.GC_PR_BGD
    labels[mask] = cv2.GC_PR_FGD
    steps = max(1, int(CORE_EROSION * np.sqrt(mask.sum())))
    core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=steps).astype(bool)
    labels[core | axes] = cv2.GC_FGD
    return labels


def mark_axis_errors(mask: np.ndarray, recist: Recist) -> tuple[float, float]:
    """ULS23 axis errors of the largest component of ``mask`` against the mark (pixel units); 1.0 if empty."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return 1.0, 1.0
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    axes = mask_axes(largest)
    p = np.asarray(recist.points, np.float64).reshape(4, 2)
    long_px, short_px = float(np.hypot(*(p[1] - p[0]))), float(np.hypot(*(p[3] - p[2])))
    return symmetric_error(axes.long_mm, long_px), symmetric_error(axes.short_mm, short_px)


def grabcut_refine(mask: np.ndarray, image_hu: np.ndarray, recist: Recist, window: tuple[float, float],
                   axes: np.ndarray, tolerance: float = AXIS_TOLERANCE) -> GrabCutResult:
    """CNN-GC of one crop: GrabCut from :func:`cnn_trimap`, accepted only if it keeps the mark's axes.

    ``mask`` bool (an empty one is replaced by the RECIST ellipse), ``image_hu`` the crop's HU
    (same shape), ``recist`` the mark in the crop's pixel coordinates, ``window`` the DICOM
    window, ``axes`` the rasterised axes (bool).  Returns the refined mask, or the input mask
    with ``accepted=False`` (see the module docstring).
    """
    mask = np.asarray(mask, bool)
    image_hu = np.asarray(image_hu)
    if image_hu.shape != mask.shape:
        raise ValueError(f"image shape {image_hu.shape} differs from mask shape {mask.shape}")
    if not mask.any():
        mask = ellipse_mask(recist, mask.shape).astype(bool)
        if not mask.any():
            return GrabCutResult(mask, False, 1.0, 1.0)
    grey = window_to_uint8(image_hu, window)
    labels = cnn_trimap(mask, recist, np.asarray(axes, bool))
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation draws from OpenCV's RNG: same input, same mask
    try:
        cv2.grabCut(cv2.merge([grey, grey, grey]), labels, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate trimap (e.g. no background sample left): keep the input
        return GrabCutResult(mask, False, 1.0, 1.0)
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    long_err, short_err = mark_axis_errors(refined, recist)
    if max(long_err, short_err) > tolerance:
        return GrabCutResult(mask, False, long_err, short_err)
    return GrabCutResult(refined, True, long_err, short_err)


def run_grabcut(grey: np.ndarray, labels: np.ndarray, rect: tuple[slice, slice] | None = None) -> np.ndarray | None:
    """OpenCV GrabCut from the trimap ``labels`` (GC_* values) on the uint8 ``grey`` image; bool foreground.

    Shared by CNN-GC's pieces and the RECIST trimap makers (:mod:`.grabcut_r`, :mod:`.table1`):
    ``rect`` (``(rows, cols)`` slices) restricts GrabCut to a window of the image, the
    paper's ROI (WSSS Sec. 3.1: "a [2w, 2h] ROI is cropped from the RECIST-slice");
    pixels outside it are background.  :data:`ITERATIONS` iterations, OpenCV's RNG
    seeded so the same input gives the same mask.  ``None`` when OpenCV refuses the
    trimap (no foreground or no background sample).
    """
    grey = np.asarray(grey, np.uint8)
    out = np.zeros(labels.shape, bool)
    rows, cols = rect if rect is not None else (slice(None), slice(None))
    window = np.ascontiguousarray(labels[rows, cols], dtype=np.uint8)
    if window.size == 0:
        return None
    image = np.ascontiguousarray(grey[rows, cols])
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(cv2.merge([image, image, image]), window, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    out[rows, cols] = (window == cv2.GC_FGD) | (window == cv2.GC_PR_FGD)
    return out
