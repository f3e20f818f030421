"""RECIST geometry: measurement parsing, ellipse pseudo masks, and axes of a mask.

Coordinates follow ``CONVENTIONS.md``: points are ``(x, y)`` in 0-based pixel-centre
coordinates, arrays are indexed ``[y, x]``.  DeepLesion writes its coordinates 1-based;
:meth:`Recist.from_deeplesion` / :meth:`Recist.to_deeplesion` are the only places that
convert.

* :func:`ellipse_params` / :func:`ellipse_mask` build the pseudo mask "fitted from four
  endpoints of its RECIST annotation" (AHRNet Sec. 2.2).
* :func:`mask_axes` measures the RECIST long and short axis of a binary mask under one of
  two named conventions (:data:`AXIS_CONVENTIONS`): ``"uls23"``, ULS23's evaluator rule
  between boundary pixel centres, and ``"edge"``, the extent of the mask's half-pixel
  iso-line (outer pixel edges).  The two differ by about one pixel in every axis.  Both
  are measured in mm when a spacing is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

#: Below this length (px) an axis is treated as zero-length.
MIN_AXIS_PX = 1e-3

#: The axis conventions of :func:`mask_axes`.  ``"uls23"``: ULS23's evaluator (boundary
#: pixel centres, short axis within the first whole-degree tolerance of perpendicular);
#: ``"edge"``: the mask's 0.5 iso-line (outer pixel edges, exact perpendicular extent).
AXIS_CONVENTIONS = ("uls23", "edge")

#: Boundary-point pairs per block in the ULS23 pair search (bounds memory to a few MB).
_PAIR_BLOCK = 1 << 18
_CROSS = ndimage.generate_binary_structure(2, 1)


def parse_numbers(text: str, count: int, what: str = "field") -> np.ndarray:
    """Parse a DeepLesion multi-number field such as ``"233.5, 95.0, 234.0"``.

    Raises ``ValueError`` naming ``what`` when the count is wrong, a number does not
    parse, or a value is NaN/infinite.
    """
    if text is None:
        raise ValueError(f"{what}: missing value")
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip() != ""]
    if len(parts) != count:
        raise ValueError(f"{what}: expected {count} numbers, got {len(parts)} in {text!r}")
    try:
        values = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{what}: not a list of numbers: {text!r}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what}: NaN or infinite value in {text!r}")
    return values


@dataclass(frozen=True)
class Recist:
    """A RECIST mark: long-axis and short-axis endpoints, each ``(2, 2)`` ``[[x1, y1], [x2, y2]]``.

    Construction validates: finite numbers, both axes longer than :data:`MIN_AXIS_PX`,
    and a short axis that is not parallel to the long one (all four points collinear
    gives no width).  If the first axis is the shorter one the axes are swapped, since
    RECIST defines the long axis as the longer diameter and the order in a CSV is an
    annotation artefact, not information.
    """

    long_axis: np.ndarray
    short_axis: np.ndarray

    def __post_init__(self) -> None:
        long_axis = np.asarray(self.long_axis, dtype=np.float64).reshape(2, 2)
        short_axis = np.asarray(self.short_axis, dtype=np.float64).reshape(2, 2)
        if not (np.all(np.isfinite(long_axis)) and np.all(np.isfinite(short_axis))):
            raise ValueError("RECIST: NaN or infinite coordinate")
        if _length(short_axis) > _length(long_axis):
            long_axis, short_axis = short_axis, long_axis
        if _length(long_axis) < MIN_AXIS_PX:
            raise ValueError("RECIST: zero-length long axis")
        if _length(short_axis) < MIN_AXIS_PX:
            raise ValueError("RECIST: zero-length short axis")
        direction = (long_axis[1] - long_axis[0]) / _length(long_axis)
        normal = np.array([-direction[1], direction[0]])
        width = abs(float((short_axis[1] - short_axis[0]) @ normal))
        if width < MIN_AXIS_PX:
            raise ValueError("RECIST: collinear points (the short axis has no extent perpendicular to the long axis)")
        object.__setattr__(self, "long_axis", long_axis)
        object.__setattr__(self, "short_axis", short_axis)

    @classmethod
    def from_points(cls, points: Sequence[float] | np.ndarray) -> "Recist":
        """From 8 numbers or a ``(4, 2)`` array: long endpoints, then short endpoints (0-based)."""
        arr = np.asarray(points, dtype=np.float64).reshape(4, 2)
        return cls(arr[:2], arr[2:])

    @classmethod
    def from_deeplesion(cls, text: str) -> "Recist":
        """Parse DeepLesion's ``Measurement_coordinates`` (1-based x11,y11,x12,y12,x21,y21,x22,y22)."""
        values = parse_numbers(text, 8, "Measurement_coordinates")
        return cls.from_points(values - 1.0)

    def to_deeplesion(self, digits: int = 4) -> str:
        """Serialise as DeepLesion's 1-based ``Measurement_coordinates`` string."""
        return ", ".join(f"{v:.{digits}f}" for v in (self.points + 1.0).ravel())

    @property
    def points(self) -> np.ndarray:
        """``(4, 2)``: long endpoints then short endpoints."""
        return np.concatenate([self.long_axis, self.short_axis], axis=0)

    @property
    def long_length(self) -> float:
        return _length(self.long_axis)

    @property
    def short_length(self) -> float:
        return _length(self.short_axis)

    def lengths_mm(self, spacing: Sequence[float]) -> tuple[float, float]:
        """Long and short axis lengths in mm for pixel spacing ``(sx, sy)``."""
        s = np.asarray(spacing[:2], dtype=np.float64)
        return _length(self.long_axis * s), _length(self.short_axis * s)

    def bbox(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` of the four endpoints."""
        p = self.points
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())

    def mapped(self, fn: Callable[[np.ndarray], np.ndarray]) -> "Recist":
        """A new mark with ``fn`` applied to the ``(4, 2)`` point array (e.g. slice -> crop)."""
        return Recist.from_points(fn(self.points.copy()))


@dataclass(frozen=True)
class Ellipse:
    """Centre ``(cx, cy)``, semi-axes ``a >= b`` (px) and angle ``theta`` of the ``a`` axis (rad, from +x)."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float

    @property
    def area(self) -> float:
        return math.pi * self.a * self.b


def ellipse_params(recist: Recist) -> Ellipse:
    """Fit the pseudo-mask ellipse to a RECIST mark (AHRNet Sec. 2.2).

    The paper only says the ellipse is "fitted from four endpoints".  Four points do not
    fix a general ellipse, and real marks are rarely perfect: the short axis is often
    not exactly perpendicular and seldom crosses the long axis at its midpoint.  Our
    choice: work in the frame of the long axis (``u`` along it, ``v`` across it) and take
    the ellipse inscribed in the box spanned by the long axis along ``u`` and by the
    short axis' projection on ``v``.  For a perfect mark (perpendicular axes bisecting
    each other) this is the ellipse through all four endpoints; for an imperfect one it
    keeps both measured diameters (long exactly, short as its perpendicular extent) and
    covers the extent the radiologist measured on both sides, rather than shifting the
    shape onto one axis.
    """
    p0, p1 = recist.long_axis
    d = (p1 - p0) / _length(recist.long_axis)
    n = np.array([-d[1], d[0]])
    u_long = recist.long_axis @ d
    v_short = recist.short_axis @ n
    cu = 0.5 * (u_long[0] + u_long[1])
    cv = 0.5 * (v_short[0] + v_short[1])
    a = 0.5 * abs(u_long[1] - u_long[0])
    b = 0.5 * abs(v_short[1] - v_short[0])
    centre = cu * d + cv * n
    return Ellipse(float(centre[0]), float(centre[1]), float(a), float(b), float(math.atan2(d[1], d[0])))


def rasterize_ellipse(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the pixels whose centres lie inside ``ellipse``.

    Only the ellipse's bounding box is evaluated.  A non-empty ellipse whose centre is in
    the image always marks at least its centre pixel, so sub-pixel marks do not vanish.
    """
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    c, s = math.cos(ellipse.theta), math.sin(ellipse.theta)
    half_x = math.sqrt((ellipse.a * c) ** 2 + (ellipse.b * s) ** 2)
    half_y = math.sqrt((ellipse.a * s) ** 2 + (ellipse.b * c) ** 2)
    x0, x1 = max(0, math.floor(ellipse.cx - half_x)), min(w - 1, math.ceil(ellipse.cx + half_x))
    y0, y1 = max(0, math.floor(ellipse.cy - half_y)), min(h - 1, math.ceil(ellipse.cy + half_y))
    if x0 <= x1 and y0 <= y1:
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
        dx, dy = xs - ellipse.cx, ys - ellipse.cy
        u = dx * c + dy * s
        v = -dx * s + dy * c
        mask[y0 : y1 + 1, x0 : x1 + 1] = (u / ellipse.a) ** 2 + (v / ellipse.b) ** 2 <= 1.0
    ci, cj = int(round(ellipse.cy)), int(round(ellipse.cx))
    if 0 <= ci < h and 0 <= cj < w:
        mask[ci, cj] = True
    return mask


#: samples per pixel of segment length when rasterising a mark's axes (:func:`axis_pixels`)
SAMPLES_PER_PX = 4


def axis_pixels(recist: Recist, shape: tuple[int, int]) -> np.ndarray:
    """Bool ``shape`` mask of the pixels under the mark's long and short axis segments.

    Each segment is sampled every ``1 / SAMPLES_PER_PX`` px (both endpoints included) and
    every sample marks the pixel whose centre is nearest (``floor(v + 0.5)``); samples
    outside the image are dropped.  The one rasteriser of a mark: the post-processing
    (which component the mark crosses) and the CNN trimaps ("R's pixels") both use it.
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    for (x0, y0), (x1, y1) in (recist.long_axis, recist.short_axis):
        n = int(math.ceil(math.hypot(x1 - x0, y1 - y0) * SAMPLES_PER_PX)) + 1
        t = np.linspace(0.0, 1.0, n)
        cols = np.floor(x0 + t * (x1 - x0) + 0.5).astype(np.int64)
        rows = np.floor(y0 + t * (y1 - y0) + 0.5).astype(np.int64)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        out[rows[inside], cols[inside]] = True
    return out


def ellipse_mask(recist: Recist, shape: tuple[int, int]) -> np.ndarray:
    """The RECIST ellipse pseudo mask (AHRNet Sec. 2.2) on a ``(H, W)`` grid."""
    return rasterize_ellipse(ellipse_params(recist), shape)


@dataclass(frozen=True)
class MaskAxes:
    """Long and short axis of a mask under one of :data:`AXIS_CONVENTIONS`.

    ``*_endpoints`` are ``(2, 2)`` ``[[x1, y1], [x2, y2]]`` in 0-based pixel coordinates
    (``CONVENTIONS.md``: pixel ``[r, c]`` has its centre at ``(c, r)``): boundary pixel
    centres for ``"uls23"``, points on the half-pixel iso-line for ``"edge"``;
    ``*_mm`` use the spacing given to :func:`mask_axes`; ``*_px`` are the endpoints'
    distances in pixel units (equal to mm for unit spacing).
    """

    long_endpoints: np.ndarray
    short_endpoints: np.ndarray
    long_mm: float
    short_mm: float
    convention: str = "edge"

    @property
    def long_px(self) -> float:
        return _length(self.long_endpoints)

    @property
    def short_px(self) -> float:
        return _length(self.short_endpoints)

    def as_recist(self) -> Recist:
        return Recist(self.long_endpoints, self.short_endpoints)


def boundary_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary polygons ``(N, 2)`` in ``(x, y)`` pixel coordinates.

    The boundary is the 0.5 iso-line of the binary mask (marching squares), which runs
    half-way between foreground and background pixel centres: a single pixel is a
    diamond of diameter 1 and an ``n``-pixel row measures ``n`` along its length.
    """
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(mask, dtype=np.float64), 1)
    return [c[:, ::-1] - 1.0 for c in find_contours(padded, 0.5)]


def mask_axes(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0), convention: str = "edge") -> MaskAxes:
    """RECIST long and short axis of a 2D binary mask under ``convention`` (:data:`AXIS_CONVENTIONS`).

    All foreground pixels count; callers wanting the largest component select it first
    (ULS23's evaluator keeps the largest 4-connected component of the slice; this
    project's :func:`nnunet_ulseg.evaluation.metrics.largest_component` uses 8-connectivity).

    ``"uls23"`` — ULS23's evaluator (``long_and_short_axis_diameters`` in
    DIAGNijmegen/ULS23, the rule behind its ``LongAxisErrorPercentage``/``ShortAxisErrorPercentage``):

    * boundary pixels: foreground pixels with a 4-neighbour in the background, outside
      the array counting as background (``mask - binary_erosion(mask)``); points are
      their **centres**;
    * long axis: the largest distance between two boundary pixels; on a tie the first
      pair in row-major order of the first point, then of the second;
    * short axis: among all pairs of boundary pixels whose connecting line makes an
      angle ``a`` with the long axis, those with ``|a - 90°| < t`` for the smallest whole
      number of degrees ``t >= 1`` that admits at least one pair, the longest (first on a
      tie).  The short axis need not cross the long one.  On a pixel grid few pairs are
      that close to perpendicular, so for small oblique lesions this is shorter than the
      perpendicular width (a rasterised ellipse with semi-axes 20 and 8 px at 30° measures
      13.9 px, against about 15 between centres);
    * a single pixel measures 0 x 0.  When every boundary pixel lies on one line (a
      one-pixel-wide bar), no pair is within 90° of perpendicular and ULS23's loop ends
      by taking the long axis itself as the short axis; here the short axis is 0 (the
      extent across the line between pixel centres), with both endpoints at the long
      axis' first endpoint;
    * ULS23 measures in voxels.  Here distances and angles are in mm with ``spacing``,
      which for square pixels is ULS23's measurement times the pixel size (and leaves
      its relative errors unchanged); for non-square pixels it is the physical one;
    * ULS23 measures a 3D VOI slice by slice and keeps the slice with the longest long
      axis; this function measures one slice.

    A ``w x h`` pixel rectangle measures ``sqrt((w-1)² + (h-1)²)`` long; a disc of the
    pixels within radius ``r`` of a pixel centre (``r`` an integer) ``2r x 2r``.

    ``"edge"`` — the outer pixel edges:

    * the boundary is the 0.5 iso-line of the mask (marching squares,
      :func:`boundary_polygons`): it runs along the outer pixel edges on straight runs
      and cuts every convex pixel corner diagonally through the two edge midpoints;
    * long axis: the largest distance, in mm, between two boundary points (taken on the
      convex hull of the boundary);
    * short axis: the largest extent of the boundary along a line exactly perpendicular
      to the long axis.  The extent function of the position along the long axis is
      piecewise linear with its maxima at boundary vertices, so evaluating it at every
      vertex's position is exact for the polygon;
    * a single pixel measures 1 x 1 (the iso-line is a diamond), an ``n``-pixel bar
      ``n x 1``, a ``w x h`` rectangle (``w >= h``) ``sqrt(w² + (h-1)²)`` long (the corner
      cut costs half a pixel at each end; the pixel-corner polygon would give
      ``sqrt(w² + h²)``), the disc above ``2r + 1`` long.

    Raises ``ValueError`` for an empty or non-2D mask, a non-positive spacing or an
    unknown convention.
    """
    if convention not in AXIS_CONVENTIONS:
        raise ValueError(f"mask_axes: convention must be one of {AXIS_CONVENTIONS}, got {convention!r}")
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_axes: expected a 2D mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("mask_axes: empty mask")
    s = np.asarray(spacing, dtype=np.float64)[:2]
    if s.size != 2 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"mask_axes: spacing must be positive, got {tuple(spacing)}")
    if convention == "uls23":
        return _axes_uls23(mask, s)
    return _axes_edge(mask, s)


def _axes_edge(mask: np.ndarray, s: np.ndarray) -> MaskAxes:
    """The ``"edge"`` convention of :func:`mask_axes` (half-pixel iso-line, exact perpendicular extent)."""
    polygons = [p * s for p in boundary_polygons(mask)]
    points = np.concatenate(polygons, axis=0)
    hull = _hull_points(points)
    diff = hull[:, None, :] - hull[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    long_mm_pts = hull[[i, j]]
    long_mm = float(math.sqrt(dist2[i, j]))

    d = (long_mm_pts[1] - long_mm_pts[0]) / long_mm
    n = np.array([-d[1], d[0]])
    starts = np.concatenate([p[:-1] for p in polygons], axis=0)
    ends = np.concatenate([p[1:] for p in polygons], axis=0)
    u0, u1 = starts @ d, ends @ d
    w0, w1 = starts @ n, ends @ n
    positions = np.unique(points @ d)
    best_len, best_t, best_w = -1.0, 0.0, (0.0, 0.0)
    for chunk in np.array_split(positions, max(1, len(positions) // 512)):
        t = chunk[:, None]
        lo, hi = np.minimum(u0, u1), np.maximum(u0, u1)
        hit = (lo <= t) & (t <= hi)
        span = np.where(u1 != u0, u1 - u0, 1.0)
        frac = np.clip((t - u0) / span, 0.0, 1.0)
        w = w0 + frac * (w1 - w0)
        w_max = np.where(hit, w, -np.inf).max(axis=1)
        w_min = np.where(hit, w, np.inf).min(axis=1)
        extent = w_max - w_min
        k = int(np.argmax(extent))
        if extent[k] > best_len:
            best_len, best_t, best_w = float(extent[k]), float(chunk[k]), (float(w_min[k]), float(w_max[k]))
    short_mm_pts = np.array([best_t * d + best_w[0] * n, best_t * d + best_w[1] * n])
    return MaskAxes(long_mm_pts / s, short_mm_pts / s, long_mm, max(best_len, 0.0), "edge")


def _axes_uls23(mask: np.ndarray, s: np.ndarray) -> MaskAxes:
    """The ``"uls23"`` convention of :func:`mask_axes` (ULS23's evaluator rule, pixel centres)."""
    boundary = mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)
    rows, cols = np.nonzero(boundary)  # row-major, the order of ULS23's np.argwhere
    px = np.stack([cols, rows], axis=1).astype(np.float64)  # (x, y) pixel centres
    n = len(px)
    if n == 1:
        return MaskAxes(px[[0, 0]], px[[0, 0]], 0.0, 0.0, "uls23")
    # Squared lengths as dx² + r dy² with r = (sy/sx)²: exact integers for square pixels,
    # so ties break as in ULS23's integer voxel grid.
    ratio = (s[1] / s[0]) ** 2
    i, j, d2 = _first_max_pair(px, lambda dx, dy: dx * dx + ratio * dy * dy, None)
    p1, p2 = px[i], px[j]
    long_mm = float(math.sqrt(d2) * s[0])
    u = (p2 - p1) * s
    if _collinear(px):
        return MaskAxes(np.stack([p1, p2]), np.stack([p1, p1]), long_mm, 0.0, "uls23")

    def deviation(dx, dy):
        vx, vy = dx * s[0], dy * s[1]
        with np.errstate(invalid="ignore", divide="ignore"):  # i == j pairs, never admitted
            cos = (vx * u[0] + vy * u[1]) / (np.hypot(vx, vy) * math.hypot(u[0], u[1]))
        return np.abs(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) - 90.0)

    min_dev = _min_over_pairs(px, deviation)
    tolerance = math.floor(min_dev) + 1  # ULS23 widens 0, 1, 2, ... degrees until a pair is within
    i, j, d2 = _first_max_pair(px, lambda dx, dy: dx * dx + ratio * dy * dy,
                               lambda dx, dy: deviation(dx, dy) < tolerance)
    return MaskAxes(np.stack([p1, p2]), np.stack([px[i], px[j]]), long_mm, float(math.sqrt(d2) * s[0]), "uls23")


def _pair_blocks(px: np.ndarray):
    """Yield ``(i0, dx, dy, upper)`` for row blocks ``i0..`` of all point pairs, ``upper`` marking ``j > i``."""
    n = len(px)
    rows = max(1, _PAIR_BLOCK // n)
    cols = np.arange(n)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        dx = px[None, :, 0] - px[i0:i1, None, 0]
        dy = px[None, :, 1] - px[i0:i1, None, 1]
        yield i0, dx, dy, cols[None, :] > np.arange(i0, i1)[:, None]


def _first_max_pair(px: np.ndarray, score, admit) -> tuple[int, int, float]:
    """The pair ``i < j`` with the largest ``score`` among those ``admit`` accepts; the first in row-major order on a tie."""
    best = (-1, -1, -np.inf)
    for i0, dx, dy, upper in _pair_blocks(px):
        keep = upper if admit is None else upper & admit(dx, dy)
        val = np.where(keep, score(dx, dy), -np.inf)
        k = int(np.argmax(val))
        r, c = divmod(k, val.shape[1])
        if val[r, c] > best[2]:
            best = (i0 + r, c, float(val[r, c]))
    return best


def _min_over_pairs(px: np.ndarray, value) -> float:
    """Smallest ``value(dx, dy)`` over all pairs ``i < j``."""
    return min(float(np.where(upper, value(dx, dy), np.inf).min()) for _, dx, dy, upper in _pair_blocks(px))


def _collinear(px: np.ndarray) -> bool:
    """True when all points lie on one line (exact for integer pixel coordinates)."""
    d = px - px[0]
    far = d[int(np.argmax(np.abs(d).sum(axis=1)))]
    return bool(np.all(far[0] * d[:, 1] - far[1] * d[:, 0] == 0))


def symmetric_error(pred: float, ref: float) -> float:
    """ULS23 axis error ``|pred - ref| / (|pred| + |ref|)``; 0 when both are 0."""
    denom = abs(pred) + abs(ref)
    return 0.0 if denom == 0 else abs(pred - ref) / denom


def _length(segment: np.ndarray) -> float:
    (x0, y0), (x1, y1) = segment[0], segment[1]
    return math.hypot(float(x1) - float(x0), float(y1) - float(y0))


def _hull_points(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull (Andrew's monotone chain); all points if fewer than 3."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower = half(pts)
    upper = half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))
