"""Lesions of the demo corpus: 3D shape, appearance, and drawing onto a slice.

Why the shapes are what they are: a weakly supervised method starts from a RECIST
ellipse, so if lesions were ellipses the problem would be solved by the pseudo mask.
Real lesions are lobulated, spiculated, irregular and sometimes concave, so a lesion
here is the union of 1-3 star-shaped blobs (:mod:`.shapes`) drawn from five families:

* ``lobulated``: one blob, strong low-order harmonics;
* ``multi``: 2-3 overlapping blobs (conglomerate nodes, multilobular masses; concave);
* ``spiculated``: one blob with narrow radial spikes (lung and some liver lesions);
* ``notched``: one blob with 1-2 inward dents (bean-shaped nodes, scalloped bone lesions);
* ``smooth``: near-elliptic (cysts), kept because real cysts are like that.

Along z (mm, so thin and thick slices sample the same lesion): each blob has a half
height ``hz`` and its own z offset, which fix where it starts and ends and how large it
is on the key slice (its ellipsoid section there, ``sqrt(1 - (c / hz)^2)`` for a blob
centred ``c`` mm from the key slice).  Away from the key slice every blob shrinks from
its key-slice section towards its own two ends, as a half ellipse on each side
(:func:`lesion_level`), and the whole section drifts a little (lesions are not
perfectly axial) and twists, rigidly.  So each off-key section is a rigidly moved
subset of the key section, the lobes of a ``multi`` lesion end at different levels
(the shape changes with z, not only the size), and the key slice is the largest
section: where a radiologist measures RECIST ("the axial slice where the lesion has the
longest spatial extent", WSSS Sec. 1; its maximal cross-section, Sec. 3.3).  Blobs
whose ellipsoid misses the key slice are not part of the lesion.  Pixelation could
still make a slightly smaller, moved section a few pixels larger, which
:func:`fit_sections` undoes.

Appearance: base HU (absolute, or relative to the host organ for liver and solid
kidney lesions, whose contrast depends on the enhancement phase), smooth internal
heterogeneity, an optional necrotic core and enhancing rim, and a partial-volume
boundary (the hard mask blurred by ``pv_sigma`` px is what gets blended into the image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_ulseg.demo.ct import blur
from nnunet_ulseg.demo.shapes import box_around, radial_profile, random_profile, star_level

#: DeepLesion's coarse lesion types.
TYPE_NAMES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney", 7: "soft tissue",
              8: "pelvis"}

#: Shape family probabilities per type (lobulated, multi, spiculated, notched, smooth).
_FAMILIES = ("lobulated", "multi", "spiculated", "notched", "smooth")
_FAMILY_P = {
    1: (0.35, 0.25, 0.0, 0.3, 0.1),
    2: (0.35, 0.35, 0.0, 0.2, 0.1),
    3: (0.3, 0.3, 0.0, 0.3, 0.1),
    4: (0.35, 0.3, 0.1, 0.1, 0.15),
    5: (0.3, 0.15, 0.4, 0.05, 0.1),
    6: (0.3, 0.15, 0.0, 0.1, 0.45),
    7: (0.45, 0.3, 0.0, 0.15, 0.1),
    8: (0.35, 0.3, 0.0, 0.2, 0.15),
}


@dataclass
class Blob:
    """One star-shaped component; offsets and radius in units of the lesion radius."""

    dx: float
    dy: float
    scale: float
    aspect: float
    rotation: float
    profile: np.ndarray
    dz_mm: float
    hz_mm: float


@dataclass
class Lesion:
    """A lesion: shape (``blobs``), size, position and appearance.

    ``radius_px`` (px per shape unit), ``cx``/``cy`` (px) and ``z_mm`` (centre's offset
    from its key slice) are set when the lesion is placed; ``hu`` too for lesions whose
    contrast is relative to their host organ (``relative_hu``).
    """

    lesion_type: int
    family: str
    blobs: list[Blob]
    hu: float
    relative_hu: float | None
    texture_hu: float
    texture_px: float
    pv_sigma: float
    core: tuple[float, float] | None
    rim_hu: float
    drift: tuple[float, float]
    twist: float
    seed: int
    radius_px: float = 1.0
    cx: float = 0.0
    cy: float = 0.0
    z_mm: float = 0.0

    @property
    def hz_mm(self) -> float:
        """Largest distance (mm) from the lesion centre at which some blob is still visible."""
        return max(abs(b.dz_mm) + b.hz_mm for b in self.blobs)

    @property
    def reach(self) -> float:
        """Radius of the key-slice footprint's bounding circle, in shape units."""
        return max(math.hypot(b.dx, b.dy) + b.scale for b in self.blobs)


