"""E²Net's two-stage inference on CT volumes: coarse liver -> liver box -> liver and tumour (E²Net Sec. 2, 3).

``ulseg liver-tumour`` (:mod:`.liver_tumour_cli`) runs, for every input CT volume:

1. **stage 1** (Sec. 2, "Coarse Liver Segmentation"): the stage-1 model (``nnUNetTrainerR2UNetLiver``
   by default) on the whole volume, its intensities prepared as ``convert-lits`` prepared the
   stage-1 dataset (:func:`~nnunet_ulseg.conversion.lits.normalise`, the normalisation read from
   the model's ``dataset.json``);
2. **the liver**: the largest 3D connected component of the stage-1 foreground (26-connected, so
   a liver whose outline moves by a pixel between thick slices stays one object).  The paper only
   says the sub-image is cropped "based on the coarse liver segmentation result"; one component
   is kept because a single false-positive blob far from the liver would otherwise stretch the
   box over half the body and shrink the liver in the 256 x 256 crop;
3. **the crop**: that component's bounding box with the converter's test-time pad
   (``test_pad`` from the stage-2 model's ``dataset.json``, 35 px by default), cut and resized
   in-plane to 256 x 256 by the converter's own functions (:func:`~.lits.liver_box`,
   :func:`~.lits.crop_image`), so a test crop is made exactly like the ``imagesTs`` crops;
4. **stage 2**: the stage-2 model (``nnUNetTrainerE2Net``) on the crop, with the converter's
   nominal 1 x 1 mm in-plane spacing (the slice interval kept), its output the region labels
   exported by nnU-Net (0 background, 1 liver, 2 tumour written over the liver);
5. **back into the volume**: the crop's label resized to the padded box by nearest neighbour and
   pasted at its place (:func:`~.lits.paste_back`, the converter's inverse); everything outside
   the box, and every slice outside the liver's z range, is background.  Nearest neighbour on
   labels rather than resampled probabilities: it is the converter's own inverse (so the
   sidecar geometry and this command agree to the pixel), the box is only up- or down-scaled by
   the small factor ``size / (box + 2 pad)``, and nnU-Net's predictor returns labels;
6. a 3D label volume (0/1/2, uint8) with exactly the input's size, spacing, origin and direction
   (:func:`~nnunet_ulseg.segment.volume_io.write_label_volume`), as NIfTI.

Tumour inside the liver: nnU-Net writes the tumour region (label 2) over the liver region, and
the output's liver is {1, 2} (LiTS), so every tumour voxel is a liver voxel by construction;
the tumour is not masked again by the stage-1 liver (stage 2 is the finer liver, Sec. 2), only
by the stage-1 box.  An empty stage-1 liver gives an all-background volume, a warning and a
count (``empty_liver``), never an error: a CT without a liver is a valid input.

Predictor: nnU-Net's ``nnUNetPredictor`` in-process (one per stage, loaded once for all volumes;
:meth:`StageModel.load`), not ``nnUNetv2_predict`` as a subprocess: the crop depends on stage 1's
result, so a subprocess would need each case written twice to disk as nnU-Net images and two
process start-ups with model loading per batch; in-process, nnU-Net still does its own
preprocessing, sliding window, TTA, fold ensembling and resampling back.  ``2d`` models segment
the volume slice by slice and stack the results (Sec. 3: "we segment all 2D slices of the input CT
scan and stack the results").
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_ulseg.nnunet_layout import DATASET_JSON, EXT_TRAINER_VARIABLE, NNUNetPaths, trainers_dir

logger = logging.getLogger("nnunet_ulseg.workflow")

STAGE1_TRAINER = "nnUNetTrainerR2UNetLiver"
STAGE2_TRAINER = "nnUNetTrainerE2Net"
CASES_CSV = "liver_tumour_cases.csv"
CASE_COLUMNS = ("case", "input", "output", "status", "stage1_voxels", "liver_component_voxels", "box_z0", "box_z1",
                "box_y0", "box_y1", "box_x0", "box_x1", "pad", "liver_voxels", "tumour_voxels", "seconds")
#: channel name in dataset.json -> convert-lits normalisation (when dataset.json has no "normalisation").
CHANNEL_NORMALISATION = {"noNorm": "window", "CT": "ct"}
_LITS_VOLUME = re.compile(r"volume-(\d+)\.nii(\.gz)?", re.IGNORECASE)

#: A stage: ``predict(image [z, y, x] float32, spacing (sx, sy, sz)) -> labels [z, y, x]``.
Predict = Callable[[np.ndarray, Sequence[float]], np.ndarray]


class EmptyLiverWarning(UserWarning):
    """Stage 1 found no liver in a volume: its output is all background."""


# -- inputs and names ------------------------------------------------------------------------------------------------
def find_volumes(path: str | os.PathLike) -> list[Path]:
    """The CT volumes of ``-i``: one volume file, or a folder's volume files (not recursive).

    In a folder holding LiTS ``volume-N.nii[.gz]`` files only those are taken (its
    ``segmentation-N`` files are references, not inputs); otherwise every file with a
    SimpleITK volume ending (NIfTI, NRRD, MHA).  A folder without any is an error naming it.
    """
    from nnunet_ulseg.segment.volume_io import VOLUME_ENDINGS

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"-i {p}: no such file or folder")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(VOLUME_ENDINGS))
    lits = [f for f in files if _LITS_VOLUME.fullmatch(f.name)]
    chosen = sorted(lits, key=lambda f: int(_LITS_VOLUME.fullmatch(f.name).group(1))) if lits else files
    if not chosen:
        raise ValueError(f"-i {p}: no volume files in this folder (expected volume-N.nii[.gz] or "
                         f"{', '.join(VOLUME_ENDINGS)})")
    return chosen


def output_name(volume: str | os.PathLike) -> str:
    """The label volume's name: ``volume-N`` -> ``segmentation-N`` (LiTS's pairing), else the input's stem."""
    name = Path(volume).name
    m = _LITS_VOLUME.fullmatch(name)
    if m:
        return f"segmentation-{int(m.group(1))}"
    for ending in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


