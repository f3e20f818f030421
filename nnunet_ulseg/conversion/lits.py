"""LiTS volumes -> the two nnU-Net raw datasets of E²Net's two stages (E²Net Sec. 2 "Framework", Sec. 3).

:func:`convert_lits` reads a LiTS folder (``volume-N.nii`` + ``segmentation-N.nii``, 0
background, 1 liver, 2 tumour; ``.nii.gz`` too; searched recursively, since LiTS unpacks
into "Training Batch 1/2"; never written to) and writes two datasets::

    Dataset<ID>_<name>Liver/      stage 1: coarse liver on whole slices
        imagesTr/LiTS_NNNN_0000.mha   the volume, its geometry kept (spacing, origin, direction)
        labelsTr/LiTS_NNNN.mha        0 background, 1 liver (tumour merged into the liver)
        imagesTs/...                  test volumes
        referencesTs/LiTS_NNNN.mha    the test cases' LiTS labels (0/1/2, input geometry): what
                                      ``ulseg evaluate-lits`` scores a two-stage prediction against
    Dataset<ID+1>_<name>Tumour/   stage 2: liver and tumour on the liver's box
        imagesTr/LiTS_NNNN_0000.mha   the liver's bounding box, padded, resized in-plane to 256 x 256
                                      (``crop_size``; 256 is the paper's)
        labelsTr/LiTS_NNNN.mha        0/1/2 on that crop; dataset.json makes them regions
        imagesTs/ labelsTs/           the test cases' crops and their 0/1/2 crop labels
    both: dataset.json, splits_final.json, lits_cases.csv, conversion_report.csv

Representation, and why:

* **3D volumes, trained slice by slice.**  The paper's model is 2D (Sec. 2, 3: "we segment
  all 2D slices ... and stack the results").  Each case stays one 3D ``.mha`` (CONVENTIONS
  "Files": uncompressed MetaImage), and nnU-Net's ``2d`` configuration samples its slices;
  so stage 1 keeps the input geometry exactly and its predictions need no pasting back.
* **Stage-2 crop** (Sec. 2, 3): the 3D bounding box of the reference liver (labels 1 and 2),
  padded in-plane by ``pad`` px on every side (z: the liver's slices, unpadded: in-plane
  padding is what the paper describes), resized in-plane to ``crop_size`` x ``crop_size``
  (independently along x and y, as "resize them into 256 x 256" does).  ``crop_size``
  defaults to the paper's 256 (:data:`CROP_SIZE`); a smaller one (``--crop-size 128``) is a
  CPU budget choice, not the paper's: a 128 px crop has a quarter of the pixels, so about a
  quarter of the network's compute per slice, at half the in-plane resolution (what lets
  an equal-budget Table 3 run on two CPU cores).  It must be a multiple of
  :data:`CROP_DIVISOR` = 32, the R2UNet/E²Net input divisor (five stride-2 stages,
  :data:`nnunet_ulseg.networks.r2unet.SIZE_DIVISOR`), so that nnU-Net's 2d patch is the whole
  crop.  The size is recorded per case (``crop_size`` in ``lits_cases.csv``) and in the
  stage-2 ``dataset.json`` (``crop_size``), which ``ulseg liver-tumour`` reads to cut test
  volumes the same way.  Training (and validation) cases get a
  random pad of 10-60 px, drawn once per case from ``default_rng([seed, N])`` and recorded;
  test cases get the fixed :data:`TEST_PAD` = 35 px, the middle of the training range, so a
  test crop looks like an average training crop.  Outside the volume the crop is -1024 HU
  (air) and label 0.  Images are resized linearly, labels by nearest neighbour
  (pixel-centre aligned, :func:`resize_nearest`).  The crop is written with a nominal
  1 x 1 mm in-plane spacing (the slice interval is kept), like DeepLesion's crops (DESIGN
  "Crops"), so nnU-Net's 2d configuration does not resample it again; the true geometry
  is in ``lits_cases.csv``, which :func:`paste_back` uses to put a crop label back into
  the volume's voxel grid.
* **Stage-1 labels** are 0/1 (tumour merged into liver), declared in region form
  ``"labels": {"background": 0, "liver": [1, 2]}, "regions_class_order": [1]`` so the
  stage-1 network has one sigmoid output for the liver, like stage 2's liver channel
  (:data:`nnunet_ulseg.training.e2net.STAGE1_LABELS`).
* **Stage-2 labels are regions** (E²Net segments the liver including its tumours, and the
  tumours): ``"labels": {"background": 0, "liver": [1, 2], "tumour": 2},
  "regions_class_order": [1, 2]``, nnU-Net's region-based training (sigmoid outputs, each
  region its own channel; label 2 written over label 1 at export).  nnU-Net 2.8's
  ``LabelManager`` accepts a scalar among list regions (``_get_regions``).
* **Intensities** (``normalisation``): ``window`` (default) is the paper's: HU truncated
  to [-100, 240] and mapped linearly to [-1, 1] (Sec. 3, "Datasets"), written as float32
  with channel name ``noNorm`` so nnU-Net leaves the values alone (its
  ``NoNormalization``); ``ct`` writes int16 HU with channel name ``CT``, nnU-Net's CT
  normalisation (foreground percentile clipping + z-score from the dataset fingerprint).
  ``window`` is the default because the paper is the spec; ``ct`` is there to measure
  against it.
* **Split**: LiTS has one volume per patient, so cases are split directly: ``test_fraction``
  of the cases (shuffled with ``seed``) go to ``imagesTs``, ``val_fraction`` to fold 0's
  ``val``, the rest to ``train`` (the paper: 111 train / 20 validation of the 131 LiTS
  training scans).  The split is drawn over every case found, before any is read, so a
  bad case does not move the others.  ``splits_final.json`` goes into each raw folder and,
  when ``$nnUNet_preprocessed`` is set, through :mod:`nnunet_ulseg.nnunet_layout` into
  ``nnUNet_preprocessed/<dataset>/``.

Robustness as the other converters: a bad case (missing partner file, unreadable file,
not 3D, volume and segmentation of different size or geometry, label values other than
0/1/2, no liver) is skipped, logged, counted and written to ``conversion_report.csv``;
``strict`` raises :class:`~.report.ConversionError` on the first one.  Output folders
follow :mod:`.output` (nothing replaced that this converter did not write; ``overwrite``
only replaces an earlier run of convert-lits; an output inside the input is refused).
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_ulseg.nnunet_layout import dataset_folder_name, image_filename

from .output import OutputFolder, check_inputs_outside, create_new_file
from .report import ConversionError, IssueLog
from .splits import make_splits, preprocessed_root_from_env, write_splits

logger = logging.getLogger("nnunet_ulseg.conversion")

CONVERTED_BY = "nnunet_ulseg convert-lits"
FILE_ENDING = ".mha"
#: Stage-2 crop side (px; the paper's 256, Sec. 3) and pads (px): random in [lo, hi] for training cases,
#: fixed for test cases.
CROP_SIZE = 256
#: A crop side must be a multiple of this: R2UNet's/E²Net's input divisor (networks/r2unet.py SIZE_DIVISOR).
CROP_DIVISOR = 32
TRAIN_PAD = (10, 60)
TEST_PAD = 35
#: The paper's HU window (Sec. 3), mapped to [-1, 1].
WINDOW = (-100.0, 240.0)
NORMALISATIONS = {"window": "noNorm", "ct": "CT"}
DEFAULT_NORMALISATION = "window"
#: HU outside the volume in a stage-2 crop.
AIR_HU = -1024.0
CASE_PREFIX = "LiTS_"
STAGE_SUFFIXES = ("Liver", "Tumour")
STAGE1_DIRS = ("imagesTr", "labelsTr", "imagesTs", "referencesTs")
STAGE2_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
OUTPUT_FILES = ("dataset.json", "splits_final.json", "lits_cases.csv", "conversion_report.csv")
SPLIT_VALUES = {"train": 1, "val": 2, "test": 3}

REASONS: dict[str, str] = {
    "missing_segmentation": "volume-N has no segmentation-N",
    "missing_volume": "segmentation-N has no volume-N",
    "duplicate_case": "two files claim the same case number (e.g. .nii and .nii.gz)",
    "unreadable_volume": "the volume cannot be read as an image",
    "unreadable_segmentation": "the segmentation cannot be read as an image",
    "not_3d": "the volume or segmentation is not a 3D single-component image",
    "size_mismatch": "volume and segmentation differ in size",
    "geometry_mismatch": "volume and segmentation differ in spacing, origin or direction",
    "bad_label_values": "the segmentation holds values other than 0, 1, 2",
    "no_liver": "the segmentation has no liver (labels 1 and 2 absent): no stage-2 crop",
    "internal_error": "an unexpected error while converting this case (a bug: please report)",
}

_NAME = re.compile(r"(volume|segmentation)-(\d+)\.nii(\.gz)?", re.IGNORECASE)


# -- crop geometry ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiverBox:
    """The stage-2 crop of one volume, in voxel indices of its ``[z, y, x]`` array (half-open ranges).

    ``z0:z1, y0:y1, x0:x1`` is the liver's bounding box; the crop is ``y0 - pad : y1 + pad``
    by ``x0 - pad : x1 + pad`` (may reach outside the volume), resized to ``size`` x ``size``.
    """

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int
    pad: int
    size: int = CROP_SIZE

    @property
    def crop_y(self) -> tuple[int, int]:
        return self.y0 - self.pad, self.y1 + self.pad

    @property
    def crop_x(self) -> tuple[int, int]:
        return self.x0 - self.pad, self.x1 + self.pad

    @property
    def scale(self) -> tuple[float, float]:
        """Output px per input px along x and y."""
        (ya, yb), (xa, xb) = self.crop_y, self.crop_x
        return self.size / (xb - xa), self.size / (yb - ya)


def check_crop_size(crop_size) -> int:
    """``crop_size`` as an int; ``ValueError`` unless it is a positive multiple of :data:`CROP_DIVISOR` (32).

    The stage-2 network (R2UNet / E²Net, five stride-2 stages) needs height and width
    divisible by 32, and the crop is its whole 2d patch; so a crop of another size would be
    refused, or padded by nnU-Net, only at training time: refused here, before converting.
    """
    try:
        size = int(crop_size)
    except (TypeError, ValueError):
        raise ValueError(f"crop size must be a whole number of px, got {crop_size!r}") from None
    if size != crop_size or size <= 0 or size % CROP_DIVISOR:
        raise ValueError(f"crop size must be a positive multiple of {CROP_DIVISOR} px (the E2Net/R2UNet input "
                         f"divisor), got {crop_size!r}; e.g. {CROP_SIZE} (the paper's) or 128")
    return size


def liver_box(liver: np.ndarray, pad: int, size: int = CROP_SIZE) -> LiverBox:
    """The bounding box of ``liver`` (a ``[z, y, x]`` mask) with ``pad``; ``ValueError`` when it is empty."""
    if not liver.any():
        raise ValueError("no liver voxel: the crop box is undefined")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    ranges = []
    for axis in range(3):
        hit = np.flatnonzero(liver.any(axis=tuple(a for a in range(3) if a != axis)))
        ranges += [int(hit[0]), int(hit[-1]) + 1]
    return LiverBox(*ranges, pad=int(pad), size=int(size))


def _cut(volume: np.ndarray, box: LiverBox, fill: float) -> np.ndarray:
    """The padded crop region ``[z0:z1, crop_y, crop_x]`` of ``volume``, ``fill`` outside it."""
    (ya, yb), (xa, xb) = box.crop_y, box.crop_x
    out = np.full((box.z1 - box.z0, yb - ya, xb - xa), fill, dtype=volume.dtype)
    _, h, w = volume.shape
    sy, sx = slice(max(ya, 0), min(yb, h)), slice(max(xa, 0), min(xb, w))
    out[:, sy.start - ya:sy.stop - ya, sx.start - xa:sx.stop - xa] = volume[box.z0:box.z1, sy, sx]
    return out


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels resampled from ``n_in``: pixel centres aligned.

    Output pixel ``i`` covers ``[i, i + 1) * n_in / n_out`` of the input; its centre falls in
    input pixel ``floor((i + 0.5) * n_in / n_out)``.  (OpenCV's ``INTER_NEAREST`` uses
    ``floor(i * n_in / n_out)``, shifted by half a pixel.)
    """
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_nearest(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour in-plane resize of a ``[z, y, x]`` stack (labels)."""
    iy = nearest_index(height, stack.shape[1])
    ix = nearest_index(width, stack.shape[2])
    return stack[:, iy[:, None], ix[None, :]]


def resize_linear(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear in-plane resize (pixel-centre aligned, OpenCV) of a ``[z, y, x]`` stack, float32."""
    import cv2

    out = np.empty((stack.shape[0], height, width), dtype=np.float32)
    for k, plane in enumerate(stack.astype(np.float32, copy=False)):
        out[k] = cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def crop_image(hu: np.ndarray, box: LiverBox) -> np.ndarray:
    """The stage-2 image crop of an HU volume (float32 HU, ``[z1 - z0, size, size]``)."""
    return resize_linear(_cut(hu.astype(np.float32, copy=False), box, AIR_HU), box.size, box.size)


def crop_label(label: np.ndarray, box: LiverBox) -> np.ndarray:
    """The stage-2 label crop (nearest neighbour), ``[z1 - z0, size, size]``, dtype kept."""
    return resize_nearest(_cut(label, box, 0), box.size, box.size)


def paste_back(crop: np.ndarray, box: LiverBox, shape: tuple[int, int, int]) -> np.ndarray:
    """A stage-2 crop label put back into a zero volume of ``shape`` (``[z, y, x]``), nearest neighbour.

    The inverse of :func:`crop_label`: the crop is resized to the padded box's size, and the
    part of the box inside the volume is written at its place; everything else is 0.  It
    restores the label exactly when the box is ``size`` px wide and high (no resizing), and
    up to a pixel along the label's edges otherwise.
    """
    if crop.shape != (box.z1 - box.z0, box.size, box.size):
        raise ValueError(f"crop of shape {crop.shape} does not match its box ({box.z1 - box.z0}, {box.size}, "
                         f"{box.size})")
    (ya, yb), (xa, xb) = box.crop_y, box.crop_x
    region = resize_nearest(crop, yb - ya, xb - xa)
    out = np.zeros(shape, dtype=crop.dtype)
    _, h, w = shape
    sy, sx = slice(max(ya, 0), min(yb, h)), slice(max(xa, 0), min(xb, w))
    out[box.z0:box.z1, sy, sx] = region[:, sy.start - ya:sy.stop - ya, sx.start - xa:sx.stop - xa]
    return out


def normalise(hu: np.ndarray, normalisation: str) -> np.ndarray:
    """``window``: ``clip(HU, -100, 240)`` mapped linearly to [-1, 1] (float32); ``ct``: int16 HU, rounded."""
    if normalisation == "window":
        lo, hi = WINDOW
        return ((np.clip(hu.astype(np.float32, copy=False), lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)) \
            .astype(np.float32)
    if normalisation == "ct":
        return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    raise ValueError(f"normalisation must be one of {sorted(NORMALISATIONS)}, got {normalisation!r}")


# -- the sidecar -----------------------------------------------------------------------------------------------------
@dataclass
class CaseRow:
    """One converted case in ``lits_cases.csv``: where it came from, its split and geometry, its crop."""

    case: str
    number: int
    volume: str
    segmentation: str
    split: str
    size_x: int
    size_y: int
    size_z: int
    spacing_x: float
    spacing_y: float
    spacing_z: float
    origin_x: float
    origin_y: float
    origin_z: float
    direction: str  # 9 numbers, space-separated (SimpleITK's row-major order)
    liver_voxels: int
    tumour_voxels: int
    box_z0: int
    box_z1: int
    box_y0: int
    box_y1: int
    box_x0: int
    box_x1: int
    pad: int
    crop_size: int
    scale_x: float
    scale_y: float
    normalisation: str

    @property
    def box(self) -> LiverBox:
        return LiverBox(self.box_z0, self.box_z1, self.box_y0, self.box_y1, self.box_x0, self.box_x1, self.pad,
                        self.crop_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volume's ``[z, y, x]`` array shape."""
        return self.size_z, self.size_y, self.size_x


CASE_COLUMNS = tuple(f.name for f in dataclasses.fields(CaseRow))


def write_cases(path: str | os.PathLike, rows: list[CaseRow]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CASE_COLUMNS)
        for r in rows:
            w.writerow([repr(v) if isinstance(v, float) else v for v in dataclasses.astuple(r)])


def read_cases(path: str | os.PathLike) -> dict[str, CaseRow]:
    """``lits_cases.csv`` as case id -> :class:`CaseRow`; a ``ValueError`` naming the file and line if malformed."""
    types = {f.name: f.type for f in dataclasses.fields(CaseRow)}
    out = {}
    with open(path, newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            try:
                values = {c: (int(r[c]) if types[c] == "int" else float(r[c]) if types[c] == "float" else r[c])
                          for c in CASE_COLUMNS}
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path} line {line}: not a lits_cases.csv row ({e})") from None
            out[values["case"]] = CaseRow(**values)
    return out


# -- one case --------------------------------------------------------------------------------------------------------
class CaseError(ValueError):
    def __init__(self, reason: str, detail: str, file: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.file = reason, detail, file


@dataclass(frozen=True)
class CaseIssue:
    """One skipped case (``reason`` from :data:`REASONS`); ``message`` is what the log and strict mode say."""

    number: int
    case: str
    file: str
    reason: str
    detail: str

    def message(self) -> str:
        return f"LiTS case {self.number} ({self.file}): {self.reason}: {self.detail}"


@dataclass(frozen=True)
class CaseTask:
    number: int
    case: str
    volume: str
    segmentation: str
    split: str
    pad: int
    normalisation: str
    out1: str
    out2: str
    crop_size: int = CROP_SIZE


def case_id(number: int) -> str:
    return f"{CASE_PREFIX}{number:04d}"


def output_files(task_or_row, out1: str | os.PathLike, out2: str | os.PathLike) -> list[str]:
    """Every file a case writes in the two datasets (for the output manifests)."""
    case, test = task_or_row.case, task_or_row.split == "test"
    images = "imagesTs" if test else "imagesTr"
    first = [os.path.join(out1, images, image_filename(case, FILE_ENDING)),
             os.path.join(out1, "referencesTs" if test else "labelsTr", case + FILE_ENDING)]
    second = [os.path.join(out2, images, image_filename(case, FILE_ENDING)),
              os.path.join(out2, "labelsTs" if test else "labelsTr", case + FILE_ENDING)]
    return first + second


def _read(path: str, what: str):
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise CaseError(f"unreadable_{what}", str(e).strip().splitlines()[-1][:200], path) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError("not_3d", f"{what} has {image.GetDimension()} dimensions and "
                                  f"{image.GetNumberOfComponentsPerPixel()} components", path)
    return image


def _check_geometry(vol, seg, task: CaseTask) -> None:
    if vol.GetSize() != seg.GetSize():
        raise CaseError("size_mismatch", f"volume {vol.GetSize()} vs segmentation {seg.GetSize()}", task.segmentation)
    sp_v, sp_s = np.array(vol.GetSpacing()), np.array(seg.GetSpacing())
    bad = []
    if not np.allclose(sp_v, sp_s, rtol=1e-4, atol=1e-6):
        bad.append(f"spacing {tuple(sp_v)} vs {tuple(sp_s)}")
    # origins agree to a hundredth of a voxel (headers rewritten by other tools round them)
    if not np.allclose(vol.GetOrigin(), seg.GetOrigin(), rtol=0, atol=0.01 * float(sp_v.min())):
        bad.append(f"origin {vol.GetOrigin()} vs {seg.GetOrigin()}")
    if not np.allclose(vol.GetDirection(), seg.GetDirection(), atol=1e-4):
        bad.append("direction differs")
    if bad:
        raise CaseError("geometry_mismatch", "; ".join(bad), task.segmentation)


def _label_values(array: np.ndarray, path: str) -> np.ndarray:
    values = np.unique(array)
    if not (np.all(np.isfinite(values)) and np.all(values == np.round(values)) and set(values.tolist()) <= {0, 1, 2}):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise CaseError("bad_label_values", f"values {shown}; LiTS labels are 0 background, 1 liver, 2 tumour", path)
    return array.astype(np.uint8)


def _write(path: str, array: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(direction))
    sitk.WriteImage(image, create_new_file(path), useCompression=False)


def convert_case(task: CaseTask) -> tuple[CaseRow | None, CaseIssue | None]:
    """Read, check and write one case into both datasets; a bad case becomes a :class:`CaseIssue`.

    Everything is read and checked before the first file is written, so a skipped case
    leaves no file behind.
    """
    import SimpleITK as sitk

    try:
        vol, seg = _read(task.volume, "volume"), _read(task.segmentation, "segmentation")
        _check_geometry(vol, seg, task)
        hu = sitk.GetArrayFromImage(vol)
        label = _label_values(sitk.GetArrayFromImage(seg), task.segmentation)
        liver = label > 0
        if not liver.any():
            raise CaseError("no_liver", "the segmentation is all background", task.segmentation)
        box = liver_box(liver, task.pad, task.crop_size)
        test = task.split == "test"
        img1, lab1, img2, lab2 = output_files(task, task.out1, task.out2)
        image1 = normalise(hu, task.normalisation)
        image2 = normalise(crop_image(hu, box), task.normalisation)
        label2 = crop_label(label, box)
        geometry = dict(spacing=vol.GetSpacing(), origin=vol.GetOrigin(), direction=vol.GetDirection())
        _write(img1, image1, **geometry)
        _write(lab1, label if test else liver.astype(np.uint8), **geometry)
        nominal = (1.0, 1.0, float(vol.GetSpacing()[2]))
        _write(img2, image2, nominal)
        _write(lab2, label2, nominal)
        sx, sy, sz = vol.GetSize()
        scale_x, scale_y = box.scale
        row = CaseRow(task.case, task.number, task.volume, task.segmentation, task.split, sx, sy, sz,
                      *map(float, vol.GetSpacing()), *map(float, vol.GetOrigin()),
                      " ".join(f"{d:.9g}" for d in vol.GetDirection()), int(liver.sum()),
                      int((label == 2).sum()), box.z0, box.z1, box.y0, box.y1, box.x0, box.x1, box.pad, box.size,
                      scale_x, scale_y, task.normalisation)
        return row, None
    except CaseError as e:
        return None, CaseIssue(task.number, task.case, e.file or task.volume, e.reason, e.detail)
    except Exception as e:  # one bad case never takes the run down
        return None, CaseIssue(task.number, task.case, task.volume, "internal_error", f"{type(e).__name__}: {e}")


# -- the whole folder ------------------------------------------------------------------------------------------------
def find_cases(lits_dir: Path) -> dict[int, dict[str, list[Path]]]:
    """Case number -> {"volume": [...], "segmentation": [...]} of the LiTS files under ``lits_dir``."""
    found: dict[int, dict[str, list[Path]]] = {}
    for p in sorted(lits_dir.rglob("*")):
        m = _NAME.fullmatch(p.name)
        if m and p.is_file():
            found.setdefault(int(m.group(2)), {"volume": [], "segmentation": []})[m.group(1).lower()].append(p)
    return found


def assign_splits(numbers: list[int], val_fraction: float, test_fraction: float, seed: int) -> dict[int, str]:
    """Case number -> ``train``/``val``/``test``: shuffled with ``seed``; test first, then val (>= 1 when
    two or more cases remain for training), the rest train."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    order = [numbers[i] for i in np.random.default_rng(seed).permutation(len(numbers))]
    n = len(order)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n_val == 0 and val_fraction > 0 and n - n_test >= 2:
        n_val = 1
    splits = {}
    for i, number in enumerate(order):
        splits[number] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


@dataclass
class LitsResult:
    """What :func:`convert_lits` did: the two dataset folders, converted rows, skipped cases."""

    out1: Path
    out2: Path
    rows: list[CaseRow]
    issues: list[CaseIssue]
    n_cases: int = 0
    seconds: float = 0.0
    normalisation: str = DEFAULT_NORMALISATION
    converted: dict[str, int] = field(default_factory=dict)
    crop_size: int = CROP_SIZE

    @property
    def out_dir(self) -> Path:  # conversion.cli.exit_status names the report in this folder
        return self.out1

    @property
    def skipped(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for i in self.issues:
            counts[i.reason] = counts.get(i.reason, 0) + 1
        return counts

    def summary(self) -> str:
        c = {s: sum(r.split == s for r in self.rows) for s in SPLIT_VALUES}
        lines = [f"LiTS -> {self.out1} (stage 1) and {self.out2} (stage 2); {self.n_cases} cases, "
                 f"{self.seconds:.1f} s, normalisation {self.normalisation}, stage-2 crops {self.crop_size} px",
                 f"converted {len(self.rows)} cases: " + ", ".join(f"{k} {v}" for k, v in c.items()),
                 f"skipped {len(self.issues)} cases" + (":" if self.issues else "")]
        lines += [f"  {k}: {v}" for k, v in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "\n".join(lines)


def _write_report(path: Path, rows: list[CaseRow], issues: list[CaseIssue]) -> None:
    """``conversion_report.csv``: one row per case found, ``converted`` or ``skipped`` with its reason."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("number", "case", "status", "reason", "detail", "file"))
        done = {r.number: r for r in rows}
        bad = {i.number: i for i in issues}
        for n in sorted(set(done) | set(bad)):
            if n in done:
                w.writerow((n, done[n].case, "converted", "", "", done[n].volume))
            else:
                i = bad[n]
                w.writerow((n, i.case, "skipped", i.reason, i.detail, i.file))


def _dataset_json(out: Path, name: str, stage: int, n_train: int, n_test: int, normalisation: str, lits_dir: Path,
                  partner: str, seed: int, train_pad: tuple[int, int], test_pad: int,
                  crop_size: int = CROP_SIZE) -> None:
    """Write ``out/dataset.json`` of dataset ``name`` (stage 1 or 2); stage 2 records ``crop_size``."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    common = dict(channel_names={"0": NORMALISATIONS[normalisation]}, num_training_cases=n_train,
                  file_ending=FILE_ENDING, reference="https://competitions.codalab.org/competitions/17094",
                  license="the LiTS data terms", converted_by=CONVERTED_BY, source="LiTS", source_dir=str(lits_dir),
                  normalisation=normalisation, window_hu=list(WINDOW) if normalisation == "window" else None,
                  numTest=n_test, stage=stage, partner_dataset=partner, sidecar="lits_cases.csv", seed=seed)
    if stage == 1:
        # region form (liver = {1, 2}, one sigmoid output), what nnUNetTrainerR2UNetLiver trains
        # (nnunet_ulseg.training.e2net.STAGE1_LABELS); the label files are 0/1, so the region is label 1
        generate_dataset_json(str(out), labels={"background": 0, "liver": [1, 2]}, regions_class_order=(1,),
                              dataset_name=name,
                              description="E2Net stage 1 (coarse liver): LiTS volumes, tumour merged into liver; "
                                          "train slice by slice with the 2d configuration (nnunet_ulseg)",
                              references_test="referencesTs", **common)
    else:
        generate_dataset_json(str(out), labels={"background": 0, "liver": [1, 2], "tumour": 2},
                              regions_class_order=(1, 2), dataset_name=name,
                              description=f"E2Net stage 2 (liver and tumour): the liver's bounding box, padded "
                                          f"{train_pad[0]}-{train_pad[1]} px (train) / {test_pad} px (test), "
                                          f"resized in-plane to {crop_size}x{crop_size} (nnunet_ulseg)",
                              crop_size=int(crop_size), train_pad=list(train_pad), test_pad=test_pad,
                              labels_test="labelsTs", nominal_spacing=True, **common)


def stage_folders(raw_root: str | os.PathLike, dataset_id: int, name: str = "LiTS",
                  stage2_id: int | None = None) -> tuple[Path, Path]:
    """``raw_root/Dataset<id>_<name>Liver`` and ``raw_root/Dataset<id2>_<name>Tumour`` (id2 defaults to id + 1)."""
    stage2_id = dataset_id + 1 if stage2_id is None else stage2_id
    if stage2_id == dataset_id:
        raise ValueError(f"the two stages need different dataset ids, got {dataset_id} twice")
    root = Path(raw_root)
    return (root / dataset_folder_name(dataset_id, name + STAGE_SUFFIXES[0]),
            root / dataset_folder_name(stage2_id, name + STAGE_SUFFIXES[1]))


def convert_lits(lits_dir: str | os.PathLike, out1: str | os.PathLike, out2: str | os.PathLike,
                 normalisation: str = DEFAULT_NORMALISATION, val_fraction: float = 0.15, test_fraction: float = 0.2,
                 seed: int = 0, strict: bool = False, overwrite: bool = False, num_processes: int = 1,
                 progress: bool = True, train_pad: tuple[int, int] = TRAIN_PAD, test_pad: int = TEST_PAD,
                 crop_size: int = CROP_SIZE) -> LitsResult:
    """Convert the LiTS folder ``lits_dir`` into the stage-1 dataset ``out1`` and the stage-2 dataset ``out2``.

    See the module docstring for what is written and why.  ``num_processes`` > 1 converts
    cases in worker processes.  ``train_pad`` (lo, hi) and ``test_pad`` are the stage-2 pads in
    px; the defaults are the paper's (for 512 x 512 slices); a smaller sample may want smaller ones.
    ``crop_size`` is the stage-2 crop side in px (a multiple of 32, checked by
    :func:`check_crop_size` before anything is read or written); the default 256 is the
    paper's, a smaller one is a CPU budget choice (see the module docstring).
    """
    crop_size = check_crop_size(crop_size)
    lo, hi = (int(v) for v in train_pad)
    if not 0 <= lo <= hi or int(test_pad) < 0:
        raise ValueError(f"pads must be 0 <= lo <= hi and test_pad >= 0, got {train_pad} and {test_pad}")
    t0 = time.perf_counter()
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {sorted(NORMALISATIONS)}, got {normalisation!r}")
    src = Path(lits_dir).resolve()
    out1, out2 = Path(out1).resolve(), Path(out2).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"LiTS folder {src} does not exist")
    if out1 == out2:
        raise ValueError(f"the two stages need different output folders, got {out1} twice")
    folders = []
    for out, dirs in ((out1, STAGE1_DIRS), (out2, STAGE2_DIRS)):
        check_inputs_outside(out, {"LiTS": src}, dirs)
        folder = OutputFolder(out, CONVERTED_BY, dirs, OUTPUT_FILES)
        folder.check(overwrite)
        folders.append(folder)
    found = find_cases(src)
    if not found:
        raise ConversionError(f"{src} holds no LiTS files (volume-N.nii / segmentation-N.nii, .nii.gz)")
    splits = assign_splits(sorted(found), val_fraction, test_fraction, seed)

    log = IssueLog(strict)
    issues: list[CaseIssue] = []
    tasks: dict[int, CaseTask] = {}
    for number in sorted(found):
        files = found[number]
        problem = None
        if len(files["volume"]) > 1 or len(files["segmentation"]) > 1:
            problem = ("duplicate_case", ", ".join(str(p) for p in files["volume"] + files["segmentation"]))
        elif not files["segmentation"]:
            problem = ("missing_segmentation", f"no segmentation-{number}.nii(.gz) next to {files['volume'][0]}")
        elif not files["volume"]:
            problem = ("missing_volume", f"no volume-{number}.nii(.gz) next to {files['segmentation'][0]}")
        if problem:
            first = (files["volume"] + files["segmentation"])[0]
            issue = CaseIssue(number, case_id(number), str(first), *problem)
            log.add(issue)
            issues.append(issue)
            continue
        split = splits[number]
        pad = int(test_pad) if split == "test" else int(np.random.default_rng([seed, number]).integers(lo, hi + 1))
        tasks[number] = CaseTask(number, case_id(number), str(files["volume"][0]), str(files["segmentation"][0]),
                                 split, pad, normalisation, str(out1), str(out2), crop_size)

    if overwrite:
        for folder in folders:
            folder.clear()
    planned = [f for t in tasks.values() for f in output_files(t, out1, out2)]
    folders[0].start([f for f in planned if Path(f).is_relative_to(out1)])
    folders[1].start([f for f in planned if Path(f).is_relative_to(out2)])

    from tqdm import tqdm

    from .deeplesion import task_results

    rows: list[CaseRow] = []
    with task_results(convert_case, list(tasks.values()), int(num_processes or 1), chunksize=1) as done, \
            tqdm(total=len(tasks), unit="case", desc="convert LiTS", disable=not progress) as bar:
        for row, issue in done:
            if issue is not None:
                log.add(issue)
                issues.append(issue)
            else:
                rows.append(row)
            bar.update(1)
    rows.sort(key=lambda r: r.number)
    issues.sort(key=lambda i: i.number)

    n_test = sum(r.split == "test" for r in rows)
    split_pairs = [(r.case, SPLIT_VALUES[r.split]) for r in rows]
    if rows and not any(r.split == "val" for r in rows):
        logger.warning("no validation cases: nnU-Net's fold 0 needs a non-empty 'val' list in splits_final.json")
    for folder, out, partner, stage in ((folders[0], out1, out2, 1), (folders[1], out2, out1, 2)):
        write_cases(folder.new_file("lits_cases.csv"), rows)
        _write_report(folder.new_file("conversion_report.csv"), rows, issues)
        folder.new_file("splits_final.json")
        write_splits(make_splits(split_pairs), out, preprocessed_root_from_env(), overwrite=overwrite)
        folder.write_new("dataset.json", lambda tmp, out=out, partner=partner, stage=stage: _dataset_json(
            tmp, out.name, stage, len(rows) - n_test, n_test, normalisation, src, partner.name, seed, (lo, hi),
            int(test_pad), crop_size))
        written = [f for r in rows for f in output_files(r, out1, out2) if Path(f).is_relative_to(out)]
        folder.finish(written)
    result = LitsResult(out1, out2, rows, issues, len(found), normalisation=normalisation, crop_size=crop_size)
    result.seconds = time.perf_counter() - t0
    if progress:
        print(result.summary(), file=sys.stdout, flush=True)
    else:
        logger.info("%s", result.summary())
    return result


__all__ = ["convert_lits", "LitsResult", "LiverBox", "liver_box", "crop_image", "crop_label", "paste_back",
           "normalise", "read_cases", "write_cases", "CaseRow", "stage_folders", "assign_splits", "REASONS",
           "resize_nearest", "nearest_index", "check_crop_size", "CROP_SIZE", "CROP_DIVISOR", "TRAIN_PAD",
           "TEST_PAD", "WINDOW"]