def _blob_profile(rng: np.random.Generator, family: str) -> tuple[np.ndarray, float]:
    """Profile and aspect ratio of one blob of ``family``."""
    if family == "smooth":
        return random_profile(rng, rng.uniform(0.05, 0.2), 3), rng.uniform(0.7, 0.95)
    if family == "spiculated":
        n = int(rng.integers(1, 3))
        spikes = [(int(rng.integers(7, 17)), rng.uniform(0.2, 0.55), rng.uniform(6.0, 16.0), rng.uniform(0, 2 * np.pi))
                  for _ in range(n)]
        k = np.arange(2, 6)
        return radial_profile(rng.uniform(0.1, 0.35, 4) / k, rng.uniform(0, 2 * np.pi, 4), spikes=spikes), \
            rng.uniform(0.7, 1.0)
    if family == "notched":
        base = random_profile(rng, rng.uniform(0.2, 0.5), 4, notch=(rng.uniform(-np.pi, np.pi),
                                                                    rng.uniform(0.25, 0.45), rng.uniform(2.0, 6.0)))
        if rng.random() < 0.4:
            extra = radial_profile(notch=(rng.uniform(-np.pi, np.pi), rng.uniform(0.15, 0.3), 4.0))
            base = base * extra
            base /= base.max()
        return base, rng.uniform(0.55, 0.9)
    if family == "multi":
        return random_profile(rng, rng.uniform(0.2, 0.6), 4), rng.uniform(0.6, 1.0)
    return random_profile(rng, rng.uniform(0.5, 1.1), 6), rng.uniform(0.55, 0.95)


def sample_lesion(rng: np.random.Generator, lesion_type: int, long_mm: float) -> Lesion:
    """Draw a lesion of DeepLesion type ``lesion_type`` (1..8) with a ~``long_mm`` long axis.

    The z extent is 0.6-1.1 x the in-plane half size: lesions are roughly as deep as
    they are wide, with flattened and elongated ones.  The in-plane size is only nominal
    here; :func:`calibrate_radius` fixes the px scale so the key-slice long axis matches.
    """
    if lesion_type not in TYPE_NAMES:
        raise ValueError(f"lesion type must be 1..8, got {lesion_type}")
    family = _FAMILIES[int(rng.choice(5, p=_FAMILY_P[lesion_type]))]
    hz = 0.5 * long_mm * rng.uniform(0.6, 1.1)
    blobs = []
    n_blobs = int(rng.integers(2, 4)) if family == "multi" else 1
    for i in range(n_blobs):
        profile, aspect = _blob_profile(rng, family)
        if i == 0:
            dx = dy = dz = 0.0
            scale = 1.0
        else:
            ang = rng.uniform(-np.pi, np.pi)
            dist = rng.uniform(0.45, 0.8)
            dx, dy = dist * math.cos(ang), dist * math.sin(ang)
            scale = rng.uniform(0.45, 0.8)
            dz = rng.uniform(-0.3, 0.3) * hz
        blobs.append(Blob(dx, dy, scale, aspect, rng.uniform(-np.pi, np.pi), profile, dz,
                          hz * (1.0 if i == 0 else rng.uniform(0.5, 0.8))))

    hu, rel, core, rim = _appearance(rng, lesion_type, family, long_mm)
    return Lesion(
        lesion_type=lesion_type, family=family, blobs=blobs, hu=hu, relative_hu=rel,
        texture_hu=rng.uniform(3.0, 16.0) * (3.0 if hu > 400 else 1.0), texture_px=rng.uniform(1.5, 3.5),
        pv_sigma=rng.uniform(0.5, 1.2), core=core, rim_hu=rim,
        drift=(rng.normal(0, 0.08), rng.normal(0, 0.08)), twist=rng.normal(0, 0.01),
        seed=int(rng.integers(2**31)),
    )


