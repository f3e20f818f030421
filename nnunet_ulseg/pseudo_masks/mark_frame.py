"""Geometry of a RECIST mark on a pixel grid, shared by the trimap pseudo-mask makers.

WSSS (``papers/wsss_self_paced_3d.txt``) Sec. 3.1 and its Table 1 settings describe every
region in terms of "the lesion bounding box tightly around the RECIST axes" ``[w, h]``,
regions "dilated from R" and distances.  This module gives those quantities once:

* :class:`MarkFrame`: the tight box of the four endpoints in the frame of the long axis
  (``u`` along it, ``v`` across it, as :func:`nnunet_ulseg.recist.ellipse_params` uses),
  its centre and its sides ``w`` (along the long axis) and ``h`` (across it).
  Choice: the box is oriented with the mark, not aligned with the image.  The paper does
  not say; an image-aligned box of an oblique thin lesion (long 40 px, short 10 px at 45
  degrees) is 28 x 28 px, five times the mark's 40 x 10 px box, so every "x % of the ROI"
  would change with the lesion's orientation.  For a mark aligned with the image both
  readings are the same box.
* :func:`axis_distances`: per pixel centre, the Euclidean distance to the nearer axis
  segment, and the *band* distance: the perpendicular distance to an axis where the
  pixel's projection falls on the segment (infinite elsewhere).  A region "dilated from R"
  is a band around each axis that stops at the endpoints: the endpoints lie on the lesion
  boundary, so round caps around them (a plain dilation) would put hard foreground
  outside the lesion at each of the four tips (about 8 % of a round lesion's area when
  the dilation radius is a tenth of its diameter).
* :func:`nearest_pixels`: the ``n`` pixels of a region with the smallest value, ties
  broken by a second key then by raster order, so region sizes are exact pixel counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunet_ulseg.recist import Recist


@dataclass(frozen=True)
class MarkFrame:
    """The tight box of a mark in its own frame: centre ``(cx, cy)``, unit vectors ``d`` (long axis), ``n``."""

    cx: float
    cy: float
    d: tuple[float, float]
    n: tuple[float, float]
    w: float
    h: float

    @classmethod
    def of(cls, recist: Recist) -> "MarkFrame":
        p0, p1 = recist.long_axis
        d = (p1 - p0) / recist.long_length
        n = np.array([-d[1], d[0]])
        pts = recist.points
        u, v = pts @ d, pts @ n
        cu, cv = 0.5 * (u.min() + u.max()), 0.5 * (v.min() + v.max())
        centre = cu * d + cv * n
        return cls(float(centre[0]), float(centre[1]), (float(d[0]), float(d[1])), (float(n[0]), float(n[1])),
                   float(u.max() - u.min()), float(v.max() - v.min()))

    def coords(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` of every pixel centre (``x = column, y = row``) relative to the box centre."""
        ys, xs = np.mgrid[0:int(shape[0]), 0:int(shape[1])].astype(np.float64)
        dx, dy = xs - self.cx, ys - self.cy
        return dx * self.d[0] + dy * self.d[1], dx * self.n[0] + dy * self.n[1]

    def box(self, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
        """Pixels whose centres lie in the box scaled by ``scale`` about its centre (sides ``scale*w``, ``scale*h``)."""
        u, v = self.coords(shape)
        return (np.abs(u) <= 0.5 * scale * self.w) & (np.abs(v) <= 0.5 * scale * self.h)

    def bounding_rect(self, shape: tuple[int, int], scale: float, margin: int = 2) -> tuple[slice, slice]:
        """Image-aligned ``(rows, cols)`` slices covering the box scaled by ``scale`` (plus ``margin`` px), clipped."""
        hu, hv = 0.5 * scale * self.w, 0.5 * scale * self.h
        half_x = abs(self.d[0]) * hu + abs(self.n[0]) * hv
        half_y = abs(self.d[1]) * hu + abs(self.n[1]) * hv
        h, w = int(shape[0]), int(shape[1])
        x0, x1 = max(0, math.floor(self.cx - half_x) - margin), min(w, math.ceil(self.cx + half_x) + margin + 1)
        y0, y1 = max(0, math.floor(self.cy - half_y) - margin), min(h, math.ceil(self.cy + half_y) + margin + 1)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def axis_distances(recist: Recist, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(euclidean, band)`` distances (px) of every pixel centre to the mark's two axis segments (module docstring)."""
    ys, xs = np.mgrid[0:int(shape[0]), 0:int(shape[1])].astype(np.float64)
    euclid = np.full(xs.shape, np.inf)
    band = np.full(xs.shape, np.inf)
    for (x0, y0), (x1, y1) in (recist.long_axis, recist.short_axis):
        ex, ey = x1 - x0, y1 - y0
        length2 = ex * ex + ey * ey
        t = ((xs - x0) * ex + (ys - y0) * ey) / length2
        perp = np.abs((xs - x0) * ey - (ys - y0) * ex) / math.sqrt(length2)
        tc = np.clip(t, 0.0, 1.0)
        euclid = np.minimum(euclid, np.hypot(xs - (x0 + tc * ex), ys - (y0 + tc * ey)))
        band = np.minimum(band, np.where((t >= 0.0) & (t <= 1.0), perp, np.inf))
    return euclid, band


def nearest_pixels(region: np.ndarray, n: int, key: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    """Bool mask of the ``n`` pixels of ``region`` with the smallest ``key`` (then ``tie``, then raster order)."""
    idx = np.flatnonzero(region)
    n = max(0, min(int(n), idx.size))
    keys = (key.ravel()[idx],) if tie is None else (tie.ravel()[idx], key.ravel()[idx])
    order = np.lexsort(keys)  # the last key is the primary one
    out = np.zeros(region.size, bool)
    out[idx[order[:n]]] = True
    return out.reshape(region.shape)
