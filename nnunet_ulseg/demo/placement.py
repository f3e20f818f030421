"""Where lesions go on their key slice: inside the right organ, not on top of each other.

A lesion of a given type is centred on a pixel of its host structure (lung nodules in
lung, liver lesions in liver, lymph nodes in mediastinal or mesenteric fat, soft-tissue
masses in the body wall, ...) that lies at least ``depth x half its long axis`` inside
the host (Euclidean distance transform), so most of the lesion sits in the organ, while
small ``depth`` values let some lesions touch or cross the organ's edge (juxta-pleural
nodules, exophytic renal masses, soft-tissue masses bulging the skin).  If the host is
too small for the planned size the lesion is shrunk to fit (never below 5.5 mm, so
its measured long axis stays >= 5 mm).
"""
from __future__ import annotations

import cv2
import numpy as np

from nnunet_ulseg.demo.canvas import LABELS, Canvas
from nnunet_ulseg.demo.frame import SliceFrame
from nnunet_ulseg.demo.lesions import Lesion, calibrate_radius

#: Host structures and depth range per DeepLesion type.
HOSTS = {
    1: (("bone",), (0.6, 0.9)),
    2: (("cavity_fat", "pancreas"), (0.4, 0.8)),
    3: (("cavity_fat",), (0.3, 0.6)),
    4: (("liver",), (0.5, 0.9)),
    5: (("lung",), (0.5, 1.0)),
    6: (("kidney",), (0.2, 0.6)),
    7: (("body_fat", "muscle"), (0.2, 0.6)),
    8: (("cavity_fat", "bladder", "other"), (0.4, 0.8)),
}
MIN_LONG_MM = 5.5
#: A measured lesion differs from its host by at least this much (HU, drawn per lesion).
MIN_CONTRAST_HU = (30.0, 60.0)


def _with_contrast(hu: float, host_hu: float, minimum: float) -> float:
    """Push ``hu`` away from ``host_hu`` to at least ``minimum`` HU of contrast.

    Radiologists only bookmark what they can see, so every lesion must be visible, but
    only just for some: 30-60 HU is 1.2-6 noise sigmas, which keeps faint lesions in the
    corpus (the hard cases for weak supervision) without making any invisible.
    """
    diff = hu - host_hu
    if abs(diff) >= minimum:
        return hu
    return host_hu + (minimum if diff > 0 else -minimum)


def host_mask(labels: np.ndarray, frame: SliceFrame, lesion_type: int) -> np.ndarray:
    """Pixels that may hold the centre of a lesion of ``lesion_type`` (before depth).

    Mediastinal nodes are kept to the central third of the chest, anterior to the
    spine (the fat between the lungs, not the thin fat rim along the chest wall).
    """
    ids = [LABELS[name] for name in HOSTS[lesion_type][0]]
    mask = np.isin(labels, ids)
    if lesion_type == 3:
        cols = np.abs(np.arange(labels.shape[1]) - frame.cx) < 0.3 * frame.a
        rows = np.arange(labels.shape[0]) < frame.spine_y
        mask &= cols[None, :] & rows[:, None]
    return mask


def place_lesions(
    canvas: Canvas, frame: SliceFrame, lesions: list[Lesion], long_px: list[float], rng: np.random.Generator,
    pixel_mm: float,
) -> None:
    """Set centre, scale and (host-relative) HU of each lesion on the key slice, in place.

    ``long_px`` are the planned long axes in px.  Lesions are placed largest first (they
    need the most room); each placed lesion's bounding circle plus 4 px is excluded for
    the next, so lesions on a shared slice never touch and their instance masks never
    overlap.  The reference HU is the median under the lesion's footprint: lesions with
    a host-relative HU are offset from it, and every lesion is pushed to a minimum
    contrast against it (:func:`_with_contrast`).
    """
    occupied = np.zeros(canvas.shape, dtype=bool)
    yy, xx = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]]
    for j in sorted(range(len(lesions)), key=lambda i: -long_px[i]):
        lesion = lesions[j]
        host = host_mask(canvas.labels, frame, lesion.lesion_type)
        allowed = host & ~occupied
        dist = cv2.distanceTransform(allowed.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        lo, hi = HOSTS[lesion.lesion_type][1]
        depth = rng.uniform(lo, hi)
        if lesion.lesion_type == 1 and lesion.hu > 400:
            depth = 0.9  # sclerotic: stay inside the bone, not a bright blob in muscle
        target = long_px[j]
        need = depth * target / 2
        if dist.max() < need:
            target = max(MIN_LONG_MM / pixel_mm, 2 * 0.95 * dist.max() / depth)
            need = depth * target / 2
        candidates = np.flatnonzero(dist.ravel() >= need)
        if candidates.size:
            flat = int(candidates[int(rng.integers(candidates.size))])
        else:
            flat = int(np.argmax(dist))
        cy, cx = divmod(flat, canvas.shape[1])
        lesion.cx = cx + rng.uniform(-0.5, 0.5)
        lesion.cy = cy + rng.uniform(-0.5, 0.5)
        lesion.radius_px = calibrate_radius(lesion, target)
        # what the lesion will replace: the median HU under its footprint (whatever the
        # structures), which is what its visibility depends on
        under = (yy - cy) ** 2 + (xx - cx) ** 2 <= max(1.0, 0.5 * target) ** 2
        ref = float(np.median(canvas.hu[under]))
        if lesion.relative_hu is not None:
            lesion.hu = ref + lesion.relative_hu
        lesion.hu = _with_contrast(lesion.hu, ref, rng.uniform(*MIN_CONTRAST_HU))
        r = lesion.radius_px * lesion.reach + 4.0
        occupied |= (yy - lesion.cy) ** 2 + (xx - lesion.cx) ** 2 < r * r
