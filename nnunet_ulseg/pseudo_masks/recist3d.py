"""3D RECIST estimation: the RECIST mark carried to an off-key slice (WSSS Sec. 3.3, supplement Fig. 9).

WSSS (``papers/wsss_self_paced_3d.txt``) Sec. 3.3 "3D RECIST Estimation": the key slice's
mark lies on the lesion's largest cross-section; on a slice at physical distance ``d`` from
it the endpoints move toward the intersection point of the long and short axes, "projected
from the actual RECIST endpoints by Pythagorean theorem using physical Euclidean distance".
The supplement adds (Fig. 9) that the off-slice long/short lengths follow "the long/short
axis ratio of the actual RECIST diameters" and that the axes' intersection stays where the
key slice's is.  Algorithm 1 uses the estimate ``R̂`` on slices ``r ± τ`` to build the trimaps
of the self-paced propagation (``cnn_trimap.py``).

Geometry (Pythagoras): an endpoint at in-plane distance ``ρ`` mm from the crossing point ``c``
is a point of the lesion's surface; treating the lesion around ``c`` as a sphere of radius
``ρ``, its section at height ``d`` has radius ``sqrt(max(0, ρ² - d²))``.  Every point moves
along its own ray from ``c`` (a scaling about ``c``, so each endpoint keeps its direction in
pixels and in mm alike); distances are in mm with the in-plane spacing ``(sx, sy)``, so
anisotropic pixels shrink correctly.  Two readings, both available as ``mode``:

* ``"ratio"`` (default; the supplement's explicit wording): the two long-axis endpoints each
  move by Pythagoras with their own distance to ``c`` (the main text: "calculated by their
  relative distance to the intersection point"); the short axis is then scaled about ``c`` by
  the same factor as the long axis' length, so short/long keeps the key slice's ratio.  The
  lesion model is an ellipsoid whose depth is the long axis; the estimate ends (``None``)
  where the long axis vanishes, ``d >= max`` of the long endpoints' distances to ``c``.
* ``"endpoint"``: each of the four endpoints moves by Pythagoras with its own distance (the
  main text read point by point).  The short axis vanishes first, at ``d >= max`` of the short
  endpoints' distances; a mark with no width has no region, so the estimate ends there.

``None`` means "beyond the lesion's reach": no RECIST estimate, hence no region ``R̂``, on that
slice.  An endpoint already at ``c`` (a T-shaped mark) stays there.  The crossing point is the
intersection of the two axis lines; it exists because :class:`~nnunet_ulseg.recist.Recist`
refuses parallel axes, and for a drawn mark (crossing segments) it lies on both segments.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nnunet_ulseg.recist import MIN_AXIS_PX, Recist, ellipse_mask

#: The readings of the paper's projection (module docstring).
MODES = ("ratio", "endpoint")


def crossing_point(recist: Recist) -> np.ndarray:
    """``(x, y)``: the intersection of the long-axis and the short-axis line (pixel coordinates)."""
    p0, p1 = recist.long_axis
    q0, q1 = recist.short_axis
    u, v = p1 - p0, q1 - q0
    denom = u[0] * v[1] - u[1] * v[0]  # non-zero: Recist refuses parallel axes
    w = q0 - p0
    t = (w[0] * v[1] - w[1] * v[0]) / denom
    return p0 + t * u


def _spacing_xy(spacing: Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size < 2 or not np.all(np.isfinite(s[:2])) or not np.all(s[:2] > 0):
        raise ValueError(f"in-plane spacing must be two positive numbers (x, y) mm, got {spacing!r}")
    return s[:2]


def slice_distance_mm(slice_offset: float, slice_interval_mm: float) -> float:
    """Physical distance ``|offset| * interval`` (mm) of a slice ``offset`` slices from the key slice.

    ``slice_interval_mm`` is DeepLesion's z spacing (``Spacing_mm_px_[2]``).
    """
    offset, interval = float(slice_offset), float(slice_interval_mm)
    if not math.isfinite(offset):
        raise ValueError(f"slice offset must be finite, got {slice_offset!r}")
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"slice interval must be a positive number of mm, got {slice_interval_mm!r}")
    return abs(offset) * interval


def _length_mm(segment: np.ndarray, s: Sequence[float]) -> float:
    """Length of a ``(2, 2)`` segment with pixel spacing ``s`` (unit spacing: pixels)."""
    dx, dy = (segment[1] - segment[0]) * np.asarray(s, dtype=np.float64)
    return float(math.hypot(dx, dy))


def _shrunk(points: np.ndarray, centre: np.ndarray, s: np.ndarray, d: float) -> np.ndarray:
    """``points`` moved along their rays from ``centre`` to the mm radius ``sqrt(max(0, ρ² - d²))``."""
    rel = points - centre
    rho = np.hypot(rel[:, 0] * s[0], rel[:, 1] * s[1])
    new_rho = np.sqrt(np.maximum(0.0, rho ** 2 - d ** 2))
    factor = np.divide(new_rho, rho, out=np.zeros_like(rho), where=rho > 0)
    return centre + rel * factor[:, None]


def estimate_recist(recist: Recist, offset_mm: float, spacing_xy: Sequence[float],
                    mode: str = "ratio") -> Recist | None:
    """The estimated mark ``R̂`` on a slice ``offset_mm`` mm from the key slice, or ``None`` beyond reach.

    ``recist`` is the key slice's mark in pixel coordinates of a grid with in-plane spacing
    ``spacing_xy`` = ``(sx, sy)`` mm (a longer tuple such as DeepLesion's ``(x, y, z)`` is
    accepted; only x and y are used).  The sign of ``offset_mm`` (above or below) does not
    matter.  ``mode``: :data:`MODES`, see the module docstring.  The result's points keep
    the order long endpoints, short endpoints, and its crossing point is the key slice's.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    d = float(offset_mm)
    if not math.isfinite(d):
        raise ValueError(f"offset must be a finite number of mm, got {offset_mm!r}")
    d = abs(d)
    s = _spacing_xy(spacing_xy)
    c = crossing_point(recist)
    long_axis = _shrunk(recist.long_axis, c, s, d)
    if mode == "endpoint":
        short_axis = _shrunk(recist.short_axis, c, s, d)
    else:  # the short axis scaled about c like the long axis' mm length
        short_axis = c + (recist.short_axis - c) * (_length_mm(long_axis, s) / _length_mm(recist.long_axis, s))
    if min(_length_mm(long_axis, (1.0, 1.0)), _length_mm(short_axis, (1.0, 1.0))) < MIN_AXIS_PX:
        return None
    return Recist(long_axis, short_axis)


def estimate_recist_at_slice(recist: Recist, slice_offset: float, spacing: Sequence[float],
                             mode: str = "ratio") -> Recist | None:
    """:func:`estimate_recist` for a slice ``slice_offset`` slices away, ``spacing`` = ``(sx, sy, sz)`` mm."""
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size != 3:
        raise ValueError(f"spacing must be (x, y, z) mm, got {spacing!r}")
    return estimate_recist(recist, slice_distance_mm(slice_offset, s[2]), s[:2], mode)


def estimated_region(recist_hat: Recist | None, shape: tuple[int, int]) -> np.ndarray:
    """The estimated RECIST region ``R̂`` on a ``(H, W)`` grid: the ellipse of the estimated mark.

    The paper names no shape for ``R̂``'s region; the RECIST ellipse (AHRNet Sec. 2.2,
    :func:`~nnunet_ulseg.recist.ellipse_mask`) is the product's one region of a mark, and it is
    the ellipse through the four estimated endpoints for a perpendicular mark.  ``None`` (beyond
    the lesion's reach) gives an empty region.
    """
    if recist_hat is None:
        return np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    return ellipse_mask(recist_hat, shape)
