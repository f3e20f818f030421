"""Where the body is on one slice: centre, size, wall layers, and the body-level coordinates.

Every anatomical structure is placed in *body coordinates*: ``u`` from the body centre
towards image right (the patient's left), ``v`` towards the image bottom (posterior), both
in units of the body's half width / half depth on that slice.  Placing organs this way
makes them follow the body outline from patient to patient and slice to slice; small
structures (vessels, vertebrae) are sized in mm through ``mm``, the px-per-mm scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SliceFrame:
    """The body geometry of one slice (all lengths in px unless named ``_mm``).

    ``body_level``/``body_theta`` are the body outline's star level and angle on the whole
    slice; ``cavity_threshold`` is the per-pixel level of the inner edge of the muscle
    wall (chest or abdominal cavity), ``cavity`` its coverage.  Ribs, the sternum and
    everything clipped to the cavity use these instead of recomputing them.
    ``spine_y`` is the row of the vertebral body's centre and ``vertebra_mm`` its radius:
    the spine is hung from the back skin, not from the body centre (see
    :func:`~nnunet_ulseg.demo.anatomy.render_anatomy`).
    """

    cx: float
    cy: float
    a: float
    b: float
    mm: float
    level: float
    z_mm: float
    body_level: np.ndarray
    body_theta: np.ndarray
    cavity_threshold: np.ndarray
    cavity: np.ndarray
    body: np.ndarray
    wall_radius: object  # callable theta -> (rho of cavity edge in body units)
    spine_y: float
    vertebra_mm: float

    def xy(self, u: float, v: float) -> tuple[float, float]:
        """Pixel position of body coordinates ``(u, v)``."""
        return self.cx + u * self.a, self.cy + v * self.b

    def cavity_edge(self, angle: float) -> tuple[float, float]:
        """Pixel position where a ray from the centre at ``angle`` (image frame) meets the cavity edge."""
        rho = self.wall_radius(angle)
        return self.cx + rho * math.cos(angle) * self.a, self.cy + rho * math.sin(angle) * self.b
