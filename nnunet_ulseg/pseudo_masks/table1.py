"""The cheap RECIST pseudo-mask baselines of WSSS Table 1 (Sec. 4, "Label Map Initializations").

"Both alternatives are based on a tight bounding box (bbox), which matches the extent of
the lesion RECIST marks with 25% padding (against the lesion's spatial extent).  The first
alternative (GrabCut), sets the area outside bbox as background and area inside bbox as
probable foreground.  The second alternative (GrabCut^i) sets the central 20% bbox region
as foreground, regions outside the bbox as background, and the rest as uncertain. [...]
we also report results when we directly use the RECIST diameters, but dilated to 20% of
bbox area."  DCRF is not reproduced (it needs a dense-CRF package the product does not
depend on).

Implemented as (same geometry as GrabCut-R, :mod:`.grabcut_r`, so Table 1 compares trimaps,
not boxes):

* bbox: the mark's tight box in its own frame (:class:`.mark_frame.MarkFrame`) scaled by
  1.25 about its centre ("25% padding" of the extent, i.e. sides ``1.25 w x 1.25 h``);
* ``dilated_recist``: the ``round(0.2 |bbox|)`` bbox pixels nearest the axes by the band
  distance (a dilation of R that stops at the endpoints), plus R itself; no GrabCut;
* ``grabcut_box``: BG outside bbox, PFG inside (the paper's "probable foreground");
* ``grabcut_i``: FG the central 20 % of bbox (the box scaled by ``sqrt(0.2)``, 20 % of its
  area, as ``bbox^i`` of Khoreva et al.), BG outside bbox, the rest uncertain, given to
  OpenCV as probable foreground (GrabCut's own reading of "inside the box, unknown").

The GrabCut baselines run on the same window as GrabCut-R (the ``[2w, 2h]`` ROI's
bounding rectangle, the lesion's DICOM window, :func:`.grabcut_r.usable_window`) and keep GrabCut's raw foreground: no
component selection, no axis clamp, no fallback, because Table 1 measures the
initialisations as they are.  Status ``ok``; ``empty`` when GrabCut kept nothing;
``grabcut_error`` (empty mask) when OpenCV refused the trimap.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from nnunet_ulseg.labels import LESION
from nnunet_ulseg.pseudo_masks.grabcut import run_grabcut, window_to_uint8
from nnunet_ulseg.pseudo_masks.grabcut_r import ROI_SCALE, _checked_image, usable_window
from nnunet_ulseg.pseudo_masks.mark_frame import MarkFrame, axis_distances, nearest_pixels
from nnunet_ulseg.recist import Recist

#: bbox = the tight box scaled by this ("25% padding")
BBOX_SCALE = 1.25
#: dilated RECIST: this fraction of the bbox area
DILATED_FRACTION = 0.20
#: GrabCut^i: the central region holding this fraction of the bbox area is FG
INNER_FRACTION = 0.20


def dilated_recist(recist: Recist, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask: the axes dilated (band distance) to :data:`DILATED_FRACTION` of the bbox's pixels."""
    bbox = MarkFrame.of(recist).box(shape, BBOX_SCALE)
    euclid, band = axis_distances(recist, shape)
    return nearest_pixels(bbox, int(round(DILATED_FRACTION * bbox.sum())), band, tie=euclid) | (euclid <= 0.5)


def box_trimap(recist: Recist, shape: tuple[int, int], inner: bool) -> np.ndarray:
    """GC_* labels of ``grabcut_box`` (``inner=False``) or ``grabcut_i`` (``inner=True``)."""
    frame = MarkFrame.of(recist)
    labels = np.full(tuple(shape), cv2.GC_BGD, np.uint8)
    labels[frame.box(shape, BBOX_SCALE)] = cv2.GC_PR_FGD
    if inner:
        labels[frame.box(shape, BBOX_SCALE * math.sqrt(INNER_FRACTION))] = cv2.GC_FGD
    return labels


def _box_grabcut(recist_crop_points, crop_hu_image, shape, window, inner: bool, name: str) -> tuple[np.ndarray, str]:
    image = _checked_image(crop_hu_image, shape, name)
    recist = Recist.from_points(recist_crop_points)
    found = run_grabcut(window_to_uint8(image, usable_window(window)), box_trimap(recist, shape, inner),
                        MarkFrame.of(recist).bounding_rect(shape, ROI_SCALE))
    if found is None:
        return np.zeros(tuple(shape), np.uint8), "grabcut_error"
    return found.astype(np.uint8) * np.uint8(LESION), "ok" if found.any() else "empty"


def make_dilated_recist(recist_crop_points, crop_hu_image, shape, window) -> tuple[np.ndarray, str]:
    """Registry maker ``dilated_recist`` (the image is not used)."""
    mask = dilated_recist(Recist.from_points(recist_crop_points), tuple(shape))
    return mask.astype(np.uint8) * np.uint8(LESION), "ok"


def make_grabcut_box(recist_crop_points, crop_hu_image, shape, window) -> tuple[np.ndarray, str]:
    """Registry maker ``grabcut_box``: GrabCut from the padded RECIST box."""
    return _box_grabcut(recist_crop_points, crop_hu_image, shape, window, False, "grabcut_box")


def make_grabcut_i(recist_crop_points, crop_hu_image, shape, window) -> tuple[np.ndarray, str]:
    """Registry maker ``grabcut_i``: GrabCut^i, the box with its central 20 % as FG."""
    return _box_grabcut(recist_crop_points, crop_hu_image, shape, window, True, "grabcut_i")
