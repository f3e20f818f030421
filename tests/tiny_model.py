"""Shared test helper (no tests here): one tiny nnU-Net model trained once per test session.

Several integration tests only need *a* trained 1-epoch model of ours on a converted
DeepLesion-format sample (``ulseg segment``'s model, the co-segmentation embedding model), not
a training of their own.  :func:`build` makes it once: a generated sample (8 lesions on
128 px slices, 32 px crops), ``convert_deeplesion``, nnU-Net's planning and preprocessing
(2d, with the integrity check) and ``nnUNetTrainerULSeg_1epochs`` trained for one epoch of two
iterations, all with nnU-Net's API in this process (``tests/nnunet_inprocess.py``).  ``tests/conftest.py`` serves it as the session fixture
``tiny_model``: built by whichever test asks first, so tests stay independent of order and of
``-k`` selection.

The folders are shared: a test must not write into them.  One that needs to add files (the
co-segmentation test writes pairs and trains into the dataset) copies them first with
:meth:`TinyModel.copy_to`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from nnunet_ulseg.nnunet_layout import NNUNetPaths
from nnunet_inprocess import plan_and_preprocess, train

DATASET_ID = 985
DATASET = f"Dataset{DATASET_ID}_ULSegTinyModel"
TRAINER = "nnUNetTrainerULSeg_1epochs"
N_LESIONS, SEED, IMAGE_SIZE, CROP_SIZE = 8, 2, 128, 32


@dataclass(frozen=True)
class TinyModel:
    """Where the shared model lives: ``root`` holds ``sample/`` and nnU-Net's three folders."""

    root: Path
    paths: NNUNetPaths
    sample: Path
    raw: Path
    model_dir: Path

    def copy_to(self, root: Path) -> NNUNetPaths:
        """nnU-Net's raw/preprocessed/results folders copied under ``root`` (writable); the sample is not copied."""
        for src in (self.paths.raw, self.paths.preprocessed, self.paths.results):
            shutil.copytree(src, Path(root) / src.relative_to(self.root), symlinks=True)
        return NNUNetPaths.under(root)


def build(root: Path) -> TinyModel:
    """Sample -> raw dataset -> plans and 2d preprocessed data -> 1-epoch model, under ``root``."""
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = Path(root)
    sample = make_sample(root / "sample", n_lesions=N_LESIONS, seed=SEED, image_size=IMAGE_SIZE, progress=False)
    paths = NNUNetPaths.under(root).create()
    raw = paths.raw / DATASET
    convert_deeplesion(sample, raw, num_processes=1, progress=False, crop_size=CROP_SIZE)
    (paths.preprocessed / DATASET).mkdir(parents=True)
    shutil.copy2(raw / "splits_final.json", paths.preprocessed / DATASET / "splits_final.json")
    plan_and_preprocess(paths, [DATASET_ID], verify=True)
    trainer = train(paths, DATASET, TRAINER)
    model_dir = paths.model_dir(DATASET, TRAINER)
    assert Path(trainer.output_folder) == model_dir / "fold_0"
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()
    return TinyModel(root=root, paths=paths, sample=sample, raw=raw, model_dir=model_dir)
