"""Reading a ULS23 VOI pair and deriving its key slice and RECIST mark (DESIGN "ULS23 on disk").

* :func:`read_voi` reads image and label with SimpleITK, as arrays ``[z, y, x]``.  Labels
  may be float32 with a trailing singleton axis (``(256, 256, 128, 1)`` on disk); a
  singleton axis is squeezed and the label becomes uint8 ``label > 0.5``.  Indices are
  those of the arrays as SimpleITK reads them; the header's direction/origin are not
  applied (the sidecar's ``key_slice`` and RECIST points refer to these arrays).
* :func:`choose_key_slice` applies ULS23's measuring rule: the axial slice whose largest
  component has the longest long axis.  The long axis is measured between pixel
  *centres* (ULS23's evaluator measures between boundary pixels), in mm with the
  in-plane spacing (for square pixels, which CT has, the ranking is the same as in
  ULS23's voxel units).  Components are 8-connected, like every "largest component" in
  this project (``evaluation.metrics.largest_component``); ULS23's evaluator uses scipy's
  default 4-connectivity, which differs only where a component touches another by a
  corner.  Ties: the largest component is the one with the most pixels, then the first
  in raster order; between slices with equal long axes (to 1e-9 mm) the lowest z wins,
  as in ULS23's evaluator (a strict ``>`` scanning z upwards).
* :func:`derive_recist` measures that slice's largest component between pixel centres:
  the long axis with :func:`nnunet_ulseg.recist.mask_axes` ``"uls23"`` (ULS23's
  definition), the short axis exactly perpendicular to it (see there why not ULS23's
  angle-tolerance short axis, which is recorded too).
* Partially annotated VOIs (ULS23: one labelled slice, the rest 0 = unknown) are
  detected by :func:`labelled_slices`: flagged partial when only one slice is labelled or
  the labelled slices are not contiguous.  A lesion that is genuinely one slice thick
  is indistinguishable from a one-slice annotation and is flagged too; the 2D conversion
  uses only the key slice either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ..recist import Recist, mask_axes

#: ULS23 reason codes (``reason`` column of ``conversion_report.csv``) and what they mean.
VOI_REASONS: dict[str, str] = {
    "missing_label": "the image has no label file of the same name in the labels folder",
    "missing_image": "the label has no image file of the same name in the images folder",
    "duplicate_voi": "another file in the folder has the same name without its ending (x.nii and x.nii.gz)",
    "unreadable_voi": "SimpleITK cannot read the image or label file (missing, truncated, not an image)",
    "bad_dimensions": "the image or label is not a 3D volume (after squeezing singleton axes)",
    "shape_mismatch": "image and label have different sizes",
    "bad_spacing": "the header spacing is not 3 positive finite numbers",
    "empty_label": "the label has no voxel > 0.5",
    "degenerate_lesion": "the key-slice component has no width (a line of pixels): no RECIST ellipse",
    "internal_error": "an unexpected error while converting this VOI (a bug: please report)",
}

_EIGHT = np.ones((3, 3), dtype=bool)


class VoiError(ValueError):
    """A per-VOI problem with a reason code from :data:`VOI_REASONS` and the file involved."""

    def __init__(self, reason: str, detail: str, file: str = ""):
        assert reason in VOI_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.file = file


@dataclass(frozen=True)
class Voi:
    """One VOI pair: ``image`` (HU, input dtype) and ``label`` (uint8 0/1), both ``[z, y, x]``; spacing ``(x, y, z)`` mm."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    label_image: object  # the label's SimpleITK image (header for the 3D reference copy)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.label.shape
        return x, y, z


def _squeeze_to_3d(arr: np.ndarray, path: str) -> np.ndarray:
    while arr.ndim > 3 and 1 in arr.shape:
        arr = arr.squeeze(axis=arr.shape.index(1))
    if arr.ndim != 3:
        raise VoiError("bad_dimensions", f"array shape {arr.shape} is not 3D", path)
    return arr


def _read(path: str):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise VoiError("unreadable_voi", first[:300], path) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VoiError("bad_dimensions", f"{img.GetNumberOfComponentsPerPixel()} components per voxel", path)
    return img, sitk.GetArrayFromImage(img)


def read_voi(image_path: str, label_path: str) -> Voi:
    """Read, squeeze and binarise one VOI pair; raises :class:`VoiError` for a bad pair."""
    label_img, label_arr = _read(label_path)
    image_img, image_arr = _read(image_path)
    label_arr = _squeeze_to_3d(label_arr, label_path)
    image_arr = _squeeze_to_3d(image_arr, image_path)
    if image_arr.shape != label_arr.shape:
        raise VoiError("shape_mismatch", f"image {image_arr.shape[::-1]} vs label {label_arr.shape[::-1]} (x, y, z)",
                       label_path)
    spacing = tuple(float(s) for s in image_img.GetSpacing()[:3])
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise VoiError("bad_spacing", f"spacing {image_img.GetSpacing()}", image_path)
    label = (label_arr > 0.5).astype(np.uint8)
    if not label.any():
        raise VoiError("empty_label", f"no voxel > 0.5 (max {float(np.max(label_arr)) if label_arr.size else 0})",
                       label_path)
    return Voi(image_arr, label, spacing, label_img)


@dataclass(frozen=True)
class LabelledSlices:
    """Which z slices carry any label, and whether the annotation looks partial (see module docstring)."""

    indices: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def partial(self) -> bool:
        return self.count == 1 or (self.count > 0 and self.indices[-1] - self.indices[0] + 1 != self.count)


