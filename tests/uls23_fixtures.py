"""A small generated ULS23-format sample for the conversion tests (DESIGN "ULS23 on disk").

``images/<name>.nii.gz`` + ``labels/<name>.nii.gz`` pairs named as ULS23 names them
(DeepLesion-derived ``<patient>_<study>_<series>_<slice>_lesion_NN`` and
``<source>_<case>_lesion_NN[_sample_K]``), anisotropic spacing 0.7 x 0.7 x 2.5 mm, CT-like
HU (soft tissue ramp + noise, brighter lesion).  Each lesion is an ellipsoid rotated in the
axial plane with its centre on a slice centre, so the cross-section on that slice has
exactly the semi-axes ``a``, ``b`` (px) drawn, and slice ``cz + dz`` has them scaled by
``sqrt(1 - (dz / c)^2)``.  VOIs are smaller than ULS23's 256 x 256 x 128 for speed, except
one at the real shape whose label is float32 ``(256, 256, 128, 1)`` written with nibabel, as
ULS23's labels are.  Also: one partially annotated VOI (a single labelled slice, off the
lesion centre), one lesion cut by the VOI border, one empty label, and (``faults``) a
shape mismatch, an unreadable label and an image without label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = (0.7, 0.7, 2.5)
SMALL = (72, 64, 20)  # x, y, z
REAL = (256, 256, 128)


@dataclass(frozen=True)
class Lesion:
    """One generated VOI: file stem, size (x, y, z), centre (x, y, z px), semi-axes a >= b (px), c (slices), angle."""

    stem: str
    size: tuple[int, int, int] = SMALL
    centre: tuple[float, float, int] = (36.3, 30.6, 10)
    a: float = 12.0
    b: float = 7.0
    c: float = 3.5
    angle_deg: float = 30.0
    labelled_dz: int | None = None  # partial annotation: only slice cz + dz is labelled
    real_format: bool = False  # float32 (x, y, z, 1) label through nibabel
    empty: bool = False
    skip: str | None = None  # the reason the converter must report, if any

    @property
    def file_name(self) -> str:
        return f"{self.stem}.nii.gz"

    @property
    def key_slice(self) -> int:
        return self.centre[2] + (self.labelled_dz or 0)

    def true_axes_px(self) -> tuple[float, float]:
        """Long and short axis (px) of the drawn cross-section on the key slice (continuous ellipse)."""
        f = math.sqrt(1.0 - ((self.labelled_dz or 0) / self.c) ** 2)
        return 2 * self.a * f, 2 * self.b * f

    @property
    def analytic(self) -> bool:
        """Whether the whole key-slice cross-section lies inside the VOI (so :meth:`true_axes_px` applies)."""
        x, y, _ = self.centre
        return self.a + 1 < min(x, y, self.size[0] - 1 - x, self.size[1] - 1 - y)


def ellipsoid(lesion: Lesion) -> np.ndarray:
    """The lesion's uint8 label ``[z, y, x]``: voxel centres inside the rotated ellipsoid."""
    nx, ny, nz = lesion.size
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx].astype(np.float64)
    cx, cy, cz = lesion.centre
    t = math.radians(lesion.angle_deg)
    dx, dy = x - cx, y - cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    inside = (u / lesion.a) ** 2 + (v / lesion.b) ** 2 + ((z - cz) / lesion.c) ** 2 <= 1.0
    if lesion.labelled_dz is not None:
        keep = np.zeros(nz, dtype=bool)
        keep[cz + lesion.labelled_dz] = True
        inside &= keep[:, None, None]
    if lesion.empty:
        inside[:] = False
    return inside.astype(np.uint8)


def ct_volume(size: tuple[int, int, int], lesion_mask: np.ndarray, seed: int) -> np.ndarray:
    """int16 HU ``[z, y, x]``: soft tissue 30..70 HU ramp + N(0, 6) noise, lesion +45 HU, air (-1000) at x < 4."""
    nx, ny, nz = size
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    hu = 30.0 + 40.0 * x / nx + 5.0 * z / max(nz, 1) + rng.normal(0.0, 6.0, (nz, ny, nx)) + 45.0 * lesion_mask
    hu[:, :, :4] = -1000.0
    return np.rint(hu).astype(np.int16)


