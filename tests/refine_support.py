"""Shared helpers of the ``ulseg refine`` tests (no tests here): tiny hand-made nnU-Net
datasets and a fake nnU-Net backend that writes the files the real commands would.

Named ``test_refine_*`` so it sits with the module's tests; pytest collects nothing from it.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_ulseg.conversion.sidecar import LesionRow, write_sidecar
from nnunet_ulseg.nnunet_layout import case_from_filename, dataset_folder_name, image_filename

SIZE = 16
LABELS = {"background": 0, "lesion": 1, "ignore": 2}


class Killed(Exception):
    """Stands for the process being killed in the middle of a step."""


def write_image(path, array, dtype=np.uint8):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=dtype))
    image.SetSpacing((0.8, 0.8))
    image.SetOrigin((3.0, -2.0))
    sitk.WriteImage(image, str(path), False)


def read_image(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def disk(cx=8, cy=8, r=4) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def write_tiny_dataset(raw_root, dataset_id=501, name="Tiny", n_patients=6, per_patient=2, n_test=2,
                       sidecar=True) -> Path:
    """A round-1 raw dataset: ``P<p>L<l>`` cases, disk ellipses, 1-fold split, optional lesions.csv."""
    raw = Path(raw_root) / dataset_folder_name(dataset_id, name)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "pseudolabelsTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, train, val = [], [], []
    for p in range(n_patients):
        for l in range(per_patient):
            case = f"P{p}L{l}"
            write_image(raw / "imagesTr" / f"{case}_0000.mha", rng.integers(-100, 100, (SIZE, SIZE)), np.int16)
            write_image(raw / "labelsTr" / f"{case}.mha", disk(8 + l, 8))
            (val if p >= n_patients - 2 else train).append(case)
            rows.append(_row(case, "val" if p >= n_patients - 2 else "train", p, len(rows)))
    for t in range(n_test):
        case = f"T{t}"
        write_image(raw / "imagesTs" / f"{case}_0000.mha", rng.integers(-100, 100, (SIZE, SIZE)), np.int16)
        write_image(raw / "pseudolabelsTs" / f"{case}.mha", disk())
        rows.append(_row(case, "test", 100 + t, len(rows)))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                  "numTraining": len(train) + len(val), "file_ending": ".mha",
                                                  "name": raw.name}))
    (raw / "splits_final.json").write_text(json.dumps([{"train": sorted(train), "val": sorted(val)}]))
    if sidecar:
        write_sidecar(raw / "lesions.csv", rows)
    return raw


def _row(case, split, patient, i) -> LesionRow:
    return LesionRow(case=case, split=split, dl_row=i + 2, File_name=f"{patient:06d}_01_01_001.png", patient=patient,
                     study=1, series=1, key_slice=1, crop_x0=0.0, crop_y0=0.0, crop_side=float(SIZE),
                     crop_size=SIZE, scale=1.0, spacing_x=1.0, spacing_y=1.0, spacing_z=1.0,
                     recist_slice=(0.0,) * 8, recist_crop=(0.0,) * 8, long_mm=1.0, short_mm=1.0, lesion_type=None,
                     possibly_noisy=None, window_min=-1000.0, window_max=1000.0, image_width=SIZE,
                     image_height=SIZE, context_slices=(1,))


def write_checkpoint(path, trainer="nnUNetTrainerFake", configuration="2d", **init_args) -> Path:
    """A small checkpoint with the keys nnU-Net's trainer saves (``save_checkpoint``), written by ``torch.save``.

    ``init_args`` (besides ``configuration``) record what the fake training was asked to do.
    """
    path = Path(path)
    torch.save({"network_weights": {"conv.weight": torch.zeros(2, 1, 3, 3)}, "optimizer_state": {},
                "current_epoch": 1, "init_args": {"configuration": configuration, **init_args},
                "trainer_name": trainer, "inference_allowed_mirroring_axes": (0, 1)}, path)
    return path


def read_checkpoint(path) -> dict:
    """The dictionary of a checkpoint written by :func:`write_checkpoint` (or by nnU-Net)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def truncate(path, keep: float = 0.5) -> bytes:
    """Cut ``path`` to the first ``keep`` of its bytes, as a kill during ``torch.save`` leaves it; the bytes kept."""
    data = Path(path).read_bytes()[:int(Path(path).stat().st_size * keep)]
    Path(path).write_bytes(data)
    return data


