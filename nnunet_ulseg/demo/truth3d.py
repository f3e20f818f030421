"""Read a generated sample's true 3D lesion masks back: ``TrueMasks3D(sample_dir).volume(dl_row)``.

The format is written by :func:`nnunet_ulseg.demo.make_sample` and described in
:mod:`nnunet_ulseg.demo.corpus`: an instance map ``Masks_png/<folder>/<slice>.png`` for
every slice of each key slice's sub-volume, and ``masks3d.csv`` listing, per lesion, the
slices where it is present with their pixel counts.  A lesion's stack covers its whole
``Slice_range`` (DL_info.csv), slices where it is absent included, because a 3D score
must also count false positives on slices the lesion does not reach, and the
per-offset Dice curve (WSSS Fig. 4: Dice against the slice distance from the RECIST
slice) needs every offset.

Lesions are addressed like :class:`nnunet_ulseg.evaluation.references.sample.TrueMasks`
does: by ``dl_row``, the DL_info.csv line (header = line 1), optionally checked against
the row's File_name.  Every stack is checked against ``masks3d.csv`` (present slices have
exactly the listed pixel count, the others none of the lesion's instance), so a sample
whose PNGs and CSVs disagree fails loudly, naming the file.  Only csv, numpy and OpenCV
are imported, so floor 3 (evaluation) can use this without the generator.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from nnunet_ulseg.recist import parse_numbers


class TrueVolume(NamedTuple):
    """One lesion's true 3D mask: ``mask[z, y, x]`` (bool) over ``slice_indices`` (1-based,
    ascending, the DL_info Slice_range) and ``spacing_xyz`` (mm, DL_info Spacing_mm_px_;
    z is the slice interval)."""

    mask: np.ndarray
    slice_indices: np.ndarray
    spacing_xyz: tuple[float, float, float]

    @property
    def complete(self) -> bool:
        """Whether the lesion ends inside the stack (absent on its first and last slice).

        ``False`` means it continues beyond the written sub-volume (no CT or truth there).
        """
        return not self.mask[0].any() and not self.mask[-1].any()

    @property
    def volume_mm3(self) -> float:
        """Voxel count times voxel volume (mm³) of the mask inside the stack."""
        sx, sy, sz = self.spacing_xyz
        return float(self.mask.sum()) * sx * sy * sz


def _read_csv(path: Path, hint: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file ({hint})")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class TrueMasks3D:
    """True 3D lesion masks of a ``ulseg make-sample`` folder, looked up by DL_info.csv line."""

    def __init__(self, sample_dir: str | Path):
        self.root = Path(sample_dir)
        self.dl_rows = _read_csv(self.root / "DL_info.csv", "a sample made by ulseg make-sample has one")
        self.rows = _read_csv(self.root / "masks.csv", "a sample made by ulseg make-sample has one")
        rows3d = _read_csv(self.root / "masks3d.csv",
                           "samples made before 3D masks were added have key-slice masks only; make it again")
        if len(self.rows) != len(self.dl_rows):
            raise ValueError(f"{self.root / 'masks.csv'}: {len(self.rows)} rows for {len(self.dl_rows)} DL_info rows")
        self._present: dict[tuple[str, int], dict[int, tuple[int, str]]] = {}
        for line, r in enumerate(rows3d, start=2):
            try:
                key = (r["File_name"], int(r["lesion_instance"]))
                self._present.setdefault(key, {})[int(r["slice_index"])] = (int(r["pixels"]), r["mask_path"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{self.root / 'masks3d.csv'} line {line}: bad row {r} ({exc})") from None
        self._cache: dict[str, np.ndarray] = {}

    def _png(self, path: Path) -> np.ndarray:
        name = path.as_posix()
        if name not in self._cache:
            image = cv2.imread(name, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise FileNotFoundError(f"cannot read true mask {path}")
            if len(self._cache) > 256:  # stacks are read lesion by lesion: keep memory bounded
                self._cache.clear()
            self._cache[name] = image
        return self._cache[name]

    def present_slices(self, dl_row: int) -> list[int]:
        """Slice indices (ascending) where the lesion of DL_info line ``dl_row`` is present."""
        row = self._row(dl_row, None)
        return sorted(self._present.get((row["File_name"], int(row["lesion_instance"])), {}))

    def _row(self, dl_row: int, file_name: str | None) -> dict:
        index = dl_row - 2
        if not 0 <= index < len(self.rows):
            raise ValueError(f"masks.csv has no entry for DL_info.csv line {dl_row}")
        row = self.rows[index]
        if file_name is not None and row["File_name"] != file_name:
            raise ValueError(f"masks.csv line {index + 2} is {row['File_name']}, expected {file_name}")
        return row

    def volume(self, dl_row: int, file_name: str | None = None) -> TrueVolume:
        """The true 3D mask of the lesion on DL_info.csv line ``dl_row`` over its Slice_range.

        Raises ``ValueError`` naming the file when ``masks3d.csv``, ``masks.csv`` and the
        PNGs disagree, ``FileNotFoundError`` for a missing slice map.
        """
        row = self._row(dl_row, file_name)
        info = self.dl_rows[dl_row - 2]
        if info["File_name"] != row["File_name"]:
            raise ValueError(f"DL_info.csv line {dl_row} is {info['File_name']}, masks.csv says {row['File_name']}")
        instance = int(row["lesion_instance"])
        lo, hi = (int(v) for v in parse_numbers(info["Slice_range"], 2, "Slice_range"))
        sx, sy, sz = (float(v) for v in parse_numbers(info["Spacing_mm_px_"], 3, "Spacing_mm_px_"))
        present = self._present.get((row["File_name"], instance), {})
        key = int(info["Key_slice_index"])
        if key not in present:
            raise ValueError(f"{self.root / 'masks3d.csv'}: no row for {row['File_name']} instance {instance} "
                             f"on its key slice {key}")
        if not set(present) <= set(range(lo, hi + 1)):
            raise ValueError(f"{self.root / 'masks3d.csv'}: {row['File_name']} instance {instance} lists slices "
                             f"{sorted(present)} outside its Slice_range {lo}-{hi}")
        folder = (self.root / row["mask_path"]).parent
        slices = []
        for index in range(lo, hi + 1):
            pixels, rel = present.get(index, (0, None))
            path = self.root / rel if rel is not None else folder / f"{index:03d}.png"
            m = self._png(path) == instance
            if int(m.sum()) != pixels:
                raise ValueError(f"{path}: instance {instance} has {int(m.sum())} pixels, masks3d.csv says {pixels}")
            if slices and m.shape != slices[0].shape:
                raise ValueError(f"{path}: shape {m.shape}, other slices of the stack are {slices[0].shape}")
            slices.append(m)
        return TrueVolume(np.stack(slices), np.arange(lo, hi + 1), (sx, sy, sz))
