"""Render one planned series: slices with 3D lesions, per-slice instance masks, RECIST marks.

For each key slice the anatomy is rendered once, lesions are placed on it, and the same
canvas is reused for that slice's image; its neighbours are rendered at their own body
levels (the anatomy moves by one slice interval each), and every lesion is drawn on
every written slice it reaches, with its section at that slice's distance in mm from
the key slice (:func:`nnunet_ulseg.demo.lesions.fit_sections`), so thin and thick
series sample the same 3D lesion.  Only then is the slice "scanned" (blur + correlated
noise) and written as DeepLesion's uint16 PNG, and the slice's true instance map (the
exact pixels drawn for each lesion) beside it in ``Masks_png``.

The key slice's image, mask and RECIST mark do not depend on the neighbours: the series'
random stream is consumed in the same order whatever the off-key sections are, and the
off-key geometry leaves the key section untouched.

RECIST marks are measured from the true key-slice mask like a radiologist would
(:func:`nnunet_ulseg.recist.mask_axes`: longest diameter, longest perpendicular), then
each endpoint is jittered like a hand placement (see :func:`annotate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from nnunet_ulseg.demo.anatomy import make_series_anatomy, render_anatomy
from nnunet_ulseg.demo.ct import hu_to_png, scan
from nnunet_ulseg.demo.layout import NEIGHBOURS, PatientPlan, SeriesPlan, StudyPlan
from nnunet_ulseg.demo.lesions import Lesion, fit_sections, paint_lesion, sample_lesion
from nnunet_ulseg.demo.placement import place_lesions

#: Endpoint jitter (px, standard deviation) of a careful reader; see :func:`annotate`.
JITTER_PX = 0.7


@dataclass
class LesionRecord:
    """Everything the CSVs need about one measured lesion."""

    folder: str
    key_index: int
    instance: int
    lesion_type: int
    noisy: int
    recist: object  # nnunet_ulseg.recist.Recist, 0-based
    location: tuple[float, float, float]
    mask_path: str
    #: ``(slice index, pixels)`` of every slice of the sub-volume where the lesion is present, in slice order
    #: (filled while the slices after the key slice are rendered, so complete once ``render_series`` returns).
    slices: list[tuple[int, int]] = field(default_factory=list)


def annotate(mask: np.ndarray, spacing: tuple[float, float], rng: np.random.Generator):
    """A RECIST mark for ``mask``: the true axes plus annotator jitter, as a ``Recist``.

    Each of the 4 endpoints moves by ``N(0, sigma)`` per coordinate with
    ``sigma = min(0.7 px, 1.5 % of the long axis)``, clipped at 2 sigma.  0.7 px is the
    scatter of a careful click; the 1.5 % cap keeps tiny lesions (5-10 px) from getting a
    10-20 % length error that no radiologist would make at the zoom they measure at, and
    bounds the long-axis error below 2 * 2 * sqrt(2) * 1.5 % < 9 %.  Clipping keeps every
    endpoint within 1.4 px (per coordinate) of the true boundary.
    """
    from nnunet_ulseg.recist import Recist, mask_axes

    axes = mask_axes(mask, spacing=spacing)
    sigma = min(JITTER_PX, 0.015 * axes.long_px)
    jitter = np.clip(rng.normal(0.0, sigma, (4, 2)), -2 * sigma, 2 * sigma)
    try:
        return Recist(axes.long_endpoints + jitter[:2], axes.short_endpoints + jitter[2:])
    except ValueError:  # a jitter that makes the mark degenerate: keep the exact one
        return Recist(axes.long_endpoints, axes.short_endpoints)


def folder_name(patient: PatientPlan, study: StudyPlan, series: SeriesPlan) -> str:
    """DeepLesion's series folder name ``{patient:06d}_{study:02d}_{series:02d}``."""
    return f"{patient.patient_index:06d}_{study.study_index:02d}_{series.series_id:02d}"