def _appearance(rng: np.random.Generator, t: int, family: str, long_mm: float):
    """Base HU (or offset from the host organ), necrotic core and rim for type ``t``.

    Values follow typical CT appearances: hypodense liver metastases (some hyperdense),
    solid or ground-glass lung nodules, lytic or sclerotic bone lesions, soft-tissue lymph
    nodes in fat, water-density renal cysts or enhancing solid renal masses, soft-tissue
    and cystic pelvic masses.
    """
    rel = None
    core = None
    rim = 0.0
    if t == 4:
        rel = rng.uniform(-70.0, -15.0) if rng.random() < 0.8 else rng.uniform(15.0, 40.0)
        hu = 0.0
        if rng.random() < 0.25:
            rim = rng.uniform(20.0, 45.0)
    elif t == 5:
        hu = rng.uniform(0.0, 50.0) if rng.random() < 0.8 else rng.uniform(-650.0, -450.0)
    elif t == 1:
        hu = rng.uniform(20.0, 80.0) if rng.random() < 0.6 else rng.uniform(550.0, 950.0)
    elif t == 6:
        if family == "smooth" or rng.random() < 0.4:
            hu = rng.uniform(0.0, 18.0)
        else:
            rel = rng.uniform(-90.0, -30.0)
            hu = 0.0
    elif t == 8 and rng.random() < 0.3:
        hu = rng.uniform(5.0, 20.0)
    else:  # lymph nodes and soft-tissue masses
        hu = rng.uniform(20.0, 60.0)
    if long_mm > 20 and t in (2, 3, 4, 6, 7, 8) and rng.random() < 0.35:
        core = (rng.uniform(0.35, 0.65), rng.uniform(5.0, 20.0))
    return hu, rel, core, rim


def blob_ends_mm(lesion: Lesion, blob: Blob) -> tuple[float, float] | None:
    """``(below, above)``: how far (mm) ``blob`` reaches on each side of its lesion's key slice.

    The blob's ellipsoid is centred ``c = z_mm + dz_mm`` from the key slice with half height
    ``hz_mm``, so it spans ``(c - hz, c + hz)``; returns ``(hz - c, hz + c)``, both positive,
    or ``None`` when the ellipsoid misses the key slice (such a blob is not drawn).
    """
    c = lesion.z_mm + blob.dz_mm
    if abs(c) >= blob.hz_mm:
        return None
    return blob.hz_mm - c, blob.hz_mm + c


def z_extent_mm(lesion: Lesion) -> tuple[float, float]:
    """``(below, above)``: how far (mm) the lesion reaches on each side of its key slice (open ends).

    The slice ``dz`` mm from the key slice shows the lesion iff ``-below < dz < above``
    (before the largest-component rule, which can only remove pixels).
    """
    ends = [e for e in (blob_ends_mm(lesion, b) for b in lesion.blobs) if e is not None]
    return max(e[0] for e in ends), max(e[1] for e in ends)


def lesion_level(lesion: Lesion, box: tuple[slice, slice], dz_mm: float, shrink: float = 1.0) -> np.ndarray | None:
    """Level (inside ``< 1``) of the lesion's cross-section ``dz_mm`` from its key slice.

    Union of blobs = minimum of their levels.  A blob's level is divided by its radius
    factor ``sqrt(1 - (c / hz)^2) * sqrt(1 - (dz_mm / end)^2) * shrink``: the first term
    is its ellipsoid section on the key slice (``c`` its centre's z offset from the key
    slice), the second shrinks it from there to zero at its own end on that side
    (``end`` from :func:`blob_ends_mm`): a half ellipse, flat at the key slice, so the
    size varies smoothly with z and is largest on the key slice.  The section then
    moves rigidly: the lesion centre drifts by ``drift`` px per mm and the blob layout
    turns by ``twist`` rad per mm about it.  At ``dz_mm = 0`` this is exactly the
    lesion's key section (both extra factors are 1).  ``shrink`` (<= 1) scales every
    blob down further (the long-axis cap of :func:`paint_lesion`).  ``None`` if no blob
    reaches the slice.
    """
    d_lesion = dz_mm - lesion.z_mm
    out = None
    cx = lesion.cx + lesion.drift[0] * d_lesion
    cy = lesion.cy + lesion.drift[1] * d_lesion
    spin = lesion.twist * d_lesion
    turn = lesion.twist * dz_mm  # rotation of the blob layout relative to the key section
    cos_t, sin_t = math.cos(turn), math.sin(turn)
    r = lesion.radius_px
    for b in lesion.blobs:
        d_key = (0.0 - lesion.z_mm) - b.dz_mm
        f = 1.0 - (d_key / b.hz_mm) ** 2
        ends = blob_ends_mm(lesion, b)
        if f <= 0.0 or ends is None:
            continue
        end = ends[1] if dz_mm > 0 else ends[0]
        t = 1.0 - (dz_mm / end) ** 2
        if t <= 0.0:
            continue
        factor = math.sqrt(f) * math.sqrt(t) * shrink
        ox = b.dx * cos_t - b.dy * sin_t
        oy = b.dx * sin_t + b.dy * cos_t
        rad = r * b.scale
        g, _ = star_level(box, cx + r * ox, cy + r * oy, rad, rad * b.aspect, b.profile, b.rotation + spin)
        g = g / np.float32(factor)
        out = g if out is None else np.minimum(out, g)
    return out


