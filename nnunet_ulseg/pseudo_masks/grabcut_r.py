"""GrabCut-R: the RECIST-slice pseudo mask of WSSS Sec. 3.1 (Algorithm 1 line 2, Table 1 "GrabCut-R").

"If the lesion bounding box tightly around the RECIST axes is [w, h], a [2w, 2h] ROI is
cropped from the RECIST-slice.  The trimap assigns the outer 50% as BG and allocates 10% of
the image region, dilated from R as FG.  The remaining 40% is divided in half between PFG
and PBG based on the distances to FG and BG.  Finally, the long/short axes of R roughly
clamp the size of GrabCut segmentation."  GrabCut is OpenCV's (:func:`.grabcut.run_grabcut`).

What we implement, exactly (:func:`grabcut_r_trimap`):

* ``[w, h]``: the tight box of the four endpoints in the long axis' frame
  (:class:`.mark_frame.MarkFrame`, oriented with the mark; why there).  ROI: the pixels
  whose centres lie in that box scaled by 2 about its centre (``2w x 2h``, area ``4wh``).
  The percentages are of the ROI's **pixel count** ``N`` ("10% of the image region": the
  ROI is the image GrabCut sees).  Pixels outside the ROI are BG too.
* **FG** (10 %): the ``round(0.1 N)`` ROI pixels nearest the axes by the *band* distance
  (perpendicular distance to an axis, only where the pixel projects onto it: a dilation
  of R that stops at the endpoints, :func:`.mark_frame.axis_distances`), plus every pixel
  whose centre lies within 0.5 px of an axis, so R itself is always FG (tiny marks).
* **PFG** (20 %) and **PBG** (20 %): the other ROI pixels ranked by Euclidean distance to
  the axes; up to ``round(0.3 N)`` pixels in FG + PFG, the next ``round(0.5 N) - round(0.3 N)``
  PBG.  A single distance to R orders "closer to FG" before "closer to BG", because both
  FG and BG are level sets of the distance to R; it makes the halves exact.
* **BG** (50 %): the rest of the ROI, the pixels farthest from R.

Intensities: the crop's HU with the lesion's DICOM window (``DICOM_windows`` of
DL_info.csv; WSSS Sec. 4: "intensity-windowed properly using the CT windowing
meta-information"), :func:`.grabcut.window_to_uint8`.  A row whose window is missing or
unusable (DL_info.csv reads an unparsable ``DICOM_windows`` as NaN; or max <= min) gets
:data:`DEFAULT_WINDOW`, DeepLesion's most common (soft-tissue) window, instead of failing.  GrabCut runs on the ROI's
image-aligned bounding rectangle only.

The axis clamp, both ways:

* *cannot shrink*: R is hard FG, so the result always covers the axes' full lengths, even
  on homogeneous tissue with no boundary (the paper's reason for the clamp);
* *cannot run away*: the result (the connected component(s) of GrabCut's foreground
  that touch R, holes filled) is accepted only when its area is within
  :data:`AREA_RANGE` = [0.6, 2.0] x the RECIST ellipse's area and ULS23's symmetric axis
  error ``|a - b| / (a + b)`` of its largest component against the mark is at most
  :data:`AXIS_TOLERANCE` = 0.2 for both axes (a length ratio up to 1.5).  Otherwise the
  result is a collapse (area below 0.6 x ellipse: GrabCut kept little more than the FG
  band, which is 0.51 x the ellipse for a round mark) or an explosion (it ran into the
  PBG ring; the most it can take, FG + PFG + PBG, is 2.55 x the ellipse), and the maker
  falls back to the RECIST ellipse (status ``fallback_ellipse``, with the reason).  An
  OpenCV refusal falls back the same way.  The bounds were set from the geometry above
  and from development corpora of :func:`nnunet_ulseg.demo.make_sample` seeds 1 and 2,
  never from the benchmark's seed 23.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from nnunet_ulseg.labels import LESION
from nnunet_ulseg.pseudo_masks.grabcut import mark_axis_errors, run_grabcut, window_to_uint8
from nnunet_ulseg.pseudo_masks.mark_frame import MarkFrame, axis_distances, nearest_pixels
from nnunet_ulseg.recist import Recist, ellipse_mask

#: ROI = the tight box scaled by this (the paper's [2w, 2h])
ROI_SCALE = 2.0
#: cumulative fractions of the ROI's pixels: FG, FG + PFG, FG + PFG + PBG (the rest is BG)
FRACTIONS = (0.10, 0.30, 0.50)
#: accepted result area, as a multiple of the RECIST ellipse's area
AREA_RANGE = (0.6, 2.0)
#: largest ULS23 axis error (long and short) of an accepted result
AXIS_TOLERANCE = 0.2

#: window used when the row's DICOM window is missing or unusable
DEFAULT_WINDOW = (-175.0, 275.0)

STATUS_OK = "ok"
STATUS_FALLBACK = "fallback_ellipse"


@dataclass(frozen=True)
class GrabCutRResult:
    """The mask (bool), ``status`` (``ok`` / ``fallback_ellipse``) and why (``""``, ``collapse``,
    ``explosion``, ``axes``, ``grabcut_error``), with the measured area ratio and axis errors."""

    mask: np.ndarray
    status: str
    reason: str = ""
    area_ratio: float = float("nan")
    long_err: float = float("nan")
    short_err: float = float("nan")


def grabcut_r_trimap(recist: Recist, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, roi)``: the four-region trimap (OpenCV GC_* values) and the ROI mask (module docstring)."""
    frame = MarkFrame.of(recist)
    roi = frame.box(shape, ROI_SCALE)
    euclid, band = axis_distances(recist, shape)
    n = int(roi.sum())
    n_fg, n_pfg, n_pbg = (int(round(f * n)) for f in FRACTIONS)
    fg = nearest_pixels(roi, n_fg, band, tie=euclid) | (euclid <= 0.5)
    rest = roi & ~fg
    pfg = nearest_pixels(rest, n_pfg - int((fg & roi).sum()), euclid)
    pbg = nearest_pixels(rest & ~pfg, n_pbg - n_pfg, euclid)
    labels = np.full(tuple(shape), cv2.GC_BGD, np.uint8)
    labels[pbg] = cv2.GC_PR_BGD
    labels[pfg] = cv2.GC_PR_FGD
    labels[fg] = cv2.GC_FGD
    return labels, roi


