"""Star-shaped implicit shapes: the drawing primitive of the demo anatomy and lesions.

A shape is a centre, two radii, a rotation and a *radial profile*: a table of relative
radii ``r(theta)`` (max 1) over ``N_ANGLES`` equally spaced angles.  A point belongs to
the shape when its *level* ``g = rho / r(theta)`` is below 1, ``rho`` being its distance
from the centre after rotating and dividing by the radii.  Why this representation:

* one representation covers organs (smooth, a few harmonics), lobulated and spiculated
  lesions (more harmonics, spikes) and, through unions (``min`` of levels), concave
  multi-blob lesions;
* the level is a cheap, vectorised function of pixel coordinates and is evaluated only
  inside the shape's bounding box, which keeps a 512 x 512 slice with ~40 structures fast;
* thresholding the same level at ``c < 1`` gives a concentric, shrunken copy (fat and
  muscle layers inside the body outline, a necrotic core inside a lesion) for free;
* ``(1 - g) * radius_px`` approximates the signed distance to the boundary in pixels,
  which gives a one-pixel anti-aliased (partial-volume) edge without a blur pass.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

#: Angular samples of a radial profile; 0.5 degree steps are finer than a pixel for
#: every shape that fits in a 512 px slice.
N_ANGLES = 720
#: The angles (rad, ``[-pi, pi)``) at which a profile is tabulated.
ANGLES = np.linspace(-math.pi, math.pi, N_ANGLES, endpoint=False)


def radial_profile(
    amplitudes: np.ndarray | list[float] = (),
    phases: np.ndarray | list[float] = (),
    spikes: list[tuple[int, float, float, float]] | None = None,
    notch: tuple[float, float, float] | None = None,
    floor: float = 0.2,
) -> np.ndarray:
    """Relative radius table ``r(theta)`` (``N_ANGLES`` values, maximum exactly 1).

    ``amplitudes[i]``/``phases[i]`` add the harmonic of order ``i + 2`` (order 1 only
    shifts the centre, so it is skipped): ``1 + sum a cos(k theta + phi)``.  ``spikes``
    are ``(order, amplitude, sharpness, phase)`` tuples that multiply the radius by
    ``1 + amplitude * max(0, cos(order theta + phase)) ** sharpness``: narrow outward
    spikes, i.e. spiculation.  ``notch = (angle, depth, sharpness)`` carves one inward
    dent (a kidney's hilum, a bean).  Radii are floored at ``floor`` so the shape stays
    star-shaped around its centre, then normalised to a maximum of 1 so the shape lies
    inside its nominal radii (bounding boxes are exact).
    """
    r = np.ones(N_ANGLES)
    for i, (a, p) in enumerate(zip(amplitudes, phases)):
        r += a * np.cos((i + 2) * ANGLES + p)
    for order, amp, sharp, phase in spikes or ():
        r *= 1.0 + amp * np.maximum(0.0, np.cos(order * ANGLES + phase)) ** sharp
    if notch is not None:
        angle, depth, sharp = notch
        r *= 1.0 - depth * np.maximum(0.0, np.cos(ANGLES - angle)) ** sharp
    r = np.maximum(r, floor * r.max())
    return (r / r.max()).astype(np.float32)


def random_profile(
    rng: np.random.Generator, roughness: float, n_harmonics: int = 5, notch: tuple[float, float, float] | None = None
) -> np.ndarray:
    """A random smooth profile whose harmonic amplitudes fall off as ``roughness / k``.

    The ``1/k`` fall-off keeps the outline smooth (organ-like) for small ``roughness``
    and lobulated for large; phases are uniform.  ``notch`` as in :func:`radial_profile`.
    """
    k = np.arange(2, n_harmonics + 2)
    amps = roughness * rng.uniform(0.3, 1.0, n_harmonics) / k
    return radial_profile(amps, rng.uniform(0, 2 * math.pi, n_harmonics), notch=notch)


def box_around(cx: float, cy: float, half: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Index slices of the square ``[cx - half, cx + half]`` (plus one pixel) clipped to ``shape``.

    Returns ``None`` when the box misses the image, so callers can skip invisible shapes.
    """
    y0 = max(0, int(math.floor(cy - half)) - 1)
    y1 = min(shape[0], int(math.ceil(cy + half)) + 2)
    x0 = max(0, int(math.floor(cx - half)) - 1)
    x1 = min(shape[1], int(math.ceil(cx + half)) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def polar(
    box: tuple[slice, slice], cx: float, cy: float, rx: float, ry: float, rotation: float = 0.0,
    with_angle: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised polar coordinates of the pixel centres of ``box``.

    ``rho`` is the distance from ``(cx, cy)`` after rotating by ``-rotation`` and dividing
    by the radii ``rx``/``ry`` (px), ``theta`` the angle in that frame, in ``[0, 2 pi)``
    (``None`` unless ``with_angle``).  OpenCV's polar transform is used for the angle:
    ~20x faster than ``np.arctan2``, with an angle error below 2e-4 rad.
    """
    ys = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    if rotation == 0.0:  # axis-aligned: u is a row and v a column, broadcast only once
        u, v = xs / np.float32(rx), ys / np.float32(ry)
    else:
        c, s = np.float32(math.cos(rotation)), np.float32(math.sin(rotation))
        u = (xs * c + ys * s) / np.float32(rx)
        v = (ys * c - xs * s) / np.float32(ry)
    if not with_angle:
        return np.sqrt(u * u + v * v), None
    u, v = (np.ascontiguousarray(a, dtype=np.float32) for a in np.broadcast_arrays(u, v))
    rho, theta = cv2.cartToPolar(u, v)
    return rho, theta


def star_level(
    box: tuple[slice, slice],
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    profile: np.ndarray,
    rotation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Level ``g`` of a star shape on the pixel centres of ``box``; also returns ``theta``.

    ``rx``/``ry`` are the radii (px) along the shape's own axes, ``rotation`` the angle
    (rad) of its x axis from the image x axis.  Inside is ``g < 1``.  ``theta`` (the angle
    in the shape's normalised frame, ``[0, 2 pi)``) is returned because layered
    structures need it and it is the expensive part; for a plain ellipse (a profile of
    all ones) it is not computed and ``None`` is returned.
    """
    if profile.min() >= 1.0:
        return polar(box, cx, cy, rx, ry, rotation, with_angle=False)
    rho, theta = polar(box, cx, cy, rx, ry, rotation)
    return rho / lookup(profile, theta), theta


def lookup(profile: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Linear interpolation of a radial profile at angles ``theta`` (rad, in ``[-pi, 3 pi)``).

    Done by hand on the uniform angle grid, all in float32 with ``np.take``, because
    ``np.interp`` searches and converts to float64, which made it the slowest step of
    slice rendering.  Both ``arctan2``'s ``[-pi, pi]`` and OpenCV's ``[0, 2 pi)`` work.
    A ``(K, N_ANGLES)`` stack of profiles returns a list of K arrays and shares the index
    arithmetic (the body outline and its fat and muscle layers are looked up together).
    """
    pos = (theta + np.float32(math.pi)) * np.float32(N_ANGLES / (2 * math.pi))
    pos = np.where(pos >= N_ANGLES, pos - np.float32(N_ANGLES), pos)
    i0 = pos.astype(np.int32)
    np.minimum(i0, N_ANGLES - 1, out=i0)
    frac = pos - i0.astype(np.float32)
    profile = np.asarray(profile, dtype=np.float32)
    step = np.roll(profile, -1, axis=-1) - profile
    if profile.ndim == 1:
        return np.take(profile, i0) + frac * np.take(step, i0)
    return [np.take(p, i0) + frac * np.take(s, i0) for p, s in zip(profile, step)]


def coverage(level: np.ndarray, radius_px: float, threshold: float = 1.0) -> np.ndarray:
    """Fraction of each pixel inside ``level < threshold`` (0..1, float32).

    ``(threshold - level) * radius_px`` approximates the signed distance (px) to the
    boundary, so the ramp is about one pixel wide: a partial-volume edge like a CT
    reconstruction of a sharp interface, at no extra cost.
    """
    return np.clip((threshold - level) * np.float32(radius_px) + np.float32(0.5), 0.0, 1.0)
