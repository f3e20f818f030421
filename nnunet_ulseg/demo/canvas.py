"""A slice being drawn: HU image, structure labels and the painter that fills both.

Structures are painted back to front (body, wall, cavity, organs, vessels, bones); each
paint blends its HU into the image by the shape's anti-aliased coverage and claims the
label of the pixels it covers by more than half.  The label map is what lesions are
placed with ("a liver lesion centre must be liver"), never written to disk.
"""
from __future__ import annotations

import math

import numpy as np

from nnunet_ulseg.demo.shapes import box_around, coverage, radial_profile, star_level

#: Structure labels of the label map (not DeepLesion types).
LABELS = {
    "air": 0, "body_fat": 1, "muscle": 2, "cavity_fat": 3, "lung": 4, "liver": 5, "spleen": 6,
    "kidney": 7, "bone": 8, "vessel": 9, "bowel": 10, "heart": 11, "bladder": 12, "stomach": 13,
    "pancreas": 14, "airway": 15, "gallbladder": 16, "other": 17,
}

CIRCLE = radial_profile()


def bump(level: float, lo: float, peak: float, hi: float) -> float:
    """0 outside ``(lo, hi)``, 1 at ``peak``, ellipsoid-like ``sqrt(1 - x^2)`` in between.

    Gives the cranio-caudal size of an organ at body level ``level``: the cross-section
    of an ellipsoid grows and shrinks like this, so organs appear and vanish smoothly
    from slice to slice instead of popping.
    """
    if level <= lo or level >= hi:
        return 0.0
    x = (level - peak) / ((peak - lo) if level < peak else (hi - peak))
    return math.sqrt(max(0.0, 1.0 - x * x))


class Canvas:
    """HU image (float32, starts as air) plus uint8 structure labels and a texture field.

    ``texture`` is a smooth, unit-variance random field of the slice: multiplying it by a
    few HU gives organs the mottled look of real parenchyma instead of flat paint.
    ``fine`` is a ~1 px grain field of the same kind, thresholded for small vessels in
    lung and fat, trabecular bone and gas bubbles in stool.
    """

    def __init__(self, size: int, texture: np.ndarray, fine: np.ndarray) -> None:
        self.hu = np.full((size, size), -1000.0, dtype=np.float32)
        self.labels = np.zeros((size, size), dtype=np.uint8)
        self.texture = texture
        self.fine = fine
        self.shape = (size, size)

    def paint(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        value: float,
        label: str | None,
        profile: np.ndarray = CIRCLE,
        rotation: float = 0.0,
        tex: float = 0.0,
        within: np.ndarray | None = None,
        threshold: float = 1.0,
        above_y: float | None = None,
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Blend a star shape of HU ``value`` (+ ``tex`` x texture) into the slice.

        ``within`` (a full-slice coverage) clips the shape, e.g. lungs to the chest
        cavity; ``threshold < 1`` paints the concentric shrunken copy; ``above_y`` keeps
        only the part above that row (gas rising to the anterior side of a bowel loop,
        an air-fluid level).  Returns the box and coverage so callers can paint nested
        layers, or ``None`` when the shape is too small or off the slice.
        """
        if rx < 0.5 or ry < 0.5:
            return None
        box = box_around(cx, cy, max(rx, ry), self.shape)
        if box is None:
            return None
        level, _ = star_level(box, cx, cy, rx, ry, profile, rotation)
        cov = coverage(level, min(rx, ry), threshold)
        if within is not None:
            cov *= within[box]
        if above_y is not None:
            rows = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None]
            cov *= np.clip(np.float32(above_y) - rows + 0.5, 0.0, 1.0)
        self.blend(box, cov, value, label, tex)
        return box, cov

    def blend(self, box: tuple[slice, slice], cov: np.ndarray, value, label: str | None, tex: float = 0.0) -> None:
        """Blend ``value`` (scalar or array over ``box``) by ``cov``; label pixels with ``cov > 0.5``."""
        if tex:
            value = value + np.float32(tex) * self.texture[box]
        region = self.hu[box]
        region += cov * (np.float32(value) - region) if np.isscalar(value) else cov * (value - region)
        if label is not None:
            self.labels[box][cov > 0.5] = LABELS[label]
