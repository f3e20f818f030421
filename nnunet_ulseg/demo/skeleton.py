"""Bones of the demo anatomy: spine, ribs, sternum, scapulae, pelvis and hips.

Bone is drawn as a dense cortical shell (``cortex`` HU) around cancellous marrow
(``marrow`` HU with fine trabecular texture), which is how bone looks on CT and what
lytic (dark) and sclerotic (bright) bone lesions must stand out against.  All shapes
depend smoothly on the body level, so bones drift and change size between neighbouring
slices rather than jumping.
"""
from __future__ import annotations

import math

import numpy as np

from nnunet_ulseg.demo.canvas import Canvas, bump
from nnunet_ulseg.demo.frame import SliceFrame
from nnunet_ulseg.demo.shapes import radial_profile

#: Bean-shaped vertebral body: flattened posterior wall facing the spinal canal.
_VERTEBRA = radial_profile([0.04], [0.0], notch=(math.pi / 2, 0.18, 3.0))


def paint_bone(
    canvas: Canvas, cx: float, cy: float, rx: float, ry: float, cortex: float, marrow: float, mm: float,
    rotation: float = 0.0, profile: np.ndarray | None = None, shell_mm: float = 1.6, within=None,
) -> None:
    """A bone cross-section: cortical shell ``shell_mm`` thick around textured marrow."""
    kwargs = dict(rotation=rotation, within=within)
    if profile is not None:
        kwargs["profile"] = profile
    if canvas.paint(cx, cy, rx, ry, cortex, "bone", **kwargs) is None:
        return
    inner = 1.0 - shell_mm * mm / max(1.0, min(rx, ry))
    if inner > 0.2:
        res = canvas.paint(cx, cy, rx, ry, marrow, "bone", threshold=inner, **kwargs)
        if res is not None:
            box, cov = res
            canvas.hu[box] += cov * np.float32(45.0) * canvas.fine[box]


def paint_spine(canvas: Canvas, f: SliceFrame, bone: dict) -> None:
    """Vertebra (body, canal, arch, spinous and transverse processes) or sacrum, by level.

    Intervertebral discs recur every vertebral height: on a disc slice the body is
    drawn as 90 HU fibrocartilage without cortex, so neighbouring slices of a 1 or
    2.5 mm series show the spine changing as a real one does.
    """
    level, mm = f.level, f.mm
    if level < 0.74:
        radius = f.vertebra_mm * mm
        x, y = f.cx, f.spine_y
        seg = 24.0 + 12.0 * min(1.0, max(0.0, (level - 0.3) / 0.3))
        disc = (f.z_mm / seg) % 1.0 < 0.22
        if disc:
            canvas.paint(x, y, radius * 1.05, radius * 0.92, 92.0, "bone", profile=_VERTEBRA, tex=6.0)
        else:
            paint_bone(canvas, x, y, radius * 1.05, radius * 0.92, bone["cortex"], bone["marrow"], mm,
                       profile=_VERTEBRA)
        canal_y = y + radius * 0.92 + 8.5 * mm
        paint_bone(canvas, x, canal_y + 2.0 * mm, 12.0 * mm, 11.0 * mm, bone["cortex"], bone["marrow"], mm)
        paint_bone(canvas, x, canal_y + 16.0 * mm, 4.0 * mm, 11.0 * mm, bone["cortex"], bone["marrow"], mm)
        if level > 0.44:
            for side in (-1, 1):
                paint_bone(canvas, x + side * 22.0 * mm, canal_y - 1.0 * mm, 13.0 * mm, 3.5 * mm,
                           bone["cortex"], bone["marrow"], mm, rotation=side * 0.15)
        canvas.paint(x, canal_y, 7.5 * mm, 7.0 * mm, 12.0, "other")  # CSF in the canal
    else:
        t = bump(level, 0.72, 0.76, 0.93)
        if t > 0:
            x, y = f.cx, f.spine_y + 12.0 * mm
            paint_bone(canvas, x, y, (0.12 + 0.12 * t) * f.a, (14.0 + 10.0 * t) * mm, bone["cortex"],
                       bone["marrow"], mm, profile=_VERTEBRA)
            canvas.paint(x, y + 2.0 * mm, 6.0 * mm * t + 1.0, 4.0 * mm * t + 1.0, 15.0, "other")