# -- the geometry of the two stages ----------------------------------------------------------------------------------
def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (empty in, empty out); ties: the first label."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 1:
        return labels == 1
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


@dataclass
class CaseResult:
    """One volume through both stages: its label volume and what happened (a row of :data:`CASES_CSV`)."""

    labels: np.ndarray
    status: str  # "ok" or "empty_liver"
    stage1_voxels: int
    liver_component_voxels: int
    box: object | None  # conversion.lits.LiverBox
    stage1_liver: np.ndarray | None = None  # the largest stage-1 component (bool [z, y, x])

    @property
    def liver_voxels(self) -> int:
        return int((self.labels > 0).sum())

    @property
    def tumour_voxels(self) -> int:
        return int((self.labels == 2).sum())


def two_stage(hu: np.ndarray, spacing: Sequence[float], stage1: Predict, stage2: Predict, pad: int,
              size: int, normalisation1: str, normalisation2: str) -> CaseResult:
    """Both stages on one HU volume ``[z, y, x]`` with SimpleITK ``spacing`` ``(sx, sy, sz)``.

    ``stage1``/``stage2`` predict labels from a prepared image (see :class:`StageModel`); the
    rest (normalisation, largest component, box, crop, paste back) is the module docstring's
    steps 1-5.  The stage-2 crop is given the converter's nominal spacing ``(1, 1, sz)``.
    """
    from nnunet_ulseg.conversion.lits import crop_image, liver_box, normalise, paste_back

    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"expected a 3D volume [z, y, x], got shape {hu.shape}")
    first = np.asarray(stage1(normalise(hu, normalisation1).astype(np.float32), spacing))
    if first.shape != hu.shape:
        raise ValueError(f"stage 1 returned shape {first.shape} for a volume of shape {hu.shape}")
    found = first > 0
    liver = largest_component(found)
    if not liver.any():
        return CaseResult(np.zeros(hu.shape, np.uint8), "empty_liver", int(found.sum()), 0, None, liver)
    box = liver_box(liver, pad, size)
    crop = normalise(crop_image(hu, box), normalisation2).astype(np.float32)
    second = np.asarray(stage2(crop, (1.0, 1.0, float(spacing[2]))))
    if second.shape != crop.shape:
        raise ValueError(f"stage 2 returned shape {second.shape} for a crop of shape {crop.shape}")
    if second.size and (second.min() < 0 or second.max() > 2):
        raise ValueError(f"stage 2 returned labels {np.unique(second)[:8]}; expected 0 background, 1 liver, 2 tumour")
    labels = paste_back(second.astype(np.uint8), box, hu.shape)
    return CaseResult(labels, "ok", int(found.sum()), int(liver.sum()), box, liver)


