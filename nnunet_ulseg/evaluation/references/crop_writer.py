"""Crop-geometry reference masks from a generated sample (a ``--ref-format crop`` folder).

:func:`nnunet_ulseg.demo.make_sample` writes the true lesion masks in key-slice geometry
(``Masks_png`` + ``masks.csv``), which ``ulseg evaluate`` reads directly
(``--ref-format sample``, no round trip).  Crop-geometry copies are for tools that want
references beside the predictions, in their geometry: each true mask is cut out with the
lesion's ``lesions.csv`` crop box by
:func:`~nnunet_ulseg.conversion.geometry.slice_to_crop_mask` (nearest neighbour, the
mapping the converter used for the CT crop), 0 outside the slice.  Scoring against them
takes the reference slice -> crop -> slice, which is lossy at every scale but 1.

Files are ``<case>.mha``, uint8, label 1 = lesion, 0 = background.  Choice: the header
spacing is copied from the case's CT crop ``imagesTs/<case>_0000.mha`` (or
``imagesTr/``) beside the sidecar when it exists, so the reference lies exactly on the
image; otherwise the converter's nominal spacing (1, 1) is written.  Evaluation itself
uses only the array and the sidecar.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_ulseg.conversion.deeplesion import NOMINAL_SPACING
from nnunet_ulseg.conversion.geometry import slice_to_crop_mask
from nnunet_ulseg.conversion.io import write_mha
from nnunet_ulseg.conversion.sidecar import LesionRow, read_sidecar
from nnunet_ulseg.evaluation.references.sample import TrueMasks
from nnunet_ulseg.nnunet_layout import image_filename


def slice_mask_to_crop(mask: np.ndarray, row: LesionRow) -> np.ndarray:
    """A key-slice mask cut to ``row``'s crop (:func:`~nnunet_ulseg.conversion.geometry.slice_to_crop_mask`)."""
    return slice_to_crop_mask(mask, row.box)


def _image_spacing(dataset_dir: Path, case: str) -> tuple[float, float]:
    import SimpleITK as sitk

    for folder in ("imagesTs", "imagesTr"):
        path = dataset_dir / folder / image_filename(case, ".mha")
        if path.is_file():
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(float(s) for s in reader.GetSpacing()[:2])
    return tuple(NOMINAL_SPACING)


def write_reference_crops(sample_dir: str | Path, sidecar: str | Path, out_dir: str | Path,
                          split: str | None = "test") -> list[Path]:
    """Write the true mask of every sidecar case of ``split`` (``"all"``: every case) as ``<out_dir>/<case>.mha``.

    ``sample_dir`` is a :func:`~nnunet_ulseg.demo.make_sample` folder (``masks.csv``);
    returns the written paths in sidecar order.  Raises ``ValueError`` when the split
    has no cases or a case has no true mask.
    """
    sidecar = Path(sidecar)
    out = Path(out_dir)
    rows = [r for r in read_sidecar(sidecar) if split in (None, "all") or r.split == split]
    if not rows:
        raise ValueError(f"{sidecar}: no cases of split {split!r}")
    truth = TrueMasks(sample_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        crop = slice_mask_to_crop(truth.mask(row.dl_row, row.File_name), row)
        path = out / f"{row.case}.mha"
        write_mha(str(path), crop, _image_spacing(sidecar.parent, row.case))
        written.append(path)
    return written
