"""Soft-tissue organs of the demo anatomy, by body region.

Each ``paint_*`` function draws one region's structures onto a slice canvas at the
slice frame's body level; sizes follow ``bump`` profiles along z so organs grow and
shrink smoothly between neighbouring slices.  Positions are in body coordinates
(:class:`~nnunet_ulseg.demo.frame.SliceFrame`), HU values from the series' contrast
phase (``series.hu``).  The painting order inside a region matters: later structures
cover earlier ones (solid organs over bowel loops, vessels over fat).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nnunet_ulseg.demo.canvas import Canvas, bump
from nnunet_ulseg.demo.frame import SliceFrame
from nnunet_ulseg.demo.shapes import radial_profile

if TYPE_CHECKING:
    from nnunet_ulseg.demo.anatomy import SeriesAnatomy


def paint_back_muscles(c: Canvas, f: SliceFrame) -> None:
    """Paraspinal muscles either side of the spinous process (all levels).

    Painted after the organs (before the bones): nothing lies inside them, and painting
    them last keeps lung bases, liver and kidneys out of the back muscles.
    """
    mm = f.mm
    canal_y = f.spine_y + (0.92 * f.vertebra_mm + 8.5) * mm
    for side in (-1, 1):
        c.paint(f.cx + side * 30.0 * mm, canal_y + 12.0 * mm, 30.0 * mm, 26.0 * mm, 55.0, "muscle",
                rotation=side * 0.3, tex=5.0, within=f.body)


def paint_muscles(c: Canvas, f: SliceFrame) -> None:
    """Psoas (lumbar), gluteal and iliacus muscles (pelvis); painted before the organs."""
    level, mm = f.level, f.mm
    for side in (-1, 1):
        t = bump(level, 0.47, 0.82, 0.95)
        if t > 0:
            x, y = f.xy(side * (0.15 + 0.15 * t), 0.42 - 0.12 * t)
            c.paint(x, y, (10.0 + 20.0 * t) * mm, (10.0 + 14.0 * t) * mm, 50.0, "muscle", tex=5.0)
        t = bump(level, 0.7, 0.88, 1.05)
        if t > 0:
            x, y = f.xy(side * 0.5, 0.62)
            c.paint(x, y, 0.36 * f.a * t, 0.34 * f.b * t, 52.0, "muscle", rotation=-side * 0.4, tex=5.0,
                    within=f.body)


def _vessel(c: Canvas, f: SliceFrame, u: float, v: float, r_mm: float, value: float, ry_mm: float | None = None) -> None:
    """A round (or oval) tubular structure of radius ``r_mm`` at body coordinates ``(u, v)``."""
    x, y = f.xy(u, v)
    c.paint(x, y, r_mm * f.mm, (ry_mm or r_mm) * f.mm, value, "vessel", tex=3.0)


def paint_thorax(c: Canvas, f: SliceFrame, s: SeriesAnatomy) -> None:
    """Lungs with vessels, heart, great vessels, airways, oesophagus."""
    level, mm, hu, prof = f.level, f.mm, s.hu, s.patient.profiles
    t = bump(level, -0.04, 0.26, 0.44)
    if t > 0:
        post = max(0.0, level - 0.26) * 1.6
        for side, name, u in ((-1, "lung_r", -0.47), (1, "lung_l", 0.49)):
            x, y = f.xy(u, 0.02 + post)
            size = t ** 0.7
            res = c.paint(x, y, 0.5 * f.a * size, 0.9 * f.b * size, -862.0, "lung", profile=prof[name],
                          tex=12.0, within=f.cavity)
            if res is not None:
                box, cov = res
                c.hu[box] += cov * np.clip((c.fine[box] - 1.55) * 520.0, 0.0, 880.0)
    t = bump(level, 0.13, 0.27, 0.37)
    if t > 0:
        x, y = f.xy(0.12, -0.2)
        c.paint(x, y, 0.36 * f.a * t, 0.5 * f.b * t, hu["myocardium"], "heart", profile=prof["heart"],
                rotation=-0.5, tex=4.0, within=f.cavity)
        c.paint(x + 4 * mm, y, 0.36 * f.a * t, 0.5 * f.b * t, hu["blood"], "heart", profile=prof["heart"],
                rotation=-0.5, threshold=0.72, tex=4.0)
    if 0.09 < level < 0.21:
        _vessel(c, f, 0.02, -0.28, 15.0, hu["artery"])  # ascending aorta
    if 0.055 < level < 0.1:
        x0, y0 = f.xy(0.02, -0.28)
        x1, y1 = f.xy(0.13, 0.33)
        c.paint(0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.5 * math.hypot(x1 - x0, y1 - y0) + 12 * mm, 12.5 * mm,
                hu["artery"], "vessel", rotation=math.atan2(y1 - y0, x1 - x0), tex=3.0)  # arch
    if 0.085 < level < 0.74:
        k = max(0.0, level - 0.36)
        _vessel(c, f, max(0.05, 0.13 - 1.0 * k), max(0.14, 0.33 - 1.6 * k), 12.5 - 3.0 * min(1.0, k * 3),
                hu["artery"])  # descending aorta (continues into the abdomen)
    if 0.13 < level < 0.19:
        _vessel(c, f, 0.11, -0.2, 14.0, hu["vein"] * 0.5 + hu["artery"] * 0.5)  # pulmonary trunk
    if 0.16 < level < 0.21:
        for u in (-0.2, 0.22):
            _vessel(c, f, u, -0.05, 9.0, hu["vein"] * 0.5 + hu["artery"] * 0.5)
    if 0.04 < level < 0.19:
        _vessel(c, f, -0.13, -0.22, 10.0, hu["vein"])  # SVC
    if level < 0.065:
        for u, v in ((-0.09, -0.18), (0.02, -0.23), (0.11, -0.14)):
            _vessel(c, f, u, v, 6.0, hu["artery"])
    if level < 0.155:
        x, y = f.xy(0.0, 0.08)
        c.paint(x, y, 11.0 * mm, 10.0 * mm, 40.0, "other")
        c.paint(x, y, 9.0 * mm, 8.0 * mm, -990.0, "airway")
    elif level < 0.2:
        for u in (-0.1, 0.1):
            x, y = f.xy(u, 0.1)
            c.paint(x, y, 7.0 * mm, 6.5 * mm, 40.0, "other")
            c.paint(x, y, 5.5 * mm, 5.0 * mm, -990.0, "airway")
    if level < 0.4:
        _vessel(c, f, 0.04 + 0.2 * max(0.0, level - 0.3), 0.27, 7.0, 40.0, 6.0)  # oesophagus


def _bowel(c: Canvas, f: SliceFrame, s: SeriesAnatomy) -> None:
    """Small-bowel loops and colon: wall plus fluid, gas (air-fluid level), oral contrast or stool."""
    level, mm, p = f.level, f.mm, s.patient
    loops = p.bowel
    visible = np.abs(level - loops[:, 2]) * p.length_mm < loops[:, 3]
    wall = s.hu["bowel_wall"]
    for u, v, lc, hz, r, du, dv, kind, gas, aspect, rot in loops[visible]:
        t = bump(level * p.length_mm, (lc * p.length_mm) - hz, lc * p.length_mm, lc * p.length_mm + hz)
        if t < 0.3:
            continue
        _loop(c, f, u + du * (level - lc), v + dv * (level - lc), r * t ** 0.5, int(kind), gas, wall, aspect, rot)
    for lo, hi, u, v, r in ((0.5, 0.8, -0.64, 0.02, 22.0), (0.45, 0.8, 0.66, 0.12, 18.0), (0.8, 0.9, 0.28, 0.05, 17.0)):
        t = bump(level, lo, 0.5 * (lo + hi), hi)
        if t > 0.2:
            _loop(c, f, u, v, r * max(t, 0.6), 3, 0.5, wall)
    t = bump(level, 0.45, 0.49, 0.54)
    if t > 0.2:  # transverse colon: a chain of gas-filled segments across the anterior abdomen
        for u in (-0.32, 0.0, 0.3):
            _loop(c, f, u, -0.56 + 0.15 * abs(u), 17.0 * t ** 0.5, 1, 0.7, wall, 0.8, 0.2)


def _loop(
    c: Canvas, f: SliceFrame, u: float, v: float, r_mm: float, kind: int, gas: float, wall: float,
    aspect: float = 1.0, rot: float = 0.0,
) -> None:
    """One bowel cross-section: 2.5 mm wall around fluid, gas (air-fluid level), contrast or stool."""
    x, y = f.xy(u, v)
    r = r_mm * f.mm
    if c.paint(x, y, r, r * aspect, wall, "bowel", rotation=rot, within=f.cavity, tex=5.0) is None:
        return
    inner = r - 2.5 * f.mm
    if inner * aspect < 1.0:
        return
    content = (15.0, 15.0, 260.0, 20.0)[kind]
    res = c.paint(x, y, inner, inner * aspect, content, "bowel", rotation=rot, within=f.cavity, tex=6.0)
    if kind == 1:
        c.paint(x, y, inner, inner * aspect, -995.0, "bowel", rotation=rot, within=f.cavity,
                above_y=y - inner + 2 * inner * gas)
    elif kind == 3 and res is not None:
        box, cov = res
        bubbles = c.fine[box] > 0.9
        c.hu[box] += cov * bubbles * np.float32(-700.0)


def paint_abdomen(c: Canvas, f: SliceFrame, s: SeriesAnatomy) -> None:
    """Bowel, then liver (+ vessels, gallbladder), spleen, stomach, pancreas, kidneys, aorta branches, IVC."""
    level, mm, hu, prof = f.level, f.mm, s.hu, s.patient.profiles
    if level > 0.43:
        _bowel(c, f, s)
    t = bump(level, 0.29, 0.4, 0.58)
    if t > 0:
        low = min(1.0, max(0.0, (level - 0.4) / 0.18))
        x, y = f.xy(-0.4 - 0.12 * low, 0.02 + 0.12 * low)
        res = c.paint(x, y, 0.5 * f.a * t, 0.74 * f.b * t, hu["liver"], "liver", profile=prof["liver"],
                      within=f.cavity, tex=5.0)
        t2 = bump(level, 0.31, 0.37, 0.46)
        res2 = None
        if t2 > 0:
            x2, y2 = f.xy(0.04, -0.42)
            res2 = c.paint(x2, y2, 0.42 * f.a * t2, 0.3 * f.b * t2, hu["liver"], "liver",
                           profile=prof["liver_left"], rotation=-0.2, within=f.cavity, tex=5.0)
        for r in (res, res2):
            if r is not None:
                box, cov = r
                vessels = np.clip((c.fine[box] - 1.7) * 1.5, 0.0, 1.0)
                c.hu[box] += cov * vessels * np.float32(hu["hepatic_vessel"] - hu["liver"])
    t = bump(level, 0.4, 0.44, 0.49)
    if t > 0:
        x, y = f.xy(-0.2, -0.26)
        c.paint(x, y, 14.0 * mm * t, 20.0 * mm * t, 10.0, "gallbladder", rotation=0.4)
    t = bump(level, 0.33, 0.41, 0.5)
    if t > 0:
        x, y = f.xy(0.6, 0.33)
        c.paint(x, y, 0.2 * f.a * t, 0.38 * f.b * t, hu["spleen"], "spleen", profile=prof["spleen"],
                rotation=-0.6, within=f.cavity, tex=4.0)
    t = bump(level, 0.32, 0.38, 0.48)
    if t > 0:
        x, y = f.xy(0.3, -0.22)
        rx, ry = 0.28 * f.a * t, 0.3 * f.b * t
        if c.paint(x, y, rx, ry, hu["bowel_wall"], "stomach", profile=prof["stomach"], within=f.cavity) is not None:
            inner = 1.0 - 4.0 * mm / max(1.0, min(rx, ry))
            c.paint(x, y, rx, ry, 20.0, "stomach", profile=prof["stomach"], threshold=inner, within=f.cavity)
            c.paint(x, y, rx, ry, -995.0, "stomach", profile=prof["stomach"], threshold=inner, within=f.cavity,
                    above_y=y - 0.3 * ry)
    t = bump(level, 0.42, 0.46, 0.52)
    if t > 0:
        x, y = f.xy(0.06, 0.03)
        c.paint(x, y, 0.38 * f.a * t ** 0.5, 0.09 * f.b, hu["pancreas"], "pancreas", profile=prof["pancreas"],
                rotation=-0.25, tex=6.0)
    for side, lo, peak, hi in ((-1, 0.46, 0.545, 0.63), (1, 0.43, 0.515, 0.6)):
        t = bump(level, lo, peak, hi)
        if t > 0:
            _kidney(c, f, side, t ** 0.6, hu)
    if 0.3 < level < 0.74:
        _vessel(c, f, -0.13, 0.15, 12.0, hu["vein"], 9.0)  # IVC
    if 0.4 < level < 0.5:
        _vessel(c, f, -0.04, -0.04, 7.0, hu["vein"])  # portal vein / SMV


def _kidney(c: Canvas, f: SliceFrame, side: int, t: float, hu: dict) -> None:
    """Bean-shaped kidney: enhancing cortex, medulla, and the hilum's sinus fat facing medially."""
    mm = f.mm
    x, y = f.xy(side * 0.44, 0.34)
    rot = -side * 0.7
    rx, ry = 22.0 * mm * t, 31.0 * mm * t
    # the hilum faces the midline (image direction (-side, 0)); express it in the shape frame
    cr, sr = math.cos(rot), math.sin(rot)
    dx, dy = -side, 0.0
    notch = math.atan2((dy * cr - dx * sr) / ry, (dx * cr + dy * sr) / rx)
    prof = radial_profile(notch=(notch, 0.3, 6.0))
    if c.paint(x, y, rx, ry, hu["cortex"], "kidney", profile=prof, rotation=rot, tex=4.0) is None:
        return
    c.paint(x, y, rx, ry, hu["medulla"], "kidney", profile=prof, rotation=rot, threshold=0.68, tex=6.0)
    c.paint(x - side * 0.45 * rx, y, 7.0 * mm * t, 11.0 * mm * t, -70.0, "cavity_fat", rotation=rot)


