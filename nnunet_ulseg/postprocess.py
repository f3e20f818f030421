"""Post-processing of a lesion prediction with the RECIST mark that found its crop.

At inference a user always has the mark that located the lesion (the crop is centred on
it), so a prediction can be cleaned with it: keep the connected component(s) the mark
crosses, fill their holes, and optionally clip them to a dilated RECIST ellipse.  The
ULS23 baseline does the same with less information (it keeps the component at the centre
of the VOI).  Everything here works on one 2D mask and the mark in the *same* pixel
coordinates (CONVENTIONS "Geometry": arrays ``[y, x]``, points ``(x, y)``, 0-based pixel
centres); callers in crop geometry use the sidecar's ``recist_crop``.

Choices and why:

* **Connectivity: 8** (a pixel's 8 neighbours).  A thin or diagonal part of a lesion, and
  a lesion boundary that the network resolves as a staircase, stay one object; the
  evaluation measures the RECIST axes of the largest *8-connected* component, so the two
  agree.  Holes are then the background regions that are not 4-connected to the image
  border (:func:`scipy.ndimage.binary_fill_holes` with its default cross structure), the
  dual connectivity of 8-connected foreground, so a diagonal gap in a ring does not leak.
* **Which components: those containing a pixel of the rasterised long or short axis**
  (:func:`mark_pixels`: every pixel whose centre is nearest to a point of a segment,
  sampled every 1/4 px, so the path is 8-connected and has no gaps).  By definition both
  RECIST diameters are chords of the lesion, so every true lesion pixel set crosses them;
  a component that touches neither is something else (another lesion, an organ edge).
  Mark pixels outside the mask (a mark reaching past the crop border) are dropped.
* **Fallback when no component is crossed** (an empty prediction or a miss), ``fallback``:
  ``"ellipse"`` (default): the RECIST ellipse itself (:func:`nnunet_ulseg.recist.ellipse_mask`,
  the round-1 pseudo mask).  A mark guarantees a lesion under it, so an empty result is
  certainly wrong, and a blob that misses both diameters has missed the lesion; the
  ellipse is the best estimate of it that we have.  ``"nearest"``: the component whose
  pixels come closest to the mark pixels (the ellipse if the prediction is empty), for
  comparison with the ULS23 centre-component rule; ``"empty"``: keep nothing (pure
  filtering, e.g. to count misses).
* **``within``**: the prediction is first clipped to the RECIST ellipse scaled by
  ``within`` about its centre (:func:`nnunet_ulseg.recist.ellipse_params` +
  :func:`~nnunet_ulseg.recist.rasterize_ellipse`); then components are selected, so a leak
  that leaves the ellipse and comes back in as a separate piece is dropped too; holes are
  filled last (and the result is clipped again, a no-op for a convex ellipse up to pixel
  rounding).  Default factor of mode ``"mark-ellipse"``: :data:`ELLIPSE_FACTOR` = 1.5.
  Because the long axis is the largest distance between two lesion points, the lesion's
  extent along it lies between its endpoints; across it the extent is about the short
  diameter.  So the lesion lies (nearly) in the box the two diameters span in the
  long-axis frame, and the smallest ellipse of the mark's shape containing that box is the
  mark's ellipse scaled by sqrt(2) = 1.41.  1.5 adds a margin for endpoints drawn a pixel
  inside the edge and short axes not drawn at the widest point, and stays tighter than
  the 2x region I' of the level-set loss (AHRNet Sec. 2.2), which is meant to contain the
  lesion *and* background around it.

Modes for the command lines (:data:`MODES`, :func:`postprocess_mask`): ``"none"``,
``"mark"`` (components + fill holes), ``"mark-ellipse"`` (the same clipped to the 1.5x
ellipse), ``"mark-grabcut"`` ("mark", then GrabCut initialised from that mask and the
RECIST axes, WSSS Sec. 3.3 / Table 2 "CNN-GC", kept only when it reproduces the mark's
axes, then "mark" again: :mod:`nnunet_ulseg.pseudo_masks.grabcut`; it needs the crop's
CT image and the lesion's DICOM window).  Everything is numpy/scipy, a few milliseconds for a 256 x 256 crop.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_ulseg.recist import Ellipse, Recist, axis_pixels, ellipse_mask, ellipse_params, rasterize_ellipse
from nnunet_ulseg.nnunet_layout import image_filename

#: Named post-processing modes of ``ulseg evaluate/refine/postprocess --postprocess``.
MODES = ("none", "mark", "mark-ellipse", "mark-grabcut")
#: modes that need the crop's image (CT intensities)
IMAGE_MODES = ("mark-grabcut",)
#: Scale of the RECIST ellipse that mode ``"mark-ellipse"`` clips to (module docstring).
ELLIPSE_FACTOR = 1.5
#: What :func:`keep_marked` keeps when no component is crossed by the mark.
FALLBACKS = ("ellipse", "nearest", "empty")
#: 8-connectivity structure for :func:`scipy.ndimage.label`.
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Kept:
    """Result of :func:`keep_marked_info`.

    ``status``: ``"marked"`` (components crossed by the mark were kept), ``"unchanged"``
    (mode ``none``), or the fallback used: ``"fallback_ellipse"``, ``"fallback_nearest"``,
    ``"fallback_empty"``.  ``components``: 8-connected components of the (clipped)
    prediction; ``kept``: how many were kept (0 for the ellipse fallback).
    """

    mask: np.ndarray
    status: str
    components: int
    kept: int

    @property
    def fallback(self) -> bool:
        return self.status.startswith("fallback_")


def as_recist(recist_points: Recist | Sequence[float] | np.ndarray) -> Recist:
    """A :class:`~nnunet_ulseg.recist.Recist` from a mark, 8 numbers or a ``(4, 2)`` array."""
    if isinstance(recist_points, Recist):
        return recist_points
    return Recist.from_points(recist_points)


def lesion_mask(mask: np.ndarray, lesion_label: int = 1) -> np.ndarray:
    """Boolean 2D lesion mask: a bool array as it is, a label map ``== lesion_label``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    return mask.copy() if mask.dtype == bool else mask == lesion_label


