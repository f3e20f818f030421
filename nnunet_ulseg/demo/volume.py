"""``ulseg sample-volumes``: a generated sample's series as CT volumes, with marks and true masks (issue 15 item 6).

``ulseg segment`` reads CT volumes; ``ulseg make-sample`` writes DeepLesion's PNG slices.
This module stacks each sub-volume of the sample (one ``DL_info.csv`` ``Slice_range`` of
one series folder) into a NIfTI volume and writes, into ``OUT_DIR``:

* ``<name>.nii.gz``: int16 HU (PNG value - 32768, CONVENTIONS.md), spacing
  ``Spacing_mm_px_`` of the rows (x, y, slice interval), identity direction, origin 0;
  ``name`` is the series folder and the first slice number (``000001_01_01_103``);
* ``<name>_truth.nii.gz``: the true 3D lesion masks (:class:`~.truth3d.TrueMasks3D`),
  lesion ``n`` (the ``n``-th mark of the volume in ``manifest.csv`` order) with label
  ``n``, as ``ulseg segment`` numbers its lesions, so the two label volumes compare
  label by label;
* ``manifest.csv``: one row per lesion in the ``ulseg segment --manifest`` format
  (:mod:`nnunet_ulseg.segment.scan`): ``ct, name, lesion_id, recist, slice, space``.
  ``lesion_id`` is ``dl<N>`` for ``DL_info.csv`` line ``N`` (stable across time points);
  ``recist`` the 8 numbers of the mark as 0-based voxel indices (DeepLesion's 1-based
  coordinates minus 1, :meth:`~nnunet_ulseg.recist.Recist.from_deeplesion`); ``slice`` the
  key slice's 0-based index in the volume.

``shrink`` makes a *follow-up* of the same patients, for ``ulseg response``: every lesion
shrunk by the factor about its RECIST centre (the mean of the four endpoints; in-plane, and in depth about the key
slice), the voxels it leaves filled with the median HU of a 3-pixel ring of tissue just
outside the lesion on that slice (a plain fill: the demo's tissue is close to uniform
around a lesion), and the marks scaled by the same factor.  A factor of 0.6 is a 40 %
decrease of every diameter, a RECIST 1.1 partial response.  The true masks of a
follow-up are the shrunk masks.  Choice: the lesion is scaled with nearest-neighbour
sampling of its own mask (not eroded), so its shape is kept and its diameters scale by
the factor up to a pixel.

Floor 2: only the sample's files, SimpleITK, OpenCV and numpy; no ``segment`` import.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("ct", "name", "lesion_id", "recist", "slice", "space")
RING_PX = 3


@dataclass
class SampleSeries:
    """One sub-volume of a sample: series folder, 1-based slice range, spacing, its DL_info lines."""

    folder: str
    lo: int
    hi: int
    spacing: tuple[float, float, float]
    lines: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.folder}_{self.lo:03d}"


def sample_series(rows: list[dict]) -> list[SampleSeries]:
    """The sub-volumes of ``DL_info.csv`` rows (file order), each with the lines of its key slices."""
    from nnunet_ulseg.recist import parse_numbers

    found: dict[tuple[str, int, int], SampleSeries] = {}
    for line, r in enumerate(rows, start=2):
        lo, hi = (int(v) for v in parse_numbers(r["Slice_range"], 2, f"DL_info.csv line {line} Slice_range"))
        spacing = tuple(float(v) for v in parse_numbers(r["Spacing_mm_px_"], 3, f"DL_info.csv line {line} spacing"))
        folder = r["File_name"].rsplit("_", 1)[0]
        s = found.setdefault((folder, lo, hi), SampleSeries(folder, lo, hi, spacing))
        if not lo <= int(r["Key_slice_index"]) <= hi:
            raise ValueError(f"DL_info.csv line {line}: key slice {r['Key_slice_index']} outside {lo}-{hi}")
        s.lines.append(line)
    return list(found.values())


def _read_png_stack(sample: Path, s: SampleSeries) -> np.ndarray:
    import cv2

    slices = []
    for i in range(s.lo, s.hi + 1):
        path = sample / "Images_png" / s.folder / f"{i:03d}.png"
        png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if png is None:
            raise FileNotFoundError(f"cannot read {path}")
        slices.append(png.astype(np.int32) - 32768)
    return np.stack(slices)


def shrink_mask(mask: np.ndarray, centre_xy: tuple[float, float], key: int, factor: float) -> np.ndarray:
    """``mask[k, y, x]`` scaled by ``factor`` about ``(centre_xy, key)`` (nearest neighbour; module docstring)."""
    import cv2

    out = np.zeros_like(mask, dtype=bool)
    cx, cy = centre_xy
    # the affine takes a source point p to centre + factor * (p - centre)
    forward = np.array([[factor, 0.0, cx * (1 - factor)], [0.0, factor, cy * (1 - factor)]])
    h, w = mask.shape[1:]
    for k in range(mask.shape[0]):
        src = key + (k - key) / factor
        ks = int(round(src))
        if not 0 <= ks < mask.shape[0] or not mask[ks].any():
            continue
        out[k] = cv2.warpAffine(mask[ks].astype(np.uint8), forward, (w, h), flags=cv2.INTER_NEAREST) > 0
    return out


def _fill_left_voxels(hu: np.ndarray, lesion: np.ndarray, kept: np.ndarray) -> None:
    """Replace ``lesion & ~kept`` voxels by the median HU of a ring just outside ``lesion`` (per slice).

    ``lesion``/``kept``: the union of a volume's lesions before and after shrinking.
    """
    import cv2

    kernel = np.ones((2 * RING_PX + 1, 2 * RING_PX + 1), np.uint8)
    for k in np.flatnonzero((lesion & ~kept).any(axis=(1, 2))):
        ring = (cv2.dilate(lesion[k].astype(np.uint8), kernel) > 0) & ~lesion[k]
        hu[k][lesion[k] & ~kept[k]] = int(np.median(hu[k][ring])) if ring.any() else -1024


def write_sample_volumes(sample_dir: str | os.PathLike, out_dir: str | os.PathLike, shrink: float = 1.0,
                         progress: bool = True) -> Path:
    """Write every sub-volume of ``sample_dir`` as NIfTI + truth + ``manifest.csv`` (module docstring).

    Returns the manifest's path.  ``shrink`` in ``(0, 1]`` makes a follow-up.
    """
    import SimpleITK as sitk
    from tqdm import tqdm

    from nnunet_ulseg.recist import Recist

    from .truth3d import TrueMasks3D

    if not (0 < shrink <= 1 and math.isfinite(shrink)):
        raise ValueError(f"--shrink must be in (0, 1], got {shrink}")
    sample, out = Path(sample_dir), Path(out_dir)
    info = sample / "DL_info.csv"
    if not info.is_file():
        raise FileNotFoundError(f"{info}: no such file (give a folder made by ulseg make-sample)")
    with open(info, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    truth = TrueMasks3D(sample)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for s in tqdm(sample_series(rows), unit="volume", desc="sample-volumes", disable=not progress):
        hu = _read_png_stack(sample, s)
        labels = np.zeros(hu.shape, dtype=np.uint8)
        lesions = []
        before = np.zeros(hu.shape, dtype=bool)
        for line in s.lines:
            r = rows[line - 2]
            recist = Recist.from_deeplesion(r["Measurement_coordinates"])
            key = int(r["Key_slice_index"]) - s.lo
            mask = truth.volume(line, r["File_name"]).mask
            before |= mask
            if shrink != 1.0:
                centre = tuple(float(v) for v in recist.points.mean(axis=0))
                pts = np.asarray(centre) + shrink * (recist.points - np.asarray(centre))
                recist, mask = Recist.from_points(pts), shrink_mask(mask, centre, key, shrink)
            lesions.append((line, recist, key, mask))
        if shrink != 1.0:  # after all lesions, so that one lesion's fill never samples a neighbour's tissue
            _fill_left_voxels(hu, before, np.any([m for *_, m in lesions], axis=0))
        for n, (line, recist, key, mask) in enumerate(lesions, start=1):
            labels[mask & (labels == 0)] = n
            manifest.append({"ct": f"{s.name}.nii.gz", "name": s.name, "lesion_id": f"dl{line}",
                             "recist": ",".join(f"{v:.4f}" for v in recist.points.ravel()), "slice": key,
                             "space": "voxel"})
        for array, suffix in ((hu.astype(np.int16), ""), (labels, "_truth")):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(s.spacing)
            sitk.WriteImage(image, str(out / f"{s.name}{suffix}.nii.gz"), True)
    path = out / MANIFEST
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(manifest)
    return path


def add_sample_volumes_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sample-volumes", help="stack a generated sample's series into NIfTI volumes with a marks manifest",
        description="Write each sub-volume of a ulseg make-sample folder as a NIfTI CT volume (HU, true spacing), "
                    "its true lesion masks as a label volume, and manifest.csv for ulseg segment --manifest. "
                    "--shrink F writes a follow-up with every lesion and mark scaled by F.")
    p.add_argument("-i", dest="sample", required=True, metavar="SAMPLE", help="folder made by ulseg make-sample")
    p.add_argument("-o", dest="out", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument("--shrink", type=float, default=1.0,
                   help="follow-up: scale every lesion and its mark by this factor in (0, 1] (default: 1, baseline)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_sample_volumes)
    return p


def run_sample_volumes(args: argparse.Namespace) -> int:
    path = write_sample_volumes(args.sample, args.out, args.shrink, args.progress)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    print(f"sample-volumes: {len({r['name'] for r in rows})} volumes, {len(rows)} lesions -> {path}")
    return 0
