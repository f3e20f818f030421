"""A small generated sample in LiTS's format: ``volume-N.nii`` + ``segmentation-N.nii`` (E²Net Sec. 3, "Datasets").

LiTS (the MICCAI 2017 Liver Tumor Segmentation challenge the E²Net paper trains on)
ships one contrast-enhanced abdominal CT per patient as ``volume-N.nii`` (HU) and its
reference as ``segmentation-N.nii`` with 0 background, 1 liver, 2 tumour (DESIGN "LiTS on
disk").  :func:`make_lits_sample` writes ``n_cases`` such pairs, numbered from 0, plus two
truth tables the real dataset does not have:

* ``lits_sample_cases.csv``: per case the size, spacing, origin, liver and tumour voxel counts;
* ``lits_sample_tumours.csv``: per tumour its centre voxel, drawn diameter (mm), contrast
  kind (``hypo``, ``hyper``, ``low``) and HU offset against the liver, voxel count.

What a case is, and why:

* **Anatomy** is the DeepLesion demo's body (:mod:`.anatomy`, :mod:`.organs`,
  :mod:`.skeleton`: skin, fat, muscle, spine and ribs, lungs at the top, spleen,
  stomach, kidneys, bowel, vessels) rendered slice by slice around the liver's widest
  level, the liver label taken from the renderer's structure map, so the liver has the
  renderer's lobed shape (right lobe + left lobe, hepatic vessels, texture).  The
  "native" phase is used: its liver is 58 HU (the brief's ~60 HU).
* **Geometry**: in-plane spacing 0.6-0.9 mm, slice interval 1-5 mm (LiTS spans 0.45-6 mm,
  Sec. 1), 20-40 slices, a non-identity origin.  A test-sized field (128 px) cannot hold a
  real body at that spacing, so, as in ``make-sample``, the anatomy is scaled down to
  fit; the same factor is applied along z, so the body keeps its proportions and the
  written spacing stays the scanner-like one.
* **Tumours** (0-4 per case, some cases tumour-free as in LiTS): ellipsoids of a drawn
  diameter of 3-40 mm (log-uniform: small tumours are common), capped to what fits in
  this (scaled) liver, centred on a liver voxel deep enough for at least half the radius,
  and clipped to the liver, so label 2 is always inside the liver's outline.  Contrast:
  hypodense (-70..-25 HU, the usual metastasis), hyperdense (+25..+70 HU) or low contrast
  (±8..15 HU, the cases the paper names as hard, Sec. 3); the edge is blended over about
  a pixel (partial volume).
* **Scanner**: reconstruction blur and correlated noise (:func:`.ct.scan`, 8-15 HU), then
  int16 HU.  The segmentation is uint8.

Deterministic: case ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so a
seed gives the same bytes, other seeds other cases, and case ``i`` does not depend on
how many cases are asked for.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The renderer (OpenCV, SciPy) is imported by the functions that draw, so that registering
# the sub-command keeps ``ulseg --help`` instant.

#: LiTS's label values.
BACKGROUND, LIVER, TUMOUR = 0, 1, 2
#: Contrast kinds: (probability, low, high) of |HU offset| against the liver; sign per kind.
CONTRASTS = {"hypo": (0.5, 25.0, 70.0), "hyper": (0.25, 25.0, 70.0), "low": (0.25, 8.0, 15.0)}
#: Drawn tumour diameters (mm) and tumours per case.
DIAMETER_MM = (3.0, 40.0)
TUMOUR_COUNTS, TUMOUR_COUNT_P = (0, 1, 2, 3, 4), (0.15, 0.3, 0.25, 0.2, 0.1)
PIXEL_MM, SLICE_MM, N_SLICES = (0.6, 0.9), (1.0, 5.0), (20, 40)
#: Body level at the liver's widest section (organs.paint_abdomen: the liver's bump peaks at 0.4).
LIVER_LEVEL = (0.40, 0.46)

CASE_COLUMNS = ("case", "volume", "segmentation", "size_x", "size_y", "size_z", "spacing_x", "spacing_y",
                "spacing_z", "origin_x", "origin_y", "origin_z", "liver_voxels", "tumour_voxels", "n_tumours")
TUMOUR_COLUMNS = ("case", "tumour", "x", "y", "z", "diameter_mm", "contrast", "delta_hu", "voxels")


def volume_name(case: int) -> str:
    return f"volume-{case}.nii"


def segmentation_name(case: int) -> str:
    return f"segmentation-{case}.nii"


@dataclass
class Tumour:
    """One drawn tumour: centre voxel ``(x, y, z)``, diameter (mm), contrast kind and HU offset, voxels kept."""

    centre: tuple[int, int, int]
    diameter_mm: float
    contrast: str
    delta_hu: float
    voxels: int = 0


@dataclass
class LitsCase:
    """One generated case: HU volume ``[z, y, x]`` int16, label uint8, spacing/origin ``(x, y, z)`` mm."""

    index: int
    hu: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    tumours: list[Tumour]


def _contrast(rng: np.random.Generator) -> tuple[str, float]:
    kinds = list(CONTRASTS)
    kind = kinds[rng.choice(len(kinds), p=[CONTRASTS[k][0] for k in kinds])]
    _, lo, hi = CONTRASTS[kind]
    magnitude = rng.uniform(lo, hi)
    sign = -1.0 if kind == "hypo" else 1.0 if kind == "hyper" else float(rng.choice([-1.0, 1.0]))
    return kind, sign * magnitude


def _place_tumours(rng: np.random.Generator, liver: np.ndarray, spacing_zyx: tuple[float, float, float],
                   n: int) -> tuple[np.ndarray, np.ndarray, list[Tumour]]:
    """Tumour label (bool) and HU offset field for ``n`` tumours inside ``liver`` (see the module docstring)."""
    from scipy.ndimage import distance_transform_edt

    shape = liver.shape
    mask = np.zeros(shape, dtype=bool)
    offset = np.zeros(shape, dtype=np.float32)
    tumours: list[Tumour] = []
    if n == 0 or not liver.any():
        return mask, offset, tumours
    # depth inside the liver (mm); the stack's ends count as open, not as the liver's edge
    padded = np.pad(liver, ((1, 1), (0, 0), (0, 0)), mode="edge")
    depth = distance_transform_edt(padded, sampling=spacing_zyx)[1:-1]
    deepest = float(depth.max())
    zz, yy, xx = (np.arange(s, dtype=np.float32) for s in shape)
    for _ in range(n):
        diameter = float(math.exp(rng.uniform(*np.log(DIAMETER_MM))))
        radius = min(diameter / 2, 0.9 * deepest)
        candidates = np.flatnonzero((depth >= 0.5 * radius) & liver)
        if candidates.size == 0:
            candidates = np.flatnonzero(liver)
        z, y, x = np.unravel_index(int(rng.choice(candidates)), shape)
        radii = radius * rng.uniform(0.8, 1.2, 3)  # mm along z, y, x before the in-plane rotation
        angle = rng.uniform(0.0, math.pi)
        dz = (zz[:, None, None] - z) * spacing_zyx[0]
        dy = (yy[None, :, None] - y) * spacing_zyx[1]
        dx = (xx[None, None, :] - x) * spacing_zyx[2]
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        g = np.sqrt((dz / radii[0]) ** 2 + (v / radii[1]) ** 2 + (u / radii[2]) ** 2)
        # partial volume: coverage falls from 1 to 0 over one pixel across the surface
        cover = np.clip((1.0 - g) * (radius / spacing_zyx[2]) + 0.5, 0.0, 1.0) * liver
        inside = (g <= 1.0) & liver
        inside[z, y, x] = True  # the centre voxel, so even a 3 mm tumour between two 5 mm slices is seen
        kind, delta = _contrast(rng)
        offset += np.float32(delta) * cover.astype(np.float32)
        mask |= inside
        tumours.append(Tumour((int(x), int(y), int(z)), round(diameter, 3), kind, round(delta, 2),
                              int(inside.sum())))
    return mask, offset, tumours


def generate_case(index: int, seed: int = 0, image_size: int = 128) -> LitsCase:
    """Draw case ``index`` of seed ``seed`` (no files written); see the module docstring."""
    from nnunet_ulseg.demo.anatomy import make_patient_anatomy, make_series_anatomy, render_anatomy
    from nnunet_ulseg.demo.canvas import LABELS
    from nnunet_ulseg.demo.ct import scan

    rng = np.random.default_rng([int(seed), int(index)])
    pixel_mm = float(rng.uniform(*PIXEL_MM))
    slice_mm = round(float(rng.uniform(*SLICE_MM)) * 4) / 4
    n_slices = int(rng.integers(N_SLICES[0], N_SLICES[1] + 1))
    patient = make_patient_anatomy(rng, female=bool(rng.random() < 0.5))
    series = make_series_anatomy(patient, rng, pixel_mm, int(image_size), "native")
    scale = series.mm * pixel_mm  # drawn px per written px (< 1 when the body is shrunk to fit)
    centre = float(rng.uniform(*LIVER_LEVEL))
    levels = centre + (np.arange(n_slices) - (n_slices - 1) / 2) * slice_mm / (scale * patient.length_mm)
    hu = np.empty((n_slices, image_size, image_size), dtype=np.float32)
    liver = np.empty(hu.shape, dtype=bool)
    for k, level in enumerate(levels):
        canvas, _ = render_anatomy(series, float(level))
        hu[k] = canvas.hu
        liver[k] = canvas.labels == LABELS["liver"]
    n = int(rng.choice(TUMOUR_COUNTS, p=TUMOUR_COUNT_P))
    tumour, offset, tumours = _place_tumours(rng, liver, (slice_mm, pixel_mm, pixel_mm), n)
    hu += offset
    sigma = float(rng.uniform(8.0, 15.0))
    for k in range(n_slices):
        hu[k] = scan(hu[k], rng, sigma)
    label = np.where(tumour, TUMOUR, np.where(liver, LIVER, BACKGROUND)).astype(np.uint8)
    origin = (round(float(rng.uniform(-200, -100)), 3), round(float(rng.uniform(-250, -150)), 3),
              round(float(rng.uniform(-600, -100)), 3))
    return LitsCase(int(index), np.rint(hu).astype(np.int16), label, (pixel_mm, pixel_mm, slice_mm), origin,
                    tumours)


def _write_nifti(path: Path, array: np.ndarray, spacing, origin) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(image, str(path), useCompression=False)


def make_lits_sample(out_dir: str | Path, n_cases: int = 4, seed: int = 0, image_size: int = 128,
                     progress: bool = True) -> Path:
    """Write ``n_cases`` LiTS-format cases (``volume-i.nii``, ``segmentation-i.nii``, i = 0..n-1) + truth CSVs.

    Refuses (``ValueError``) an ``out_dir`` that exists and is not empty, so a sample is
    never mixed with other files.  Returns ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: output folder exists and is not empty")
    if int(n_cases) != n_cases or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    if int(image_size) != image_size or not 96 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer in 96..1024, got {image_size!r}")
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    case_rows, tumour_rows = [], []
    for i in tqdm(range(int(n_cases)), desc="make-lits-sample", unit="case", disable=not progress):
        case = generate_case(i, seed, int(image_size))
        _write_nifti(out / volume_name(i), case.hu, case.spacing, case.origin)
        _write_nifti(out / segmentation_name(i), case.label, case.spacing, case.origin)
        z, y, x = case.hu.shape
        case_rows.append([i, volume_name(i), segmentation_name(i), x, y, z, *case.spacing, *case.origin,
                          int((case.label > 0).sum()), int((case.label == TUMOUR).sum()), len(case.tumours)])
        tumour_rows += [[i, t, *tu.centre, tu.diameter_mm, tu.contrast, tu.delta_hu, tu.voxels]
                        for t, tu in enumerate(case.tumours)]
    for name, header, rows in (("lits_sample_cases.csv", CASE_COLUMNS, case_rows),
                               ("lits_sample_tumours.csv", TUMOUR_COLUMNS, tumour_rows)):
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return out