def paint_ribs(canvas: Canvas, f: SliceFrame, bone: dict) -> None:
    """Rib cross-sections in the chest wall, from a helical rib-cage model.

    Rib ``j`` starts at height ``j * pitch`` beside the spine and descends by ``drop`` mm
    on its way round to the sternum, so on an axial slice each rib is seen where its
    height equals the slice's: 3-4 oblique segments per side, moving round the chest
    from slice to slice.  With ``phi`` the angle from the posterior midline, a pixel of
    the rib band is rib when the rib phase ``(z + drop * phi / pi) / pitch`` is within
    ``w`` of an integer.  Anteriorly (costal cartilage) the HU drops to ~130.
    """
    level = f.level
    if level > 0.55 or level < -0.02:
        return
    mm = f.mm
    radius_px = 0.5 * (f.a + f.b)
    width = 10.0 * mm / radius_px
    band = (f.body_level > f.cavity_threshold - 0.2 * width) & (f.body_level < f.cavity_threshold + width)
    ys, xs = np.nonzero(band)
    if ys.size == 0:
        return
    theta = f.body_theta[ys, xs]
    phi = np.abs(np.angle(np.exp(1j * (theta - math.pi / 2))))
    reach = math.pi * (1.0 if level < 0.3 else max(0.35, 1.0 - (level - 0.3) / 0.35))
    pitch, drop, w = 24.0, 95.0, 0.15
    phase = (f.z_mm + drop * phi / math.pi) / pitch
    d = np.abs(phase - np.round(phase)) / w
    t = (f.body_level[ys, xs] - f.cavity_threshold[ys, xs]) / width
    q = (2.0 * t - 0.6) ** 2 + d**2
    keep = (q < 1.2) & (phi > 0.12 * math.pi) & (phi < reach)
    ys, xs, q, phi = ys[keep], xs[keep], q[keep], phi[keep]
    cov = np.clip((1.0 - q) * 4.0 * mm + 0.5, 0.0, 1.0).astype(np.float32)
    cartilage = phi > 0.8 * math.pi
    value = np.where(q > 0.45, bone["cortex"], bone["marrow"]).astype(np.float32)
    value = np.where(cartilage, np.float32(125.0), value)
    canvas.hu[ys, xs] += cov * (value - canvas.hu[ys, xs])
    canvas.labels[ys[cov > 0.5], xs[cov > 0.5]] = 8


def paint_chest_bones(canvas: Canvas, f: SliceFrame, bone: dict) -> None:
    """Sternum (anterior midline) and scapulae (posterolateral, outside the ribs)."""
    mm = f.mm
    t = bump(f.level, 0.05, 0.18, 0.33)
    if t > 0:
        x, y = f.cavity_edge(-math.pi / 2)
        paint_bone(canvas, x, y - 2.0 * mm, 15.0 * mm * max(t, 0.5), 6.5 * mm, bone["cortex"], bone["marrow"], mm)
    t = bump(f.level, -0.03, 0.08, 0.2)
    if t > 0:
        for side in (-1, 1):
            x, y = f.xy(side * 0.56, 0.62)
            paint_bone(canvas, x, y, 45.0 * mm * t, 4.0 * mm, bone["cortex"], bone["marrow"], mm,
                       rotation=-side * 0.55, within=f.body)


def paint_pelvis(canvas: Canvas, f: SliceFrame, bone: dict) -> None:
    """Iliac wings, acetabula with femoral heads, and greater trochanters."""
    level, mm = f.level, f.mm
    t = bump(level, 0.67, 0.76, 0.88)
    if t > 0:
        s = min(1.0, max(0.0, (level - 0.67) / 0.21))
        for side in (-1, 1):
            x, y = f.xy(side * (0.56 - 0.2 * s), 0.26 + 0.22 * s)
            paint_bone(canvas, x, y, (50.0 - 12.0 * s) * mm * max(t, 0.4), (4.0 + 4.0 * s) * mm, bone["cortex"],
                       bone["marrow"] + 20, mm, rotation=-side * (0.75 - 0.3 * s), within=f.body)
    t = bump(level, 0.85, 0.93, 1.02)
    if t > 0:
        for side in (-1, 1):
            x, y = f.xy(side * 0.54, 0.1)
            r = 27.0 * mm * t
            paint_bone(canvas, x, y, r, r, bone["cortex"], bone["marrow"], mm)
            canvas.paint(x, y, r - 3.0 * mm, r - 3.0 * mm, 60.0, "other")  # joint space
            paint_bone(canvas, x, y, r - 5.0 * mm, r - 5.0 * mm, bone["cortex"], bone["marrow"], mm)
    t = bump(level, 0.93, 1.0, 1.1)
    if t > 0:
        for side in (-1, 1):
            x, y = f.xy(side * 0.74, 0.18)
            paint_bone(canvas, x, y, 18.0 * mm * t, 16.0 * mm * t, bone["cortex"], bone["marrow"], mm)
