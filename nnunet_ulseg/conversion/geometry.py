"""Crop boxes, slice <-> crop point mapping, crop resampling and paste-back (DESIGN "Crops").

Geometry follows CONVENTIONS "Geometry": a crop is the square ``[x0, x0 + side) x
[y0, y0 + side)`` in slice coordinates (pixel ``c`` covers ``[c - 0.5, c + 0.5)``),
resampled to ``size x size`` output pixels, ``scale = size / side``.  A slice point ``x``
maps to crop ``u = (x - x0) * scale - 0.5`` and back ``x = x0 + (u + 0.5) / scale``.
Every resampling here is one ``cv2.warpAffine`` call with the matching affine matrix, so
image, label and paste-back can never disagree about the geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..recist import Recist

SCALE_POLICIES = ("lesion", "physical")
#: Output side range of scale policy ``lesion`` (AHRNet Sec. 3: lesion crops of 128..256 px).
LESION_SIZE_RANGE = (128, 256)
#: Padding value outside the slice, in HU (CONVENTIONS "Intensities").
PAD_HU = -1024
#: DeepLesion PNG value of 0 HU (HU = value - 32768).
HU_OFFSET = 32768


@dataclass(frozen=True, slots=True)
class CropBox:
    """Square crop: edge origin ``(x0, y0)`` and ``side`` in slice px, output ``size`` px."""

    x0: float
    y0: float
    side: float
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per slice pixel."""
        return self.size / self.side


def crop_box(recist: Recist | Sequence[float] | np.ndarray, min_crop: float = 32, scale_policy: str = "lesion",
             size_range: tuple[int, int] = LESION_SIZE_RANGE) -> CropBox:
    """The crop of one lesion (DESIGN "Crops").

    ``recist`` is a :class:`~nnunet_ulseg.recist.Recist` or its endpoints (8 numbers or
    ``(4, 2)``, 0-based, long axis first).  Centre: centre of the bounding box of the four
    endpoints.  Side: ``max(2 * long diameter, min_crop)`` slice px.  Output size:

    * ``lesion``: the side clamped to ``size_range`` (small boxes scaled up to 128, big
      ones down to 256).  A side already inside the range keeps scale 1: the size is the
      rounded side and the side becomes that integer, so ``scale == size / side`` exactly.
    * ``physical``: scale 1, ``size = ceil(side)`` and the side becomes ``size``.

    Choice where the spec is silent: when the scale is exactly 1 the origin is snapped to
    the nearest pixel edge (the centre moves by at most 0.5 px) so output pixels coincide
    with slice pixels and the crop is a pure copy, not a bilinear blur of the slice.
    Plain-Python arithmetic: the parent computes one box per lesion.
    """
    if scale_policy not in SCALE_POLICIES:
        raise ValueError(f"scale_policy must be one of {SCALE_POLICIES}, got {scale_policy!r}")
    if not min_crop > 0:
        raise ValueError(f"min_crop must be positive, got {min_crop}")
    p = np.asarray(recist.points if isinstance(recist, Recist) else recist, dtype=np.float64).ravel().tolist()
    xs, ys = p[0::2], p[1::2]
    cx, cy = 0.5 * (min(xs) + max(xs)), 0.5 * (min(ys) + max(ys))
    side = max(2.0 * math.hypot(p[2] - p[0], p[3] - p[1]), float(min_crop))
    lo, hi = size_range
    if scale_policy == "physical":
        size = side = math.ceil(side - 1e-9)
    elif side < lo:
        size = lo
    elif side > hi:
        size = hi
    else:
        size = side = round(side)
    x0, y0 = cx - 0.5 * side, cy - 0.5 * side
    if size == side:
        x0, y0 = round(x0 + 0.5) - 0.5, round(y0 + 0.5) - 0.5
    return CropBox(float(x0), float(y0), float(side), int(size))


def crop_size_range(crop_size: int | Sequence[int] | None, scale_policy: str = "lesion") -> tuple[int, int]:
    """The output side range of policy ``lesion`` from a user's ``--crop-size``.

    ``None``: AHRNet's 128..256 px.  One number ``N`` (or ``[N]``): every crop is ``N x N``
    (a fixed input size: small crops make an equal-budget CPU benchmark converge, and some
    users want one resolution).  Two numbers ``(lo, hi)``: sides clamped to that range.
    Sizes below 8 px leave nothing to segment and are refused, as is any size with policy
    ``physical`` (which keeps the true pixel size, so there is no output size to choose).
    """
    if crop_size is None:
        return LESION_SIZE_RANGE
    if scale_policy != "lesion":
        raise ValueError(f"a crop size applies to scale policy 'lesion' only, not {scale_policy!r}")
    values = [crop_size] if isinstance(crop_size, (int, np.integer, float)) else list(crop_size)
    if len(values) not in (1, 2) or any(float(v) != int(v) for v in values):
        raise ValueError(f"crop size must be one whole number N or a range LO HI, got {crop_size!r}")
    lo, hi = int(values[0]), int(values[-1])
    if lo < 8 or hi < lo:
        raise ValueError(f"crop size range must satisfy 8 <= LO <= HI, got {lo}..{hi}")
    return lo, hi


def slice_to_crop(points: np.ndarray, box: CropBox) -> np.ndarray:
    """Map ``(N, 2)`` slice points ``(x, y)`` to crop pixel coordinates."""
    p = np.asarray(points, dtype=np.float64)
    return (p - np.array([box.x0, box.y0])) * box.scale - 0.5