def lesion_box(lesion: Lesion, shape: tuple[int, int], margin_px: float = 3.0) -> tuple[slice, slice] | None:
    """Bounding box (index slices) of the lesion's largest possible section plus blur margin."""
    half = lesion.radius_px * lesion.reach + 3.0 * lesion.pv_sigma + margin_px + abs(lesion.drift[0]) * 2
    return box_around(lesion.cx, lesion.cy, half, shape)


def calibrate_radius(lesion: Lesion, long_px: float) -> float:
    """Px per shape unit that makes the key-slice long axis ``long_px``.

    The key section is rasterised at a nominal 60 px scale and measured with
    :func:`nnunet_ulseg.recist.mask_axes`, the same measurement the RECIST marks come
    from; then, since a 5-10 px lesion's pixelated outline measures differently from
    its shape, the scale of lesions under 40 px is refined at the real size and sub-pixel
    position (to within 2 %, or else the smallest scale reaching the target).
    If the blobs of a ``multi`` lesion fall apart on the key slice (a real lesion is one
    piece) they are pulled towards the main blob, in place, until it is connected.
    """
    from nnunet_ulseg.recist import mask_axes

    for _ in range(8):
        mask = _key_section(lesion, 60.0)
        if ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))[1] <= 1:
            break
        for b in lesion.blobs[1:]:
            b.dx, b.dy = 0.7 * b.dx, 0.7 * b.dy
    radius = long_px * 60.0 / mask_axes(largest_component(mask)).long_px
    if long_px > 40.0:  # big enough for the 60 px probe to be exact to ~1 %
        return radius
    tried = []
    for _ in range(8):
        mask = largest_component(_key_section(lesion, radius))
        measured = mask_axes(mask).long_px if mask.any() else 0.0
        tried.append((radius, measured))
        if abs(measured - long_px) <= 0.02 * long_px:
            return radius
        # pixelation makes the length a step function of the scale: never step by < 3 %
        ratio = long_px / max(measured, 1e-6)
        radius *= max(ratio, 1.03) if ratio > 1 else min(ratio, 0.97)
    # no scale hits the target: take the smallest that reaches it (never undersize)
    long_enough = [r for r, m in tried if m >= 0.98 * long_px]
    return min(long_enough) if long_enough else max(r for r, _ in tried)