def labelled_slices(label: np.ndarray) -> LabelledSlices:
    """The labelled z slices of a ``[z, y, x]`` label."""
    return LabelledSlices(tuple(int(z) for z in np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))))


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected component of a 2D mask (ties: first in raster order) and the component count."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_EIGHT)
    if n <= 1:
        return labels > 0, n
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1, n


def pixel_centre_long_axis(component: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest distance (mm) between two pixel centres of ``component`` (0 for one pixel).

    The maximum is reached on the convex hull of the pixel centres, so only hull vertices
    (``cv2.convexHull``, exact on integer points) are compared pairwise.
    """
    ys, xs = np.nonzero(component)
    if len(xs) < 2:
        return 0.0
    pts = np.stack([xs, ys], axis=1).astype(np.int32)
    hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64) * np.asarray(spacing[:2], dtype=np.float64)
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt(np.einsum("ijk,ijk->ij", diff, diff).max()))


@dataclass(frozen=True)
class KeySlice:
    """The chosen slice: z index, its largest component's long axis (mm, pixel centres) and component count."""

    z: int
    long_mm: float
    n_components: int


def choose_key_slice(label: np.ndarray, spacing: tuple[float, ...]) -> KeySlice:
    """ULS23's key slice of a ``[z, y, x]`` label (rule and ties in the module docstring)."""
    best: KeySlice | None = None
    for z in labelled_slices(label).indices:
        component, n = largest_component(label[z])
        long_mm = pixel_centre_long_axis(component, spacing[:2])
        if best is None or long_mm > best.long_mm + 1e-9:
            best = KeySlice(z, long_mm, n)
    if best is None:
        raise VoiError("empty_label", "no labelled slice")
    return best


def perpendicular_short_axis(component: np.ndarray, long_endpoints: np.ndarray,
                             spacing: tuple[float, ...]) -> np.ndarray:
    """The longest extent of ``component``'s pixel-centre boundary exactly perpendicular to the long axis.

    The boundary is the outer contour through the boundary pixel centres
    (``cv2.findContours``, every pixel kept); distances are in mm with ``spacing``.  The
    extent across the long axis is piecewise linear in the position along it, with its
    maxima at contour vertices, so every vertex position is tried (the rule of
    ``recist.mask_axes``' ``"edge"`` convention, applied at pixel centres).  Returns the
    ``(2, 2)`` endpoints in pixels; both equal when the component has no width.
    """
    s = np.asarray(spacing[:2], dtype=np.float64)
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    poly = max(contours, key=len).reshape(-1, 2).astype(np.float64) * s
    ends = np.roll(poly, -1, axis=0)
    p0, p1 = np.asarray(long_endpoints, dtype=np.float64) * s
    length = float(np.hypot(*(p1 - p0)))
    if length == 0.0:
        return np.stack([p0, p0]) / s
    d = (p1 - p0) / length
    n = np.array([-d[1], d[0]])
    u0, u1, w0, w1 = poly @ d, ends @ d, poly @ n, ends @ n
    t = np.unique(u0)[:, None]
    lo, hi = np.minimum(u0, u1), np.maximum(u0, u1)
    hit = (lo <= t) & (t <= hi)
    frac = np.clip((t - u0) / np.where(u1 != u0, u1 - u0, 1.0), 0.0, 1.0)
    w = w0 + frac * (w1 - w0)
    w_max = np.where(hit, w, -np.inf).max(axis=1)
    w_min = np.where(hit, w, np.inf).min(axis=1)
    k = int(np.argmax(w_max - w_min))
    tk = float(t[k, 0])
    return np.stack([tk * d + w_min[k] * n, tk * d + w_max[k] * n]) / s


@dataclass(frozen=True)
class DerivedRecist:
    """The mark derived from a key slice and ULS23's own measurement of it (both in mm)."""

    recist: Recist
    long_mm: float
    short_mm: float
    uls23_long_mm: float
    uls23_short_mm: float


def derive_recist(slice_mask: np.ndarray, spacing: tuple[float, ...]) -> DerivedRecist:
    """The RECIST mark (0-based slice pixels) of a key slice's largest component.

    Long axis: :func:`~nnunet_ulseg.recist.mask_axes` ``"uls23"`` (the two boundary pixel
    centres furthest apart; ULS23's definition).  Short axis: :func:`perpendicular_short_axis`,
    exactly perpendicular, between pixel centres.  Choice: ULS23's own short axis (the
    longest boundary pair within the first whole degree of perpendicular that admits one)
    is kept only as ``uls23_short_mm``: on a rasterised ellipse it falls up to ~2 px short
    of the drawn diameter (12 px for a 24 x 14 px ellipse), while the exact perpendicular
    extent stays within 1 px of it, and the mark is what the ellipse pseudo mask is drawn
    from.  Raises :class:`VoiError` ``degenerate_lesion`` when the component has no width
    (one pixel, or a line of pixels).
    """
    component, _ = largest_component(slice_mask)
    axes = mask_axes(component, spacing[:2], convention="uls23")
    short = perpendicular_short_axis(component, axes.long_endpoints, spacing)
    try:
        recist = Recist(axes.long_endpoints, short)
    except ValueError as e:
        raise VoiError("degenerate_lesion", f"{e} (component of {int(component.sum())} px)") from None
    sx, sy = float(spacing[0]), float(spacing[1])
    long_mm, short_mm = recist.lengths_mm((sx, sy))
    return DerivedRecist(recist, long_mm, short_mm, axes.long_mm, axes.short_mm)