def crop_to_slice(points: np.ndarray, box: CropBox) -> np.ndarray:
    """Map ``(N, 2)`` crop pixel coordinates ``(u, v)`` back to slice points."""
    p = np.asarray(points, dtype=np.float64)
    return np.array([box.x0, box.y0]) + (p + 0.5) / box.scale


def crop_to_slice_matrix(box: CropBox) -> np.ndarray:
    """2x3 affine taking crop pixel ``(u, v)`` to slice ``(x, y)`` (for ``WARP_INVERSE_MAP`` cropping)."""
    s = 1.0 / box.scale
    return np.array([[s, 0.0, box.x0 + 0.5 * s], [0.0, s, box.y0 + 0.5 * s]])


def slice_to_crop_matrix(box: CropBox) -> np.ndarray:
    """2x3 affine taking slice ``(x, y)`` to crop pixel ``(u, v)`` (for ``WARP_INVERSE_MAP`` paste-back)."""
    s = box.scale
    return np.array([[s, 0.0, -box.x0 * s - 0.5], [0.0, s, -box.y0 * s - 0.5]])


def crop_png_to_hu(png: np.ndarray, box: CropBox) -> np.ndarray:
    """Crop + pad + scale a DeepLesion uint16 PNG slice in one bilinear ``warpAffine``; int16 HU out.

    The warp runs on the raw uint16 values (cv2 rounds to the nearest integer), padding
    with the PNG value of -1024 HU; ``v - 32768`` is then the bit pattern ``v ^ 0x8000``
    read as int16, which avoids converting the whole slice to float.
    """
    if png.dtype != np.uint16 or png.ndim != 2:
        raise ValueError(f"expected a 2D uint16 DeepLesion slice, got {png.dtype} {png.shape}")
    out = cv2.warpAffine(png, crop_to_slice_matrix(box), (box.size, box.size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=HU_OFFSET + PAD_HU)
    out ^= np.uint16(0x8000)
    return out.view(np.int16)


def paste_back_mask(crop_mask: np.ndarray, box: CropBox, image_shape: tuple[int, int],
                    interpolation: str = "linear", threshold: float = 0.5) -> np.ndarray:
    """Resample a crop-geometry mask back onto the ``(H, W)`` key slice; 0 outside the crop.

    ``linear``: bilinear interpolation of the (binary or probability) mask, then
    ``>= threshold``; returns bool.  ``nearest``: nearest-neighbour, keeps label values
    (e.g. 0/1/2) and the dtype (uint8/uint16/int16/float32 supported by cv2).
    """
    crop_mask = np.asarray(crop_mask)
    if crop_mask.shape != (box.size, box.size):
        raise ValueError(f"crop mask shape {crop_mask.shape} does not match the crop size {box.size}")
    h, w = int(image_shape[0]), int(image_shape[1])
    m = slice_to_crop_matrix(box)
    if interpolation == "linear":
        src = crop_mask.astype(np.float32)
        out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out >= threshold
    if interpolation == "nearest":
        src = crop_mask.astype(np.uint8) if crop_mask.dtype == bool else crop_mask
        out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.astype(bool) if crop_mask.dtype == bool else out
    raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")


def slice_to_crop_mask(mask: np.ndarray, box: CropBox) -> np.ndarray:
    """A key-slice mask cut to ``box``'s crop (``size x size`` uint8, nearest neighbour, 0 outside the slice).

    The inverse of :func:`paste_back_mask` ``nearest``: the same ``warpAffine`` mapping the
    converter uses for the CT crop (:func:`crop_to_slice_matrix`), so a reference cut with
    it lies exactly on the crop.  Lossy for every scale but 1: only the evaluation's
    crop-geometry reference path (``write_reference_crops``) uses it.
    """
    src = np.ascontiguousarray(np.asarray(mask).astype(np.uint8))
    return cv2.warpAffine(src, crop_to_slice_matrix(box), (box.size, box.size),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def paste_back_image(crop: np.ndarray, box: CropBox, image_shape: tuple[int, int],
                     fill: float = float(PAD_HU)) -> np.ndarray:
    """A crop-geometry image (e.g. the CT crop in HU) resampled bilinearly onto the ``(H, W)`` key slice (float32).

    Pixels outside the crop box get ``fill``.  For display only (the evaluation gallery draws
    the CT under contours in key-slice geometry, where the metrics are computed).
    """
    crop = np.asarray(crop, dtype=np.float32)
    if crop.shape != (box.size, box.size):
        raise ValueError(f"crop image shape {crop.shape} does not match the crop size {box.size}")
    h, w = int(image_shape[0]), int(image_shape[1])
    return cv2.warpAffine(crop, slice_to_crop_matrix(box), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill))


def crop_hu_slice(slice_hu: np.ndarray, box: CropBox, pad_hu: float = PAD_HU) -> np.ndarray:
    """Crop + pad + scale a 2D slice already in HU (e.g. an axial slice of a ULS23 VOI); int16 HU out.

    The generic sibling of :func:`crop_png_to_hu` for inputs that are not DeepLesion PNGs:
    the same box, the same one bilinear ``warpAffine`` (:func:`crop_to_slice_matrix`) and the
    same -1024 HU padding, run on float32 so any input dtype (int16, float32, ...) is
    accepted; the result is rounded to the nearest integer and clipped to int16.  On a
    DeepLesion slice shifted to HU it agrees with :func:`crop_png_to_hu` to within 1 HU
    (cv2 interpolates integer images with fixed-point weights).
    """
    arr = np.asarray(slice_hu)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {arr.shape}")
    out = cv2.warpAffine(np.ascontiguousarray(arr, dtype=np.float32), crop_to_slice_matrix(box), (box.size, box.size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=float(pad_hu))
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