# -- the models ------------------------------------------------------------------------------------------------------
def model_normalisation(dataset_json: dict, where: str) -> str:
    """The ``convert-lits`` normalisation a model was trained with: dataset.json's ``normalisation``, else its channel."""
    from nnunet_ulseg.conversion.lits import NORMALISATIONS

    value = dataset_json.get("normalisation")
    if value is None:
        channel = str(dataset_json.get("channel_names", {}).get("0", ""))
        value = CHANNEL_NORMALISATION.get(channel)
        if value is None:
            raise ValueError(f"{where}: cannot tell the intensity normalisation: no \"normalisation\" and channel "
                             f"{channel!r} is neither 'noNorm' (window) nor 'CT' (ct); was it made by convert-lits?")
    if value not in NORMALISATIONS:
        raise ValueError(f"{where}: normalisation {value!r} is not one of {sorted(NORMALISATIONS)}")
    return value


def find_model(dataset: str | int, trainer: str, plans: str = "nnUNetPlans", configuration: str = "2d") -> Path:
    """``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``; an error naming it if it is no model."""
    folder = NNUNetPaths.from_environ().model_dir(dataset, trainer, plans, configuration)
    for name in (DATASET_JSON, "plans.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name}; train {trainer} on dataset {dataset} ({configuration}) "
                                    f"first")
    return folder