def fake_prediction(case: str, dataset: str, shape=(SIZE, SIZE)) -> np.ndarray:
    """What the fake model predicts: a block that moves one column per round; nothing for ``P5L1``.

    For a 16 x 16 image in round 1: rows 4-11, columns 6-13.
    """
    m = re.search(r"_round(\d+)$", dataset)
    shift = int(m.group(1)) - 1 if m else 0
    h, w = shape
    out = np.zeros(shape, np.uint8)
    if case != "P5L1":
        out[h // 4:3 * h // 4, 6 * w // 16 + shift:14 * w // 16 + shift] = 1
    return out


class FakeBackend:
    """The methods of :class:`nnunet_ulseg.refine.backend.NNUNetBackend`, writing what nnU-Net would.

    ``hook(call)`` runs after a call's partial outputs exist and before it completes
    (raise :class:`Killed` there to simulate a kill mid-step).
    """

    def __init__(self, paths, trainer, plans="nnUNetPlans", configuration="2d", hook=None):
        self.paths, self.trainer, self.plans, self.configuration = paths, trainer, plans, configuration
        self.calls: list[tuple] = []
        self.hook = hook

    def _called(self, *call):
        self.calls.append(call)
        if self.hook is not None:
            self.hook(call)

    def plan_and_preprocess(self, dataset):
        pre = self.paths.preprocessed / dataset
        pre.mkdir(parents=True, exist_ok=True)
        (pre / f"{self.plans}.json").write_text(json.dumps({
            "dataset_name": dataset, "plans_name": self.plans, "image_reader_writer": "SimpleITKIO",
            "configurations": {self.configuration: {"data_identifier": f"{self.plans}_{self.configuration}",
                                                    "patch_size": [SIZE, SIZE]}},
            "foreground_intensity_properties_per_channel": {"0": {"mean": 1.5}}}))
        (pre / "dataset_fingerprint.json").write_text(json.dumps({"fingerprint_of": dataset}))
        shutil.copy2(self.paths.raw / dataset / "dataset.json", pre / "dataset.json")
        self._called("plan_and_preprocess", dataset)
        self._write_data(dataset)

    def preprocess(self, dataset):
        pre = self.paths.preprocessed / dataset
        plans = json.loads((pre / f"{self.plans}.json").read_text())
        assert plans["dataset_name"] == dataset
        assert (pre / "dataset.json").exists() and (pre / "dataset_fingerprint.json").exists()
        (pre / "data_started").write_text("")
        self._called("preprocess", dataset)
        self._write_data(dataset)

    def _write_data(self, dataset):
        data = self.paths.preprocessed / dataset / f"{self.plans}_{self.configuration}"
        data.mkdir(parents=True, exist_ok=True)
        for label in sorted((self.paths.raw / dataset / "labelsTr").glob("*.mha")):
            shutil.copy2(label, data / label.name)
            (data / f"{label.name[:-len('.mha')]}.pkl").write_text("properties")

    def fold_dir(self, dataset, fold) -> Path:
        return self.paths.fold_dir(dataset, self.trainer, self.plans, self.configuration, fold)

    def train(self, dataset, fold, pretrained=None):
        out = self.fold_dir(dataset, fold)
        assert not out.exists(), f"{out} should have been cleaned before training"
        out.mkdir(parents=True)
        (out / "training_log.txt").write_text("epoch 0\n")
        self._called("train", dataset, fold, None if pretrained is None else Path(pretrained).name)
        write_checkpoint(out / "checkpoint_final.pth", self.trainer, self.configuration, dataset=dataset, fold=fold,
                         pretrained=str(pretrained))

    def predict(self, dataset, folds, input_dir, output_dir, num_parts=1, part_id=0):
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        cases = sorted({case_from_filename(p.name, ".mha") for p in Path(input_dir).glob("*_0000.mha")})
        mine = cases[part_id::num_parts]
        for i, case in enumerate(mine):
            shape = read_image(Path(input_dir) / image_filename(case, ".mha")).shape[-2:]
            write_image(output_dir / f"{case}.mha", fake_prediction(case, dataset, shape))
            if i == 0:
                self._called("predict", dataset, tuple(folds), Path(input_dir).name, num_parts, part_id,
                             tuple(mine))
        if not mine:
            self._called("predict", dataset, tuple(folds), Path(input_dir).name, num_parts, part_id, ())