def _write_sitk(path: Path, array: np.ndarray, spacing=SPACING) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), useCompression=True)


def _write_nibabel_4d(path: Path, label_zyx: np.ndarray, spacing=SPACING) -> None:
    import nibabel as nib

    data = np.ascontiguousarray(label_zyx.transpose(2, 1, 0)[..., None].astype(np.float32))  # (x, y, z, 1)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))


def default_lesions(real_shape: bool = True) -> list[Lesion]:
    """The sample's VOIs: 8 convertible (6 patients), 1 empty label."""
    lesions = [
        Lesion("000001_01_01_050_lesion_01"),
        Lesion("000001_02_01_030_lesion_01", centre=(30.0, 33.0, 9), a=9.5, b=6.0, angle_deg=-50.0),
        Lesion("bone_00002_lesion_01", centre=(40.0, 28.4, 8), a=14.0, b=9.0, c=4.0, angle_deg=75.0),
        Lesion("bone_00002_lesion_02", centre=(33.0, 31.0, 11), a=8.0, b=5.0, angle_deg=0.0),
        Lesion("lidcidri_007_lesion_01_sample_0", centre=(35.0, 32.0, 10), a=11.0, b=8.0, c=3.0, angle_deg=140.0,
               labelled_dz=1),
        Lesion("bone_00005_lesion_01", centre=(3.0, 30.0, 10), a=10.0, b=6.0, angle_deg=10.0),  # cut by the border
        Lesion("scan17", centre=(37.0, 30.0, 9), a=10.0, b=7.5, angle_deg=-20.0),  # no patient in the name
        Lesion("pancreas_00003_lesion_01", empty=True, skip="empty_label"),
    ]
    if real_shape:
        lesions.append(Lesion("000002_01_01_020_lesion_01", size=REAL, centre=(150.0, 100.0, 70), a=26.0, b=15.0,
                              c=5.0, angle_deg=110.0, real_format=True))
    return lesions


def uls23_sample(root: Path, lesions: list[Lesion] | None = None, faults: bool = True,
                 real_shape: bool = True) -> dict:
    """Write the sample under ``root`` (``images/``, ``labels/``); returns paths and the lesions by file name.

    ``faults`` adds ``bone_00009_lesion_01`` (label one slice shorter: shape_mismatch),
    ``bone_00010_lesion_01`` (label is not an image: unreadable_voi) and
    ``bone_00011_lesion_01`` (no label: missing_label).
    """
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    lesions = list(default_lesions(real_shape) if lesions is None else lesions)
    for i, lesion in enumerate(lesions):
        label = ellipsoid(lesion)
        _write_sitk(images / lesion.file_name, ct_volume(lesion.size, label, seed=i))
        if lesion.real_format:
            _write_nibabel_4d(labels / lesion.file_name, label)
        else:
            _write_sitk(labels / lesion.file_name, label.astype(np.float32))
    if faults:
        mismatch = Lesion("bone_00009_lesion_01", skip="shape_mismatch")
        label = ellipsoid(mismatch)
        _write_sitk(images / mismatch.file_name, ct_volume(mismatch.size, label, seed=91))
        _write_sitk(labels / mismatch.file_name, label[:-1].astype(np.float32))
        unreadable = Lesion("bone_00010_lesion_01", skip="unreadable_voi")
        _write_sitk(images / unreadable.file_name, ct_volume(unreadable.size, ellipsoid(unreadable), seed=92))
        (labels / unreadable.file_name).write_bytes(b"not a NIfTI file\n" * 8)
        orphan = Lesion("bone_00011_lesion_01", skip="missing_label")
        _write_sitk(images / orphan.file_name, ct_volume(orphan.size, ellipsoid(orphan), seed=93))
        lesions += [mismatch, unreadable, orphan]
    return {"root": root, "images": images, "labels": labels, "lesions": {l.file_name: l for l in lesions}}
