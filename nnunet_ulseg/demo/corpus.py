"""``make_sample``: write a small corpus in DeepLesion's on-disk format, with true masks.

Layout written under ``out_dir`` (``docs/DESIGN.md``, "DeepLesion on disk"):

* ``DL_info.csv``: DeepLesion's 18 columns in order, one row per lesion, rows sorted by
  File_name (patient, study, series, key slice) and, on a shared slice, by instance;
* ``Images_png/{patient:06d}_{study:02d}_{series:02d}/{slice:03d}.png``: uint16,
  HU + 32768, each key slice with ``NEIGHBOURS`` slices on each side;
* ``Masks_png/<same folder>/{slice:03d}.png``: uint8 instance map of **every** written
  slice, key slice and neighbours (0 background, ``k`` = the lesion of the ``k``-th
  DL_info row with that key slice's File_name: a neighbour belongs to exactly one key
  slice's sub-volume, so it uses that key slice's instance numbers; a slice the lesions
  do not reach is all 0);
* ``masks.csv``: ``File_name, lesion_instance, mask_path, true_type`` in DL_info order,
  ``mask_path`` the key slice's instance map (unchanged from the key-slice-only format);
* ``masks3d.csv``: the lesions' true 3D extent, one row per lesion and slice where it
  is present, in DL_info order and then slice order: ``File_name, lesion_instance``
  (as in masks.csv), ``slice_index`` (1-based, as Key_slice_index), ``offset`` (slices
  from the key slice), ``z_mm`` (``offset`` x the slice interval, Spacing_mm_px_ z),
  ``pixels`` (the lesion's pixel count there) and ``mask_path``.  The key slice is
  always a row (``offset`` 0); the rows of a lesion are consecutive slices; its area
  and measured long axis never grow away from the key slice, which has the longest
  axis (:func:`nnunet_ulseg.demo.lesions.fit_sections`).  The truth is complete inside
  ``Slice_range`` only: a lesion present on the first or last slice of its sub-volume
  continues beyond it (common on 1 mm series, whose 7 slices span 6 mm), and no CT is
  written there.  :class:`nnunet_ulseg.demo.truth3d.TrueMasks3D` reads a lesion's
  stack back.

The CSVs are written with :mod:`csv`, so multi-number fields come out quoted exactly
like DeepLesion's (``"0.7, 0.7, 5"``) and an unknown age is an empty field.
"""
from __future__ import annotations

import csv
from pathlib import Path

from nnunet_ulseg.demo.layout import NEIGHBOURS, plan_corpus
from nnunet_ulseg.demo.series import LesionRecord, mask_path, render_series
from nnunet_ulseg.demo.writer import PngWriter

DL_INFO_COLUMNS = [
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
    "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
    "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
    "Patient_age", "Train_Val_Test",
]
MASKS_COLUMNS = ["File_name", "lesion_instance", "mask_path", "true_type"]
MASKS3D_COLUMNS = ["File_name", "lesion_instance", "slice_index", "offset", "z_mm", "pixels", "mask_path"]
#: Display window DeepLesion lists per series; lung and bone lesions are read in their own window.
WINDOWS = {5: (-1350, 150), 1: (-450, 1050)}
DEFAULT_WINDOW = (-175, 275)
#: Padding (px) of Bounding_boxes around the RECIST extent, as in DeepLesion.
BOX_PAD = 5.0


def _numbers(values, fmt: str = "{:.6g}") -> str:
    """DeepLesion's multi-number field text: ``"a, b, c"`` (6 significant digits by default)."""
    return ", ".join(fmt.format(v) for v in values)