def add_make_lits_sample_parser(subparsers):
    """Register ``make-lits-sample -o DIR --cases N --seed S [--image-size PX]``; handler in ``func``."""
    from nnunet_ulseg.cli_args import add_output_folder

    p = subparsers.add_parser(
        "make-lits-sample", help="write a small synthetic sample in LiTS's format (volume-N.nii, segmentation-N.nii)",
        description="Write generated CT volumes in LiTS's format (volume-N.nii int16 HU, segmentation-N.nii with "
                    "0 background, 1 liver, 2 tumour) with CT-like anatomy and liver tumours of varied size and "
                    "contrast, plus lits_sample_cases.csv and lits_sample_tumours.csv, into a new or empty folder.")
    add_output_folder(p, help="output folder (must be new or empty)")
    p.add_argument("--cases", type=int, default=4, metavar="N", help="number of cases (default: 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same bytes (default: 0)")
    p.add_argument("--image-size", type=int, default=128, metavar="PX", help="slice size in px (default: 128)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run_make_lits_sample)
    return p


def run_make_lits_sample(args) -> int:
    out = make_lits_sample(args.out, n_cases=args.cases, seed=args.seed, image_size=args.image_size,
                           progress=not args.no_progress)
    with open(out / "lits_sample_cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_tumours = sum(int(r["n_tumours"]) for r in rows)
    print(f"{len(rows)} LiTS-format cases ({n_tumours} tumours) written to {out}")
    return 0


__all__ = ["make_lits_sample", "generate_case", "LitsCase", "Tumour", "volume_name", "segmentation_name",
           "BACKGROUND", "LIVER", "TUMOUR"]