def _key_section(lesion: Lesion, radius_px: float) -> np.ndarray:
    """The key-slice mask of ``lesion`` at scale ``radius_px``, in a box around it that
    keeps the sub-pixel part of its centre (so pixelation matches the real drawing)."""
    probe = Lesion(**{**lesion.__dict__, "radius_px": radius_px})
    half = math.ceil(radius_px * probe.reach + abs(lesion.drift[0]) + abs(lesion.drift[1])) + 2  # whole px
    probe.cx = half + (lesion.cx % 1.0)
    probe.cy = half + (lesion.cy % 1.0)
    n = 2 * half + 2
    return lesion_level(probe, (slice(0, n), slice(0, n)), 0.0) < 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (``mask`` itself if it has at most one).

    Thin spicules rasterise into pixels detached from the body of the lesion; a
    lesion is one object, so those specks are dropped from both the mask and the image.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def section_mask(lesion: Lesion, shape: tuple[int, int], dz_mm: float, shrink: float = 1.0,
                 ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """``(box, level, hard)`` of the lesion's section ``dz_mm`` from its key slice in a ``shape`` slice.

    ``hard`` is the largest connected part of ``level < 1`` (:func:`largest_component`);
    ``shrink`` as in :func:`lesion_level`.  ``None`` when the lesion does not reach this
    slice (or is off the image).
    """
    box = lesion_box(lesion, shape)
    if box is None:
        return None
    g = lesion_level(lesion, box, dz_mm, shrink)
    if g is None:
        return None
    hard = largest_component(g < 1.0)
    if not hard.any():
        return None
    return box, g, hard


#: Step (relative radius) and most steps of the pixelation correction of :func:`fit_sections`.
FIT_STEP, FIT_STEPS = 0.99, 60


def fit_sections(lesion: Lesion, shape: tuple[int, int], offsets_mm: list[float]) -> dict[float, float | None]:
    """The ``shrink`` of each section ``offsets_mm`` (mm from the key slice; ``None``: not on that slice).

    The true sections already shrink from the key slice outwards (each is a rigidly
    moved subset of the one nearer the key slice, :func:`lesion_level`), but a slightly
    smaller section rasterised at another sub-pixel position can come out a few pixels
    larger, and on 1 mm slices consecutive sections differ by less than that.  So,
    walking outwards from the key slice on each side, a section is scaled down in 1 %
    steps until its pixel area is at most that of the section nearer the key slice and
    its measured long axis (:func:`nnunet_ulseg.recist.mask_axes`, the measurement RECIST
    marks come from) at most the key slice's; once a section is empty the lesion has
    ended on that side.  Hence on disk, too, the key slice has the longest axis (where a
    radiologist measures, WSSS Sec. 1, 3.3) and area and long axis never grow away from
    it.  The key slice itself is never changed (``shrink`` 1 at offset 0).
    """
    from nnunet_ulseg.recist import mask_axes

    key = section_mask(lesion, shape, 0.0)
    out: dict[float, float | None] = {0.0: 1.0 if key is not None else None}
    if key is None:
        return {**{o: None for o in offsets_mm}, **out}
    key_long = mask_axes(key[2]).long_px
    for side in (-1, 1):
        area, shrink = int(key[2].sum()), 1.0
        for dz in sorted((o for o in offsets_mm if o * side > 0), key=abs):
            section = None if shrink is None else section_mask(lesion, shape, dz, shrink)
            for _ in range(FIT_STEPS):
                if section is None or (section[2].sum() <= area and mask_axes(section[2]).long_px <= key_long):
                    break
                shrink *= FIT_STEP
                section = section_mask(lesion, shape, dz, shrink)
            else:
                section = None  # could not be brought below its inner neighbour: end the lesion here
            if section is None:
                shrink = None
            else:
                area = int(section[2].sum())
            out[dz] = shrink
    return out


def paint_lesion(hu: np.ndarray, lesion: Lesion, dz_mm: float, slice_key: int, shrink: float = 1.0,
                 ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Draw the lesion's section ``dz_mm`` from its key slice into ``hu`` (in place).

    Returns ``(box, hard_mask)``, the true mask being the largest connected part of
    ``level < 1`` (:func:`section_mask`; ``shrink`` from :func:`fit_sections`), or ``None``
    when the lesion does not reach this slice.  The image gets the lesion HU (base + smooth
    texture + necrotic core + rim) blended by the hard mask blurred with ``pv_sigma``:
    a partial-volume boundary, so the visible edge is soft but centred on the true one.
    ``slice_key`` seeds the texture, so a lesion's texture is deterministic per slice.
    """
    section = section_mask(lesion, hu.shape, dz_mm, shrink)
    if section is None:
        return None
    box, g, hard = section
    rng = np.random.default_rng([lesion.seed, slice_key & 0x7FFFFFFF])
    tex = blur(rng.standard_normal(g.shape, dtype=np.float32), lesion.texture_px)
    tex *= np.float32(lesion.texture_hu / max(1e-6, float(tex.std())))
    value = np.float32(lesion.hu) + tex
    if lesion.core is not None:
        thr, core_hu = lesion.core
        core = blur((g < thr).astype(np.float32), 1.5)
        value += core * (np.float32(core_hu) - value)
    if lesion.rim_hu:
        value += np.float32(lesion.rim_hu) * ((g > 0.8) & hard)
    soft = blur(hard.astype(np.float32), lesion.pv_sigma)
    region = hu[box]
    region += soft * (value - region)
    return box, hard