def paint_pelvis(c: Canvas, f: SliceFrame, s: SeriesAnatomy) -> None:
    """Bladder, rectum, uterus or prostate, iliac vessels."""
    level, mm, hu, prof = f.level, f.mm, s.hu, s.patient.profiles
    t = bump(level, 0.82, 0.92, 1.0)
    if t > 0:
        x, y = f.xy(0.0, -0.34)
        rx, ry = 0.3 * f.a * t, 0.36 * f.b * t
        if c.paint(x, y, rx, ry, 40.0, "bladder", profile=prof["bladder"], within=f.cavity) is not None:
            c.paint(x, y, rx, ry, 8.0, "bladder", profile=prof["bladder"], within=f.cavity,
                    threshold=1.0 - 3.0 * mm / max(1.0, min(rx, ry)), tex=2.0)
    t = bump(level, 0.8, 0.92, 1.05)
    if t > 0.2:
        _loop(c, f, 0.02, 0.42, 17.0 * t ** 0.5, 3, 0.5, hu["bowel_wall"])
    if s.patient.female:
        t = bump(level, 0.83, 0.89, 0.96)
        if t > 0:
            x, y = f.xy(0.0, 0.02)
            c.paint(x, y, 32.0 * mm * t, 24.0 * mm * t, hu["myocardium"], "other", profile=prof["uterus"], tex=5.0)
    else:
        t = bump(level, 0.93, 0.98, 1.05)
        if t > 0:
            x, y = f.xy(0.0, 0.15)
            c.paint(x, y, 19.0 * mm * t, 16.0 * mm * t, 45.0, "other", tex=5.0)
    if 0.72 < level < 0.97:
        k = (level - 0.72) / 0.25
        for side in (-1, 1):
            _vessel(c, f, side * (0.08 + 0.32 * k), 0.14 - 0.1 * k, 6.5, hu["artery"])
            _vessel(c, f, side * (0.1 + 0.32 * k), 0.24 - 0.08 * k, 8.0, hu["vein"], 7.0)