def render_series(
    patient: PatientPlan, study: StudyPlan, series: SeriesPlan, image_size: int, out_dir: Path,
    on_slice: Callable[[], None] | None = None, write: Callable[[Path, np.ndarray], object] | None = None,
) -> list[LesionRecord]:
    """Write the series' PNGs and per-slice instance maps under ``out_dir``; return its lesion records.

    Records come in key-slice order, and within a slice in planned order, which is the
    instance order (instance ``k`` = ``k``-th row of that File_name).  All randomness
    comes from the series' own seed, so a series renders the same whatever else is in
    the corpus.  ``write(path, array)`` writes a PNG (default ``cv2.imwrite``; the corpus
    passes a background writer).  Each slice of a key slice's sub-volume gets an instance
    map with that key slice's instance numbers; a lesion of another key slice reaching it
    would break the layout's spacing rule (:func:`nnunet_ulseg.demo.layout._fits`) and
    raises ``RuntimeError`` rather than leaving CT without a mask.
    """
    write = write or (lambda path, image: cv2.imwrite(str(path), image))
    rng = np.random.default_rng(series.seed)
    sx, sy, dz = series.spacing
    length = patient.anatomy.length_mm
    anatomy = make_series_anatomy(patient.anatomy, rng, sx, image_size, series.phase)
    folder = folder_name(patient, study, series)
    (out_dir / "Images_png" / folder).mkdir(parents=True, exist_ok=True)
    (out_dir / "Masks_png" / folder).mkdir(parents=True, exist_ok=True)

    by_key: dict[int, list[Lesion]] = {}  # key index -> its lesions, in instance order
    key_canvases = {}
    frames = {}
    for key in series.keys:
        canvas, frame = render_anatomy(anatomy, key.level)
        lesions = [sample_lesion(rng, plan.lesion_type, plan.long_mm) for plan in key.lesions]
        for lesion in lesions:
            main = lesion.blobs[0].hz_mm
            lesion.z_mm = float(np.clip(rng.uniform(-0.3, 0.3) * dz, -0.4 * main, 0.4 * main))
        place_lesions(canvas, frame, lesions, [p.long_mm / sx for p in key.lesions], rng, sx)
        key_canvases[key.index] = canvas
        frames[key.index] = frame
        by_key[key.index] = lesions

    records: list[LesionRecord] = []
    for key in series.keys:
        offsets = [(index - key.index) * dz for index in range(key.index - NEIGHBOURS, key.index + NEIGHBOURS + 1)]
        fits = [fit_sections(lesion, (image_size, image_size), offsets) for lesion in by_key[key.index]]
        present: dict[int, list[tuple[int, int]]] = {k: [] for k in range(1, len(by_key[key.index]) + 1)}
        for index in range(key.index - NEIGHBOURS, key.index + NEIGHBOURS + 1):
            canvas = key_canvases.get(index)
            if canvas is None:
                canvas, _ = render_anatomy(anatomy, series.slice_level(index, length))
            instances = np.zeros(canvas.shape, dtype=np.uint8)
            for key_index, lesions in by_key.items():
                for k, lesion in enumerate(lesions, start=1):
                    dz_mm = (index - key_index) * dz
                    if abs(dz_mm - lesion.z_mm) >= lesion.hz_mm:
                        continue
                    if key_index != key.index:
                        raise RuntimeError(f"{folder}: a lesion of key slice {key_index} reaches slice {index} "
                                           f"of key slice {key.index}'s sub-volume (layout invariant broken)")
                    shrink = fits[k - 1][dz_mm]
                    drawn = None if shrink is None else paint_lesion(canvas.hu, lesion, dz_mm, index, shrink)
                    if drawn is None:
                        continue
                    box, hard = drawn
                    instances[box][hard] = k
                    present[k].append((index, int(hard.sum())))
            image = scan(canvas.hu, rng, series.noise_hu)
            write(out_dir / "Images_png" / folder / f"{index:03d}.png", hu_to_png(image))
            write(out_dir / mask_path(folder, index), instances)
            if index == key.index:
                frame = frames[index]
                for k, (lesion, plan) in enumerate(zip(by_key[index], key.lesions), start=1):
                    location = (
                        float(np.clip((lesion.cx - frame.cx + frame.a) / (2 * frame.a), 0, 1)),
                        float(np.clip((lesion.cy - frame.cy + frame.b) / (2 * frame.b), 0, 1)),
                        float(np.clip(key.level, 0, 1)),
                    )
                    records.append(LesionRecord(folder, index, k, plan.lesion_type, plan.noisy,
                                                annotate(instances == k, (sx, sy), rng), location,
                                                mask_path(folder, index), present[k]))
            if on_slice is not None:
                on_slice()
    return records


def mask_path(folder: str, index: int) -> str:
    """Path, relative to the sample folder, of slice ``index``'s instance map: ``Masks_png/<folder>/<index:03d>.png``."""
    return f"Masks_png/{folder}/{index:03d}.png"
