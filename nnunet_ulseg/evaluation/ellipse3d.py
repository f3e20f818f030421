"""The "ellipse" row of the 3D evaluation: ellipses of the 3D RECIST estimate, written as a predictions folder.

The project's quality rule puts every model row beside the RECIST-ellipse row.  In 3D the
ellipse of a slice ``k`` slices from the key slice is the ellipse of WSSS's 3D RECIST
estimate ``R̂`` (Sec. 3.3, :func:`nnunet_ulseg.pseudo_masks.recist3d.estimate_recist`: the
endpoints shrink towards the axes' crossing point by Pythagoras at the slice's mm distance
``|k| * spacing_z``), drawn by the registry's ``ellipse`` maker
(:mod:`nnunet_ulseg.pseudo_masks.registry`), so this is the region ``R̂`` that the
propagation's trimaps start from (Sec. 3.3 "GrabCut-3DE" initialisation).

The folder has exactly the format of ``ulseg propagate``'s ``round<m>/test_predictions``:
crop-geometry label files ``<case><file_ending>`` (0 background, 1 lesion; every slice cut
with the KEY case's crop box, so each pastes back with the key case's ``lesions.csv``
row) and a ``slices.csv`` (:mod:`nnunet_ulseg.conversion.slices`), and it is scored by the
same code as the models' folders (:mod:`.evaluate3d`).

Choices:

* The slices written are those of a template ``slices.csv`` (a model's predictions
  folder), so the ellipse is scored on exactly the same cases; ``reach`` keeps only
  ``|offset| <= reach``.
* The mark is estimated in crop pixels: the crop is the slice scaled by ``scale``
  (CONVENTIONS "Geometry"), so its in-plane spacing is ``(spacing_x, spacing_y) / scale``
  and the estimate equals the slice-geometry one mapped into the crop.
* Beyond the estimate's reach (``R̂`` is ``None``: the long axis has vanished) the file is
  written empty: the ellipse predicts background there, and an empty file is scored
  like any other (a missing one would be an error).
* ``mode``: :data:`~nnunet_ulseg.pseudo_masks.recist3d.MODES` (default ``ratio``, the
  supplement's reading).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import cv2
import numpy as np
from tqdm import tqdm

from nnunet_ulseg.conversion.io import write_mha
from nnunet_ulseg.conversion.sidecar import LesionRow, read_sidecar
from nnunet_ulseg.conversion.slices import SLICES_FILE, SliceRow, read_slices, write_slices
from nnunet_ulseg.pseudo_masks.recist3d import estimate_recist, slice_distance_mm
from nnunet_ulseg.pseudo_masks.registry import make_pseudo_mask
from nnunet_ulseg.recist import Recist

#: the label_status of the rows written here
ELLIPSE_STATUS = "ellipse"
WRITE_ENDINGS = (".mha", ".png")
#: the folder ``ulseg evaluate --3d --ellipse`` writes the baseline into, inside its output folder
ELLIPSE_FOLDER = "ellipse_predictions"


def ellipse_crop_mask(row: LesionRow, offset: int, mode: str = "ratio") -> np.ndarray:
    """The crop-geometry uint8 ellipse (1 lesion) of ``row``'s 3D RECIST estimate ``offset`` slices away."""
    size = (row.crop_size, row.crop_size)
    spacing = row.crop_spacing_xy
    hat = estimate_recist(Recist.from_points(row.recist_crop_points), slice_distance_mm(offset, row.spacing_z),
                          spacing, mode)
    if hat is None:
        return np.zeros(size, dtype=np.uint8)
    mask, _ = make_pseudo_mask("ellipse", hat.points, None, size, (row.window_min, row.window_max))
    return mask


def _write(path: Path, mask: np.ndarray, ending: str) -> None:
    if ending == ".png":
        if not cv2.imwrite(str(path), mask):
            raise OSError(f"{path}: cannot write")
    else:
        write_mha(str(path), mask, (1.0, 1.0))


def write_ellipse_predictions(template: str | Path, sidecar: str | Path, out_dir: str | Path,
                              file_ending: str = ".mha", reach: int | None = None, mode: str = "ratio",
                              progress: bool = True) -> list[SliceRow]:
    """Write the ellipse baseline folder for the cases of the ``template`` slices.csv (module docstring).

    Returns the rows written to ``out_dir/slices.csv``.  ``ValueError`` naming the template
    line for a key case that ``sidecar`` lacks.
    """
    if file_ending not in WRITE_ENDINGS:
        raise ValueError(f"ellipse baseline: file ending must be one of {WRITE_ENDINGS}, got {file_ending!r}")
    template, out_dir = Path(template), Path(out_dir)
    rows = {r.case: r for r in read_sidecar(sidecar)}
    slices = read_slices(template)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[SliceRow] = []
    for line, s in enumerate(tqdm(slices, desc="ellipse baseline", unit="slice", disable=not progress), start=2):
        if reach is not None and abs(s.offset) > reach:
            continue
        row = rows.get(s.key_case)
        if row is None:
            raise ValueError(f"{template}, line {line}: key case {s.key_case!r} of case {s.case!r} is not in {sidecar}")
        _write(out_dir / f"{s.case}{file_ending}", ellipse_crop_mask(row, s.offset, mode), file_ending)
        written.append(dataclasses.replace(s, label_status=ELLIPSE_STATUS))
    write_slices(out_dir / SLICES_FILE, written)
    return written

