"""A trained nnU-Net model, loaded in-process, segmenting one crop at a time (issue 15 item 3).

The model folder is ``-m FOLDER`` or ``nnUNet_results/<-d>/<-tr>__<-p>__<-c>`` (the layout of
:mod:`nnunet_ulseg.nnunet_layout`), as ``nnUNetv2_predict`` takes it.  nnU-Net's own
``nnUNetPredictor`` does everything between the crop and the label: its preprocessing
(CT normalisation from the plans), sliding window, mirroring TTA, fold ensembling and the
resampling back.  Our trainers are found through ``nnUNet_extTrainer`` with our trainers
folder first (:func:`~nnunet_ulseg.nnunet_layout.trainers_dir`), as ``refine`` and ``demo``
set it for nnU-Net's commands.

The crop settings come from the model folder's ``dataset.json`` (nnU-Net copies the raw
dataset's there at training time), so the crops are cut as that dataset's were
(:class:`~nnunet_ulseg.conversion.crop.CropSettings`).  Device: ``cuda`` when torch sees a
GPU, else ``cpu`` (nnU-Net's default), or the one asked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ulseg.conversion.crop import CropSettings
from nnunet_ulseg.nnunet_layout import DATASET_JSON, EXT_TRAINER_VARIABLE, NNUNetPaths, trainers_dir


def model_folder(model: str | os.PathLike | None = None, dataset: str | None = None, trainer: str | None = None,
                 plans: str = "nnUNetPlans", configuration: str = "2d") -> Path:
    """The trained model's folder: ``model`` itself, or found from ``-d/-tr/-p/-c`` under ``nnUNet_results``."""
    if model is not None:
        folder = Path(model)
    else:
        if dataset is None or trainer is None:
            raise ValueError("name the model: -m MODEL_FOLDER, or -d DATASET -tr TRAINER (with -p and -c)")
        folder = NNUNetPaths.from_environ().model_dir(dataset, trainer, plans, configuration)
    for name in (DATASET_JSON, "plans.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name}; not a trained nnU-Net model folder")
    return folder


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class SegmentModel:
    """A loaded predictor and the crop settings of the dataset it was trained on."""

    folder: Path
    predictor: object
    settings: CropSettings
    lesion_label: int = 1

    @classmethod
    def load(cls, folder: str | os.PathLike, folds: Sequence[int | str] | None = None,
             checkpoint: str = "checkpoint_final.pth", device: str | None = None, tta: bool = True) -> "SegmentModel":
        """Load ``folder``'s folds (all present ones when ``folds`` is None) on ``device``."""
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        folder = Path(folder)
        record = json.loads((folder / DATASET_JSON).read_text(encoding="utf-8"))
        settings = CropSettings.from_dataset_json(record, str(folder / DATASET_JSON))
        device = device or default_device()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                    perform_everything_on_device=device != "cpu", device=torch.device(device),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        ours = str(trainers_dir())
        before = os.environ.get(EXT_TRAINER_VARIABLE)
        entries = [ours] + [p for p in (before or "").split(os.pathsep) if p and p != ours]
        os.environ[EXT_TRAINER_VARIABLE] = os.pathsep.join(entries)
        try:
            predictor.initialize_from_trained_model_folder(str(folder), None if folds is None else tuple(folds),
                                                           checkpoint_name=checkpoint)
        finally:
            if before is None:
                os.environ.pop(EXT_TRAINER_VARIABLE, None)
            else:
                os.environ[EXT_TRAINER_VARIABLE] = before
        label = int(record.get("labels", {}).get("lesion", 1))
        return cls(folder, predictor, settings, label)

    def predict(self, channels: np.ndarray, spacing_xy: Sequence[float]) -> np.ndarray:
        """Label map ``[size, size]`` of one crop: ``channels`` ``(C, size, size)`` HU, written spacing ``(sx, sy)``.

        The array and spacing are given as nnU-Net's ``SimpleITKIO`` reads a 2D ``.mha``:
        ``(C, 1, y, x)`` and spacing ``(999 * max, sy, sx)``.
        """
        channels = np.asarray(channels, dtype=np.float32)
        if channels.ndim != 3 or channels.shape[0] != self.settings.n_channels:
            raise ValueError(f"expected ({self.settings.n_channels}, H, W) channels, got {channels.shape}")
        sx, sy = float(spacing_xy[0]), float(spacing_xy[1])
        props = {"spacing": [999.0 * max(sx, sy), sy, sx]}
        seg = self.predictor.predict_single_npy_array(channels[:, None], props, None, None, False)
        return np.asarray(seg)[0]