def mark_pixels(recist: Recist | Sequence[float] | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the pixels under the long and short axis segments of the mark.

    :func:`nnunet_ulseg.recist.axis_pixels` of the mark given in any of its forms.
    """
    return axis_pixels(as_recist(recist), shape)


def scaled_ellipse(recist: Recist | Sequence[float] | np.ndarray, factor: float) -> Ellipse:
    """The mark's ellipse (:func:`~nnunet_ulseg.recist.ellipse_params`) scaled by ``factor`` about its centre."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"ellipse factor must be a positive number, got {factor}")
    e = ellipse_params(as_recist(recist))
    return Ellipse(e.cx, e.cy, e.a * factor, e.b * factor, e.theta)


def keep_marked_info(mask: np.ndarray, recist_points, fill_holes: bool = True, within: float | None = None,
                     fallback: str = "ellipse", lesion_label: int = 1) -> Kept:
    """:func:`keep_marked` with what was done (:class:`Kept`)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    pred = lesion_mask(mask, lesion_label)
    recist = as_recist(recist_points)
    limit = None
    if within is not None:
        limit = rasterize_ellipse(scaled_ellipse(recist, within), pred.shape)
        pred &= limit
    labels, n = ndimage.label(pred, structure=EIGHT)
    marked = mark_pixels(recist, pred.shape)
    hit = np.unique(labels[marked & pred])
    hit = hit[hit > 0]
    if hit.size:
        out, status = np.isin(labels, hit), "marked"
    elif fallback == "nearest" and n:
        # distance of every pixel to the nearest mark pixel; a mark wholly outside the image
        # leaves no mark pixel, then the ellipse centre stands in for it
        if marked.any():
            dist = ndimage.distance_transform_edt(~marked)
        else:
            e = ellipse_params(recist)
            yy, xx = np.indices(pred.shape)
            dist = np.hypot(xx - e.cx, yy - e.cy)
        nearest = np.asarray(ndimage.minimum(dist, labels, index=np.arange(1, n + 1)))
        hit = np.array([int(np.argmin(nearest)) + 1])
        out, status = labels == hit[0], "fallback_nearest"
    elif fallback == "empty":
        out, status = np.zeros_like(pred), "fallback_empty"
    else:
        out, status = rasterize_ellipse(ellipse_params(recist), pred.shape), "fallback_ellipse"
    if fill_holes:
        out = ndimage.binary_fill_holes(out)
    if limit is not None:
        out &= limit
    return Kept(np.asarray(out, dtype=bool), status, int(n), int(hit.size) if status != "fallback_ellipse" else 0)


def keep_marked(mask: np.ndarray, recist_points, fill_holes: bool = True, within: float | None = None,
                fallback: str = "ellipse", lesion_label: int = 1) -> np.ndarray:
    """The components of ``mask`` that the RECIST mark crosses, holes filled (bool, ``mask``'s shape).

    ``mask``: 2D prediction, bool or label map (lesion where ``== lesion_label``);
    ``recist_points``: the mark in the same pixel coordinates, a
    :class:`~nnunet_ulseg.recist.Recist`, 8 numbers or ``(4, 2)``, ``(x, y)``, long axis
    endpoints first.  ``within``: clip to the mark's ellipse scaled by this factor first.
    ``fallback`` when no component is crossed: ``"ellipse"``, ``"nearest"`` or ``"empty"``.
    See the module docstring for the reasons.  Raises ``ValueError`` for a non-2D mask or
    an invalid mark (zero-length or collinear axes).
    """
    return keep_marked_info(mask, recist_points, fill_holes, within, fallback, lesion_label).mask


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown post-processing mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def postprocess_mask(mask: np.ndarray, recist_points, mode: str, lesion_label: int = 1,
                     image: np.ndarray | None = None, window: tuple[float, float] | None = None) -> Kept:
    """Apply the named ``mode`` (:data:`MODES`) to one mask; ``"none"`` only binarises it.

    ``image`` (HU, the mask's shape) and ``window`` (DICOM min, max) are needed by
    :data:`IMAGE_MODES` only.  Mode ``"mark-grabcut"`` reports status ``"grabcut"`` when the
    refinement was accepted and ``"grabcut_rejected"`` (the ``"mark"`` result) when not.  The
    same axis test (:data:`~nnunet_ulseg.pseudo_masks.grabcut.AXIS_TOLERANCE`) first checks the
    marked prediction itself: one that does not reproduce the mark's axes is not trusted, and
    GrabCut starts from the RECIST ellipse instead (``"grabcut_from_ellipse"``), or the ellipse
    is kept when that is rejected too (``"fallback_ellipse_axes"``).
    """
    check_mode(mode)
    if mode == "none":
        pred = lesion_mask(mask, lesion_label)
        return Kept(pred, "unchanged", int(ndimage.label(pred, structure=EIGHT)[1]), 0)
    within = ELLIPSE_FACTOR if mode == "mark-ellipse" else None
    kept = keep_marked_info(mask, recist_points, fill_holes=True, within=within, lesion_label=lesion_label)
    if mode != "mark-grabcut":
        return kept
    if image is None or window is None:
        raise ValueError("post-processing mode 'mark-grabcut' needs the crop's CT image and DICOM window")
    from nnunet_ulseg.pseudo_masks.grabcut import AXIS_TOLERANCE, grabcut_refine, mark_axis_errors

    recist = as_recist(recist_points)
    axes = mark_pixels(recist, kept.mask.shape)
    if max(mark_axis_errors(kept.mask, recist)) > AXIS_TOLERANCE:
        # the prediction does not measure like the mark (e.g. two lesions of one slice merged into one
        # blob): it is not the marked lesion, so start from the mark alone (WSSS: "we generate T solely
        # from the estimated RECIST" when the CNN fails) and keep the ellipse if that fails too
        ellipse = ellipse_mask(recist, kept.mask.shape).astype(bool)
        result = grabcut_refine(ellipse, image, recist, window, axes)
        if not result.accepted:
            return Kept(ellipse, "fallback_ellipse_axes", kept.components, 0)
        again = keep_marked_info(result.mask, recist, fill_holes=True)
        return Kept(again.mask, "grabcut_from_ellipse", again.components, again.kept)
    result = grabcut_refine(kept.mask, image, recist, window, axes)
    if not result.accepted:
        return Kept(kept.mask, "grabcut_rejected", kept.components, kept.kept)
    again = keep_marked_info(result.mask, recist, fill_holes=True)
    return Kept(again.mask, "grabcut", again.components, again.kept)


def describe_mode(mode: str) -> str:
    """One line saying what ``mode`` does (for reports and ``summary.json``)."""
    return {
        "none": "none: the prediction as it is",
        "mark": "mark: keep the 8-connected components crossed by the RECIST axes, fill holes; "
                "the RECIST ellipse when none is crossed",
        "mark-ellipse": f"mark-ellipse: as 'mark', after clipping to the RECIST ellipse scaled by {ELLIPSE_FACTOR}",
        "mark-grabcut": "mark-grabcut: as 'mark', then GrabCut from that mask and the RECIST axes (CNN-GC), kept "
                        "when its axes match the mark's within 15 % (ULS23 error), then 'mark' again; a mask "
                        "whose own axes do not match is replaced by GrabCut from the ellipse (or the ellipse)",
    }[check_mode(mode)]


def postprocess_crop(mask: np.ndarray, row, mode: str, lesion_label: int = 1,
                     image: np.ndarray | None = None) -> Kept:
    """Apply ``mode`` to a crop-geometry mask with its ``lesions.csv`` row's crop-geometry mark.

    ``row``: a :class:`nnunet_ulseg.conversion.sidecar.LesionRow` (anything with ``case``,
    ``crop_size`` and ``recist_crop_points``).  Post-processing happens in crop geometry,
    before any paste-back: that is the geometry the model predicted in, the one refine's
    round update and ``ulseg postprocess`` write, and (for small lesions) a finer grid
    than the key slice.  Mode ``"none"`` reads nothing of ``row``.  Raises ``ValueError``
    naming the case for a mask of the wrong shape or a mark that is not a valid RECIST mark.
    ``image``: the crop's CT (HU) for :data:`IMAGE_MODES`; the window is the row's DICOM window.
    """
    mask = np.asarray(mask)
    if check_mode(mode) == "none":
        return postprocess_mask(mask, None, mode, lesion_label)
    if mask.shape != (row.crop_size, row.crop_size):
        raise ValueError(f"case {row.case}: mask shape {mask.shape} does not match the crop size "
                         f"{row.crop_size} in lesions.csv")
    try:
        recist = as_recist(row.recist_crop_points)
    except ValueError as exc:
        raise ValueError(f"case {row.case}: lesions.csv recist_crop is not a usable RECIST mark ({exc})") from None
    if mode in IMAGE_MODES and image is None:
        raise ValueError(f"case {row.case}: post-processing mode {mode!r} needs the crop's CT image")
    if image is not None:
        image = np.asarray(image)
        image = image.reshape(image.shape[-2:])
    return postprocess_mask(mask, recist, mode, lesion_label, image, (row.window_min, row.window_max))


def read_crop_image(images_dir: str | os.PathLike, case: str, file_ending: str = ".mha") -> np.ndarray:
    """Channel 0 (the key slice) of ``<images_dir>/<case>_0000<file_ending>`` as a 2D HU array."""
    import SimpleITK as sitk

    path = os.path.join(images_dir, image_filename(case, file_ending))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no image {path} for case {case} (needed by the grabcut post-processing)")
    array = sitk.GetArrayFromImage(sitk.ReadImage(path))
    return array.reshape(array.shape[-2:])