def _touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``mask`` that contain a ``seed`` pixel, holes filled."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    keep = np.unique(labels[seed & mask])
    keep = keep[keep > 0]
    return ndimage.binary_fill_holes(np.isin(labels, keep))


def usable_window(window) -> tuple[float, float]:
    """``window`` as ``(min, max)`` floats, or :data:`DEFAULT_WINDOW` when it is missing, not finite or empty."""
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        return DEFAULT_WINDOW
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) and hi > lo else DEFAULT_WINDOW


def grabcut_r(recist: Recist, image_hu: np.ndarray, window: tuple[float, float]) -> GrabCutRResult:
    """GrabCut-R of one crop (module docstring): ``recist`` in the crop's pixels, ``image_hu`` its HU."""
    image_hu = np.asarray(image_hu)
    shape = image_hu.shape
    ellipse = ellipse_mask(recist, shape).astype(bool)
    grey = window_to_uint8(image_hu, usable_window(window))
    labels, _ = grabcut_r_trimap(recist, shape)
    hard = labels == cv2.GC_FGD
    found = run_grabcut(grey, labels, MarkFrame.of(recist).bounding_rect(shape, ROI_SCALE))
    if found is None:
        return GrabCutRResult(ellipse, STATUS_FALLBACK, "grabcut_error")
    mask = _touching(found | hard, hard)
    ratio = float(mask.sum()) / max(1, int(ellipse.sum()))
    long_err, short_err = mark_axis_errors(mask, recist)
    reason = ("collapse" if ratio < AREA_RANGE[0] else "explosion" if ratio > AREA_RANGE[1]
              else "axes" if max(long_err, short_err) > AXIS_TOLERANCE else "")
    if reason:
        return GrabCutRResult(ellipse, STATUS_FALLBACK, reason, ratio, long_err, short_err)
    return GrabCutRResult(mask, STATUS_OK, "", ratio, long_err, short_err)


def make_grabcut_r(recist_crop_points, crop_hu_image: np.ndarray, shape: tuple[int, int],
                   window: tuple[float, float]) -> tuple[np.ndarray, str]:
    """Registry maker ``grabcut``: GrabCut-R as a uint8 label (0/1) and its status."""
    image = _checked_image(crop_hu_image, shape, "grabcut")
    result = grabcut_r(Recist.from_points(recist_crop_points), image, window)
    return result.mask.astype(np.uint8) * np.uint8(LESION), result.status


def _checked_image(image, shape: tuple[int, int], name: str) -> np.ndarray:
    """The crop HU image as a 2D array of ``shape``; ``ValueError`` naming the maker otherwise."""
    if image is None:
        raise ValueError(f"pseudo mask {name!r} needs the crop's HU image")
    image = np.asarray(image)
    if image.shape != tuple(shape):
        raise ValueError(f"pseudo mask {name!r}: crop image shape {image.shape} differs from the label shape "
                         f"{tuple(shape)}")
    return image