@dataclass
class StageModel:
    """One stage's trained model in nnU-Net's predictor, and how its images were normalised."""

    folder: Path
    predictor: object
    dataset_json: dict
    normalisation: str

    @classmethod
    def load(cls, folder: str | os.PathLike, folds: Sequence[int | str] | None = None,
             checkpoint: str = "checkpoint_final.pth", device: str | None = None, tta: bool = True) -> "StageModel":
        """Load ``folder``'s ``folds`` (None: every fold present) with our trainers on ``nnUNet_extTrainer``."""
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from nnunet_ulseg.segment.predict import default_device

        folder = Path(folder)
        record = json.loads((folder / DATASET_JSON).read_text(encoding="utf-8"))
        normalisation = model_normalisation(record, str(folder / DATASET_JSON))
        device = device or default_device()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                    perform_everything_on_device=device != "cpu", device=torch.device(device),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        ours = str(trainers_dir())
        before = os.environ.get(EXT_TRAINER_VARIABLE)
        os.environ[EXT_TRAINER_VARIABLE] = os.pathsep.join(
            [ours] + [p for p in (before or "").split(os.pathsep) if p and p != ours])
        try:
            predictor.initialize_from_trained_model_folder(str(folder), None if folds is None else tuple(folds),
                                                           checkpoint_name=checkpoint)
        finally:
            if before is None:
                os.environ.pop(EXT_TRAINER_VARIABLE, None)
            else:
                os.environ[EXT_TRAINER_VARIABLE] = before
        return cls(folder, predictor, record, normalisation)

    def predict(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Labels ``[z, y, x]`` of a prepared image ``[z, y, x]`` with SimpleITK spacing ``(sx, sy, sz)``.

        Given as nnU-Net's ``SimpleITKIO`` reads a 3D file: ``(1, z, y, x)`` and spacing ``[sz, sy, sx]``.
        """
        sx, sy, sz = (float(v) for v in spacing)
        seg = self.predictor.predict_single_npy_array(np.asarray(image, np.float32)[None], {"spacing": [sz, sy, sx]},
                                                      None, None, False)
        return np.asarray(seg)


def stage2_crop_settings(dataset_json: dict, where: str) -> tuple[int, int]:
    """``(test_pad, crop_size)`` of the stage-2 dataset (convert-lits writes both into dataset.json)."""
    from nnunet_ulseg.conversion.lits import CROP_SIZE, TEST_PAD

    pad = int(dataset_json.get("test_pad", TEST_PAD))
    size = int(dataset_json.get("crop_size", CROP_SIZE))
    if "test_pad" not in dataset_json or "crop_size" not in dataset_json:
        logger.warning("%s: no test_pad/crop_size (not made by convert-lits?); using %d px and %d px", where, pad, size)
    return pad, size


# -- the command -----------------------------------------------------------------------------------------------------
@dataclass
class LiverTumourResult:
    """What :func:`run_liver_tumour` wrote: one row per volume, the empty-liver count, the seconds."""

    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    csv_name: str = CASES_CSV

    @property
    def empty_liver(self) -> int:
        return sum(r["status"] == "empty_liver" for r in self.rows)

    def summary(self) -> str:
        return (f"liver-tumour: {len(self.rows)} volumes -> {self.out_dir} ({self.empty_liver} without a stage-1 "
                f"liver: all background), {self.seconds:.1f} s; per case: {self.out_dir / self.csv_name}")


def part_of(volumes: Sequence, num_parts: int = 1, part_id: int = 0) -> list:
    """Volumes ``part_id, part_id + num_parts, ...``: ``nnUNetv2_predict -num_parts -part_id``'s split over machines."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"-part_id must be in 0..{num_parts - 1} and -num_parts >= 1, got {part_id} of {num_parts}")
    return list(volumes)[part_id::num_parts]


def cases_csv_name(num_parts: int = 1, part_id: int = 0) -> str:
    """:data:`CASES_CSV`, or ``liver_tumour_cases_part<I>of<N>.csv`` for one of several parts (no clash)."""
    return CASES_CSV if num_parts == 1 else f"{CASES_CSV[:-4]}_part{part_id}of{num_parts}.csv"


def run_liver_tumour(volumes: Sequence[str | os.PathLike], out_dir: str | os.PathLike, stage1: StageModel,
                     stage2: StageModel, ending: str = ".nii.gz", save_stage1: bool = False,
                     progress: bool = True, csv_name: str = CASES_CSV) -> LiverTumourResult:
    """Segment every volume with both stages; write ``<name><ending>`` and ``csv_name`` into ``out_dir``.

    ``save_stage1`` also writes the largest stage-1 component as ``stage1/<name><ending>`` (0/1),
    to score the first stage alone (Table 3's "1st stage" row).  Rows are written as each case
    finishes, so an interrupted run keeps what it did.
    """
    from tqdm import tqdm

    from nnunet_ulseg.segment.volume_io import label_path, read_volume, write_label_volume

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pad, size = stage2_crop_settings(stage2.dataset_json, str(stage2.folder / DATASET_JSON))
    names = [output_name(v) for v in volumes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"several inputs give the same output name: {', '.join(dupes)}")
    result = LiverTumourResult(out, csv_name=csv_name)
    with open(out / csv_name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CASE_COLUMNS)
        writer.writeheader()
        for path, name in tqdm(list(zip(volumes, names)), desc="liver-tumour", unit="volume", disable=not progress):
            start = time.perf_counter()
            volume = read_volume(path)
            case = two_stage(volume.hu, volume.spacing, stage1.predict, stage2.predict, pad, size,
                             stage1.normalisation, stage2.normalisation)
            target = write_label_volume(case.labels, volume, label_path(out, name, ending))
            if save_stage1:
                write_label_volume(case.stage1_liver.astype(np.uint8), volume, label_path(out / "stage1", name, ending))
            if case.status == "empty_liver":
                warnings.warn(f"{path}: stage 1 found no liver; {target.name} is all background", EmptyLiverWarning,
                              stacklevel=2)
            b = case.box
            row = {"case": name, "input": str(path), "output": str(target), "status": case.status,
                   "stage1_voxels": case.stage1_voxels, "liver_component_voxels": case.liver_component_voxels,
                   "box_z0": b.z0 if b else "", "box_z1": b.z1 if b else "", "box_y0": b.y0 if b else "",
                   "box_y1": b.y1 if b else "", "box_x0": b.x0 if b else "", "box_x1": b.x1 if b else "",
                   "pad": pad if b else "", "liver_voxels": case.liver_voxels, "tumour_voxels": case.tumour_voxels,
                   "seconds": round(time.perf_counter() - start, 3)}
            writer.writerow(row)
            f.flush()
            result.rows.append(row)
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["part_of", "cases_csv_name", "find_volumes", "output_name", "largest_component", "two_stage", "CaseResult", "StageModel", "find_model",
           "model_normalisation", "stage2_crop_settings", "run_liver_tumour", "LiverTumourResult",
           "EmptyLiverWarning", "STAGE1_TRAINER", "STAGE2_TRAINER", "CASES_CSV"]
