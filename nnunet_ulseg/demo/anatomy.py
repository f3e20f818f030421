"""CT-like axial body slices for the demo corpus.

A patient is a set of random shape parameters (:func:`make_patient_anatomy`); a series
adds a scanner setting (pixel scale, position, contrast phase, texture fields:
:func:`make_series_anatomy`); a slice is rendered at a *body level* ``0..1`` (lung apex to
pelvic floor, :func:`render_anatomy`).  Every structure's position and size is a smooth
function of the level, so neighbouring slices of a series differ by a few millimetres
of anatomy, as in a real scan.

What is drawn, back to front: air, the scanner table, skin, subcutaneous fat (~-100 HU),
the muscle wall (~50 HU), the chest/abdominal cavity filled with fat, paraspinal, psoas
and gluteal muscles; lungs (~-860 HU with vessels) with heart, great vessels, trachea
and oesophagus on thorax levels; liver, gallbladder, spleen, stomach, pancreas, kidneys
(cortex/medulla/sinus fat), aorta, IVC and gas/fluid/contrast-filled bowel loops on
abdominal levels; bladder, rectum, uterus or prostate and iliac vessels in the pelvis
(:mod:`.organs`); then the skeleton (:mod:`.skeleton`).  HU values follow the series' contrast phase
(native, arterial, portal venous), since enhancement is what sets a lesion's contrast
against its organ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nnunet_ulseg.demo import organs, skeleton
from nnunet_ulseg.demo.canvas import Canvas
from nnunet_ulseg.demo.ct import blur
from nnunet_ulseg.demo.frame import SliceFrame
from nnunet_ulseg.demo.shapes import ANGLES, coverage, lookup, polar, radial_profile, random_profile

#: Organ HU per contrast phase (typical literature values).
PHASES = {
    "native": dict(artery=42, vein=40, blood=42, myocardium=45, liver=58, spleen=48, cortex=32, medulla=30,
                   pancreas=42, bowel_wall=40, hepatic_vessel=38),
    "arterial": dict(artery=290, vein=75, blood=240, myocardium=95, liver=72, spleen=95, cortex=190,
                     medulla=85, pancreas=110, bowel_wall=80, hepatic_vessel=110),
    "portal": dict(artery=170, vein=160, blood=150, myocardium=105, liver=105, spleen=115, cortex=165,
                   medulla=150, pancreas=95, bowel_wall=85, hepatic_vessel=170),
}

#: Body levels where the body's width/depth factors are given (linearly interpolated).
_KNOTS = np.array([-0.1, 0.1, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1])


@dataclass
class PatientAnatomy:
    """Random, fixed-per-patient body parameters (sizes in mm, shapes as radial profiles)."""

    half_width_mm: float
    half_depth_mm: float
    length_mm: float
    fat_mm: float
    female: bool
    width: np.ndarray
    depth: np.ndarray
    body_profile: np.ndarray
    fat_profile: np.ndarray
    profiles: dict = field(default_factory=dict)
    bowel: np.ndarray = field(default_factory=lambda: np.zeros((0, 11)))
    bone: dict = field(default_factory=dict)


@dataclass
class SeriesAnatomy:
    """A patient as seen by one series: pixel scale, position, contrast, texture fields."""

    patient: PatientAnatomy
    size: int
    mm: float
    cx: float
    cy: float
    hu: dict
    fields: list


def make_patient_anatomy(rng: np.random.Generator, female: bool) -> PatientAnatomy:
    """Draw a patient's body: size, fat, organ shapes, bowel loop layout, bone density.

    Sizes cover slim to large adults (half width 140-185 mm); the fat layer 6-35 mm.
    The ~150 bowel loops are short tubes scattered through the abdomen and pelvis, each
    visible over 15-45 mm of levels and drifting sideways, so the bowel pattern changes
    between slices like real loops coursing through the scan.
    """
    belly = rng.uniform(0.0, 0.1)
    # Harmonics 2-5 with phases that keep the outline nearly left-right symmetric (0 or pi
    # for even orders, +-pi/2 for odd ones, plus a little jitter): people lie straight on
    # the table, so a tilted random blob would look wrong.  Order 4 squares the ellipse,
    # the notch flattens the back against the table.
    symmetric = np.array([0.0, math.pi / 2, 0.0, math.pi / 2]) + rng.normal(0, 0.08, 4)
    body = radial_profile([rng.normal(0, 0.03), rng.normal(0, 0.02), -0.05, rng.normal(0, 0.01)],
                          symmetric, notch=(math.pi / 2, 0.07, 2.0))
    profiles = {
        "lung_r": random_profile(rng, 0.2, notch=(0.0, 0.3, 3.0)),
        "lung_l": random_profile(rng, 0.2, notch=(math.pi, 0.38, 3.0)),
    }
    profiles.update({name: random_profile(rng, rough) for name, rough in [
        ("heart", 0.15), ("liver", 0.3), ("liver_left", 0.35),
        ("spleen", 0.15), ("stomach", 0.25), ("pancreas", 0.5), ("bladder", 0.12), ("uterus", 0.2)]})
    n_loops = 150
    bowel = np.column_stack([
        rng.uniform(-0.62, 0.62, n_loops),          # u
        rng.uniform(-0.68, 0.3, n_loops),           # v
        rng.uniform(0.44, 0.98, n_loops),           # level of widest section
        rng.uniform(15.0, 45.0, n_loops),           # half length along z (mm)
        rng.uniform(8.0, 16.0, n_loops),            # radius (mm)
        rng.uniform(-1.2, 1.2, n_loops),            # du / dlevel
        rng.uniform(-1.2, 1.2, n_loops),            # dv / dlevel
        rng.choice(4, n_loops, p=[0.5, 0.25, 0.15, 0.1]),  # fluid, gas, oral contrast, stool
        rng.uniform(0.2, 0.7, n_loops),             # gas fraction
        rng.uniform(0.65, 1.0, n_loops),            # aspect ratio of the cross-section
        rng.uniform(0.0, np.pi, n_loops),           # its orientation
    ])
    age_factor = rng.uniform(0.75, 1.1)
    return PatientAnatomy(
        half_width_mm=rng.uniform(140.0, 185.0),
        half_depth_mm=rng.uniform(100.0, 130.0),
        length_mm=rng.uniform(620.0, 760.0),
        fat_mm=rng.uniform(6.0, 35.0),
        female=female,
        width=np.array([0.82, 0.96, 1.0, 0.97, 0.93, 0.97, 1.0, 0.97]) + rng.normal(0, 0.015, 8),
        depth=np.array([0.78, 0.86, 0.92, 0.95, 0.95 + belly, 0.92 + belly / 2, 0.88, 0.85]) + rng.normal(0, 0.015, 8),
        body_profile=body,
        fat_profile=random_profile(rng, 0.6, 3),
        profiles=profiles,
        bowel=bowel,
        bone=dict(cortex=rng.uniform(650.0, 950.0) * age_factor, marrow=rng.uniform(190.0, 280.0) * age_factor),
    )


def make_series_anatomy(
    patient: PatientAnatomy, rng: np.random.Generator, pixel_mm: float, size: int, phase: str
) -> SeriesAnatomy:
    """Place the patient in a ``size`` px field of view with ``pixel_mm`` spacing.

    The body is drawn at its true size (``1 / pixel_mm`` px per mm) unless that would
    overflow the image (small ``size`` for tests): then the whole anatomy is scaled down
    to fit, keeping proportions.  Enhancement is scaled per series (+-15 %) since contrast
    timing varies from scan to scan.  Texture fields are made once per series at full
    resolution and blended per slice (:func:`render_anatomy`).
    """
    mm = min(1.0 / pixel_mm, 0.45 * size / patient.half_width_mm)
    gain = rng.uniform(0.85, 1.15)
    native = PHASES["native"]
    hu = {k: native[k] + gain * (v - native[k]) for k, v in PHASES[phase].items()}
    fields = []
    for sigma in (5.0, 5.0, 1.1, 1.1):
        f = blur(rng.standard_normal((size, size), dtype=np.float32), sigma * size / 512)
        fields.append((f / f.std()).astype(np.float32))
    cx = size / 2 + rng.uniform(-0.02, 0.02) * size
    cy = size / 2 + rng.uniform(-0.04, 0.0) * size
    return SeriesAnatomy(patient, size, mm, cx, cy, hu, fields)


def _blend(f0: np.ndarray, f1: np.ndarray, z_mm: float, wavelength_mm: float) -> np.ndarray:
    """``cos(w) f0 + sin(w) f1`` with ``w = 2 pi z / wavelength``: a unit-variance field that
    changes smoothly with z (two independent fields, rotated), one wavelength = fully new."""
    w = 2 * math.pi * z_mm / wavelength_mm
    return np.float32(math.cos(w)) * f0 + np.float32(math.sin(w)) * f1


def render_anatomy(series: SeriesAnatomy, level: float) -> tuple[Canvas, SliceFrame]:
    """Render the noise-free anatomy at body ``level``; returns the canvas and slice frame.

    The canvas' ``hu`` is float32 HU (air -1000), ``labels`` the structure map used to
    place lesions.  Noise and blur are added later (:mod:`.ct`), after lesions are in.
    """
    p = series.patient
    mm = series.mm
    z = level * p.length_mm
    canvas = Canvas(series.size, _blend(*series.fields[:2], z, 45.0), _blend(*series.fields[2:], z, 9.0))
    a = p.half_width_mm * mm * float(np.interp(level, _KNOTS, p.width))
    b = p.half_depth_mm * mm * float(np.interp(level, _KNOTS, p.depth))
    cx, cy = series.cx, series.cy
    size = series.size

    canvas.paint(cx, cy + b + 13.0 * mm, 0.44 * size, 6.0 * mm, -350.0, None,
                 profile=radial_profile([0, 0, -0.15], [0, 0, 0]))  # scanner table
    # Everything below is computed only inside the body's bounding box (~half the slice).
    box = (slice(max(0, int(cy - b) - 2), min(size, int(cy + b) + 3)),
           slice(max(0, int(cx - a) - 2), min(size, int(cx + a) + 3)))
    rho, theta = polar(box, cx, cy, a, b)
    radius = 0.5 * (a + b)
    r_mm = radius / mm
    fat_mm = p.fat_mm * (0.7 + 0.4 * min(1.0, max(0.0, (level - 0.2) / 0.5)))
    fat_tab = (2.0 + fat_mm * p.fat_profile) / r_mm
    muscle_mm = 9.0 + 7.0 * np.maximum(0.0, np.sin(ANGLES)) + 4.0 * (level < 0.35)
    cavity_tab = (1.0 - fat_tab - muscle_mm / r_mm).astype(np.float32)
    outline, fat_thr, cavity_thr = lookup(np.stack([p.body_profile, 1.0 - fat_tab, cavity_tab]), theta)
    g = rho / outline

    body = coverage(g, radius)
    canvas.blend(box, body, 30.0, "body_fat", tex=4.0)
    canvas.blend(box, coverage(g, radius, 1.0 - 2.0 / r_mm), -105.0, "body_fat", tex=8.0)
    canvas.blend(box, coverage(g, radius, fat_thr), 52.0, "muscle", tex=5.0)
    cavity = coverage(g, radius, cavity_thr)
    canvas.blend(box, cavity, -95.0, "cavity_fat", tex=10.0)
    canvas.hu[box] += cavity * np.clip((canvas.fine[box] - 2.3) * 250.0, 0.0, 120.0)  # small fat vessels

    def whole(part: np.ndarray, fill: float) -> np.ndarray:
        """A full-slice array holding ``part`` inside the body box and ``fill`` outside."""
        out = np.full((size, size), fill, dtype=np.float32)
        out[box] = part
        return out

    def wall_radius(angle: float) -> float:
        """Cavity edge's distance from the centre (body units) along ``angle``."""
        return float(np.interp(angle, ANGLES, cavity_tab * p.body_profile, period=2 * math.pi))

    # The spine hangs from the back: spinous tip ~8 mm under the fat, so it never pokes
    # through the skin of a slim patient and stays posterior in a large one.
    vertebra_mm = 15.0 + 8.0 * min(1.0, max(0.0, level / 0.7))
    back_y = cy + float(lookup(p.body_profile, np.float32([math.pi / 2]))[0]) * b
    back_fat_mm = float(lookup(fat_tab.astype(np.float32), np.float32([math.pi / 2]))[0]) * r_mm
    spine_y = back_y - (back_fat_mm + 8.0 + 25.0 + 8.5 + 0.92 * vertebra_mm) * mm
    frame = SliceFrame(cx, cy, a, b, mm, level, z, whole(g, 9.0), whole(theta, 0.0), whole(cavity_thr, 0.0),
                       whole(cavity, 0.0), whole(body, 0.0), wall_radius, spine_y, vertebra_mm)
    organs.paint_muscles(canvas, frame)
    if level < 0.45:
        organs.paint_thorax(canvas, frame, series)
    if 0.28 < level < 1.0:
        organs.paint_abdomen(canvas, frame, series)
    if level > 0.7:
        organs.paint_pelvis(canvas, frame, series)
    organs.paint_back_muscles(canvas, frame)
    bone = p.bone
    skeleton.paint_spine(canvas, frame, bone)
    skeleton.paint_ribs(canvas, frame, bone)
    skeleton.paint_chest_bones(canvas, frame, bone)
    skeleton.paint_pelvis(canvas, frame, bone)
    return canvas, frame
