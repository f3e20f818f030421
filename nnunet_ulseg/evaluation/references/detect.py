"""Which kind of reference folder this is (``--ref-format``), and the :class:`~.base.Reference` that reads it.

``auto`` decides from the folder contents, for the sidecar rows being scored:

1. ``masks.csv`` in the folder: ``sample`` (a generated sample's true masks);
2. otherwise the first row (sidecar order) for which a file is found decides:
   ``<case><file_ending>`` whose header size is the row's ``crop_size x crop_size`` (and
   not its key-slice size): ``crop``; any other ``<case>.<image ending>``: ``volume``;
   ``<ref>/<File_name>`` with an image ending (``.nii.gz`` ...): ``uls23``; a key-slice
   PNG (tree or flat ``File_name``): ``png``; any other volume lookup: ``volume``.

No file for any row is a ``FileNotFoundError`` listing what was looked for.  An explicit
format skips the guess; auto-detection never reads more than one image header.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.label_io import IMAGE_ENDINGS, has_image_ending
from nnunet_ulseg.evaluation.references.base import Reference
from nnunet_ulseg.evaluation.references.crop import CropReference
from nnunet_ulseg.evaluation.references.png import PngReference, png_candidates
from nnunet_ulseg.evaluation.references.sample import SampleReference
from nnunet_ulseg.evaluation.references.volume import VolumeReference

REF_FORMATS = ("auto", "crop", "png", "volume", "uls23", "sample")


def _header_size(path: Path) -> tuple[int, ...]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError(f"{path}: cannot read the image header") from None
    return tuple(int(s) for s in reader.GetSize())


def _kind_of_row(folder: Path, row: LesionRow, file_ending: str, volumes: VolumeReference) -> str | None:
    crop = folder / f"{row.case}{file_ending}"
    if crop.is_file():
        size = tuple(s for s in _header_size(crop) if s != 1)
        slice_size = (row.image_width, row.image_height)
        return "crop" if size == (row.crop_size, row.crop_size) and size != slice_size else "volume"
    if any((folder / f"{row.case}{ext}").is_file() for ext in IMAGE_ENDINGS):
        return "volume"
    if has_image_ending(row.File_name) and (folder / row.File_name).is_file():
        return "uls23"
    if any(p.is_file() for p in png_candidates(folder, row)):
        return "png"
    return "volume" if volumes.locate(row) is not None else None


def detect_format(folder: str | Path, rows: Sequence[LesionRow], file_ending: str = ".mha") -> str:
    """The reference kind of ``folder`` for ``rows`` (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such reference folder")
    if (folder / "masks.csv").is_file():
        return "sample"
    volumes = VolumeReference(folder)
    for row in rows:
        kind = _kind_of_row(folder, row, file_ending, volumes)
        if kind is not None:
            return kind
    example = rows[0] if rows else None
    hint = "" if example is None else (
        f" (for case {example.case}: {example.case}{file_ending} crops, "
        f"{example.patient:06d}_{example.study:02d}_{example.series:02d}/{example.key_slice:03d}.png or "
        f"{example.File_name} key slices, {example.case}.nii.gz / .mha volumes, a masks.csv sample)")
    raise FileNotFoundError(f"{folder}: no reference file found for any of the {len(rows)} cases{hint}; "
                            f"check the folder or give --ref-format ({', '.join(REF_FORMATS[1:])})")


def open_reference(folder: str | Path, ref_format: str = "auto", rows: Sequence[LesionRow] = (),
                   file_ending: str = ".mha", interpolation: str = "linear") -> Reference:
    """The :class:`~.base.Reference` reading ``folder`` as ``ref_format`` (``auto``: :func:`detect_format` on ``rows``).

    ``file_ending`` and ``interpolation`` apply to the crop kind (the predictions' own).
    """
    if ref_format not in REF_FORMATS:
        raise ValueError(f"reference format must be one of {', '.join(REF_FORMATS)}, got {ref_format!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such reference folder")
    kind = detect_format(folder, rows, file_ending) if ref_format == "auto" else ref_format
    if kind == "crop":
        return CropReference(folder, file_ending, interpolation)
    if kind == "png":
        return PngReference(folder)
    if kind == "sample":
        return SampleReference(folder)
    return VolumeReference(folder, kind)


def check_reference_folder(folder: str | Path, ref_format: str = "auto") -> Path:
    """Early checks of a reference folder before any work (``ulseg refine --truth``), without the sidecar rows.

    ``ValueError`` for an unknown format; ``FileNotFoundError`` for a missing or empty
    folder, or ``sample`` without ``masks.csv``.  Which lesions it covers is only known
    when it is read with the rows (:func:`open_reference`).
    """
    folder = Path(folder)
    if ref_format not in REF_FORMATS:
        raise ValueError(f"reference format must be one of {', '.join(REF_FORMATS)}, got {ref_format!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such reference folder")
    if ref_format == "sample" and not (folder / "masks.csv").is_file():
        raise FileNotFoundError(f"{folder} has no masks.csv: --ref-format sample needs a folder made by "
                                "ulseg make-sample")
    if not any(folder.iterdir()):
        raise FileNotFoundError(f"{folder}: empty reference folder (give key-slice PNGs, NIfTI/MHA masks, ULS23 "
                                "VOIs, <case>.mha crops or a make-sample folder with masks.csv)")
    return folder