def dl_info_row(record: LesionRecord, patient, study, series, image_size: int) -> list:
    """One DL_info.csv row.  Training rows hide the type (-1), as DeepLesion does.

    Measurement_coordinates come from :meth:`Recist.to_deeplesion` (the only 0 -> 1-based
    conversion); the bounding box is read back from those 1-based numbers and padded, so
    it is 1-based too without converting again.
    """
    from nnunet_ulseg.recist import parse_numbers

    coords = record.recist.to_deeplesion()
    pts = parse_numbers(coords, 8, "Measurement_coordinates").reshape(4, 2)
    box = (pts[:, 0].min() - BOX_PAD, pts[:, 1].min() - BOX_PAD, pts[:, 0].max() + BOX_PAD, pts[:, 1].max() + BOX_PAD)
    window = WINDOWS.get(record.lesion_type, DEFAULT_WINDOW)
    return [
        f"{record.folder}_{record.key_index:03d}.png",
        patient.patient_index,
        study.study_index,
        series.series_id,
        record.key_index,
        coords,
        _numbers(box, "{:.4f}"),
        _numbers((record.recist.long_length, record.recist.short_length), "{:.4f}"),
        _numbers(record.location),
        record.lesion_type if patient.split != 1 else -1,
        record.noisy,
        _numbers((record.key_index - NEIGHBOURS, record.key_index + NEIGHBOURS), "{:d}"),
        _numbers(series.spacing),
        _numbers((image_size, image_size), "{:d}"),
        _numbers(window, "{:d}"),
        patient.gender,
        "" if patient.age is None else patient.age,
        patient.split,
    ]


def make_sample(
    out_dir: str | Path, n_lesions: int = 40, seed: int = 0, image_size: int = 512, progress: bool = True
) -> Path:
    """Write a DeepLesion-format demo corpus of ``n_lesions`` lesions with true masks.

    Every lesion is 3D: the CT of each neighbouring slice shows its section there and
    ``Masks_png`` holds the true instance map of every written slice, indexed by
    ``masks3d.csv`` (module docstring).  Deterministic in ``seed`` (same bytes).  Refuses (``ValueError``) an ``out_dir`` that
    exists and is not empty, so a corpus is never mixed with older files.
    ``image_size < 512`` is allowed for quick tests: spacing stays realistic and lesions
    keep their mm size, but the anatomy is scaled down to fit the smaller field.
    Returns ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: output folder exists and is not empty")
    if int(n_lesions) != n_lesions or n_lesions < 1:
        raise ValueError(f"n_lesions must be a positive integer, got {n_lesions!r}")
    if int(image_size) != image_size or not 128 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer in 128..1024, got {image_size!r}")
    plan = plan_corpus(int(n_lesions), seed)
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    n_slices = sum(len(se.keys) for p in plan for st in p.studies for se in st.series) * (2 * NEIGHBOURS + 1)
    rows, mask_rows, mask3d_rows = [], [], []
    with tqdm(total=n_slices, desc="make-sample", unit="slice", disable=not progress) as bar, PngWriter() as png:
        for patient in plan:
            for study in patient.studies:
                for series in study.series:
                    for rec in render_series(patient, study, series, int(image_size), out, bar.update, png.write):
                        row = dl_info_row(rec, patient, study, series, int(image_size))
                        rows.append(row)
                        mask_rows.append([row[0], rec.instance, rec.mask_path, rec.lesion_type])
                        mask3d_rows += masks3d_rows(rec, row[0], series.spacing[2])
    _write_csv(out / "DL_info.csv", DL_INFO_COLUMNS, rows)
    _write_csv(out / "masks.csv", MASKS_COLUMNS, mask_rows)
    _write_csv(out / "masks3d.csv", MASKS3D_COLUMNS, mask3d_rows)
    return out


def masks3d_rows(record: LesionRecord, file_name: str, slice_interval_mm: float) -> list[list]:
    """The ``masks3d.csv`` rows of one lesion (module docstring), in slice order."""
    out = []
    for index, pixels in record.slices:
        offset = index - record.key_index
        out.append([file_name, record.instance, index, offset, f"{offset * slice_interval_mm:.6g}", pixels,
                    mask_path(record.folder, index)])
    return out


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV with ``\n`` line ends (csv quotes fields that contain commas)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
