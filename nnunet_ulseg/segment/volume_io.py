"""CT volumes in and label volumes out, keeping the scan's geometry exactly (issue 15 item 1).

Axis convention: SimpleITK indexes a voxel ``(i, j, k)`` = ``(x, y, slice)``; its numpy
view is ``[k, j, i]``.  An *axial slice* here is one ``k`` of the stored grid (the third
image axis, the way scanners and DICOM series store a CT), returned as HU ``[y, x]``
(``[j, i]``) with the in-plane spacing ``(sx, sy)`` = ``spacing[0], spacing[1]``.  The
volume is never reoriented or resampled: RECIST marks are drawn on the stored slices, and
the output label volume must overlay the input voxel for voxel.  World (patient, LPS mm)
coordinates go through SimpleITK's own index <-> physical transforms, so any direction
matrix (oblique, flipped) and anisotropic spacing are handled (:mod:`.marks`).

DICOM: a folder is read as one series with ``ImageSeriesReader`` (slices sorted by
position by GDCM); SimpleITK applies Rescale Slope/Intercept, so the pixels are HU.  A
folder holding several series needs ``series_uid`` (the error lists them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: File endings read as one image file.
VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File endings a label volume may be written as (``.nii.gz`` by default).
LABEL_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass
class Volume:
    """A CT volume: its SimpleITK image (geometry) and HU array ``[k, y, x]`` (float32).

    ``files``: for a DICOM series, file ``k`` is slice ``k`` (the order the series reader
    stacked them; the DICOM-SEG output references them); empty for a volume file.
    """

    image: sitk.Image
    hu: np.ndarray
    source: str
    files: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int, int]:
        """``(nx, ny, n_slices)``, SimpleITK order."""
        return tuple(int(v) for v in self.image.GetSize())

    @property
    def n_slices(self) -> int:
        return self.hu.shape[0]

    @property
    def slice_shape(self) -> tuple[int, int]:
        """``(height, width)`` of an axial slice."""
        return self.hu.shape[1], self.hu.shape[2]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(sx, sy, sz)`` mm, SimpleITK order (``sz`` the slice spacing)."""
        return tuple(float(v) for v in self.image.GetSpacing())

    def slice_hu(self, k: int) -> np.ndarray:
        """Axial slice ``k`` as HU ``[y, x]`` (a view)."""
        if not 0 <= int(k) < self.n_slices:
            raise ValueError(f"{self.source}: slice {k} outside 0..{self.n_slices - 1}")
        return self.hu[int(k)]

    def has_slice(self, k: int) -> bool:
        return 0 <= int(k) < self.n_slices

    def to_world(self, index_xyk) -> tuple[float, float, float]:
        """Continuous index ``(x, y, k)`` -> physical point (LPS mm)."""
        return tuple(self.image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyk]))

    def to_index(self, point_lps) -> tuple[float, float, float]:
        """Physical point (LPS mm) -> continuous index ``(x, y, k)``."""
        return tuple(self.image.TransformPhysicalPointToContinuousIndex([float(v) for v in point_lps]))


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir()


def dicom_series(folder: str | os.PathLike) -> list[str]:
    """The series instance UIDs found in a folder (not recursive)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def read_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read a CT volume: one NIfTI/NRRD/MHA file, or a DICOM series folder (module docstring).

    A 2D image is read as a one-slice volume.  Errors name the path: missing file, unknown
    ending, a folder without DICOM series, several series without ``series_uid``, an
    unknown ``series_uid``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if _is_dicom_folder(p):
        uids = dicom_series(p)
        if not uids:
            raise ValueError(f"{p}: a folder, but no DICOM series in it")
        if series_uid is None:
            if len(uids) > 1:
                raise ValueError(f"{p}: {len(uids)} DICOM series ({', '.join(uids)}); choose one with --series-uid")
            series_uid = uids[0]
        elif series_uid not in uids:
            raise ValueError(f"{p}: no DICOM series {series_uid}; found {', '.join(uids)}")
        reader = sitk.ImageSeriesReader()
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), series_uid))
        reader.SetFileNames(files)
        image = reader.Execute()
    else:
        files = ()
        if not p.name.lower().endswith(VOLUME_ENDINGS):
            raise ValueError(f"{p}: not a volume file (expected one of {', '.join(VOLUME_ENDINGS)} or a DICOM folder)")
        try:
            image = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise ValueError(f"{p}: cannot read ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{p}: {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a CT (1)")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    if image.GetDimension() != 3:
        raise ValueError(f"{p}: a {image.GetDimension()}D image; expected a 3D CT volume")
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    return Volume(image, hu, str(p), files if image.GetSize()[2] == len(files) else ())


def label_path(out_dir: str | os.PathLike, name: str, ending: str = ".nii.gz") -> Path:
    """``out_dir/<name><ending>`` for a label volume; ``ValueError`` for an unsupported ending."""
    if ending not in LABEL_ENDINGS:
        raise ValueError(f"label file ending must be one of {', '.join(LABEL_ENDINGS)}, got {ending!r}")
    return Path(out_dir) / f"{name}{ending}"


def write_label_volume(labels: np.ndarray, like: Volume, path: str | os.PathLike) -> Path:
    """Write ``labels`` ``[k, y, x]`` with exactly ``like``'s size, spacing, origin and direction (compressed).

    uint8 when every label fits, else uint16.
    """
    labels = np.asarray(labels)
    if labels.shape != like.hu.shape:
        raise ValueError(f"label array {labels.shape} does not match the volume {like.hu.shape} ([k, y, x])")
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    image = sitk.GetImageFromArray(labels.astype(dtype))
    image.CopyInformation(like.image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path
