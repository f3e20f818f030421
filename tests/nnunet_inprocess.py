"""Shared test helpers (no tests here): nnU-Net's own planning and training API run in the pytest process.

Why in-process: every ``nnUNetv2_*`` console script is a fresh interpreter importing torch and
nnunetv2 (about 10 s each on the shared 2-core CI machine), and nnU-Net's ``spawn`` worker pools
(dataset integrity check, fingerprint, preprocessing, final-validation export) each start one
more.  On tiny datasets those start-ups, not the work, were most of an integration test's time.
The functions below call the very same nnU-Net functions the console scripts call, so the files
they write are nnU-Net's; tests whose point is the command line itself (``ulseg propagate``,
``nnUNetv2_train`` with ``nnUNet_extTrainer`` for the co-segmentation trainer) keep the
subprocesses.
"""
from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from nnunet_ulseg.nnunet_layout import NNUNetPaths

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"

#: nnU-Net 2.8 modules whose ``multiprocessing.get_context("spawn").Pool`` runs the planning workers.
PLANNING_POOL_MODULES = ("nnunetv2.experiment_planning.verify_dataset_integrity",
                         "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
                         "nnunetv2.preprocessing.preprocessors.default_preprocessor")


class ThreadPools:
    """Stands in for the ``multiprocessing`` module of nnU-Net's planning modules: ``get_context(...)``
    gives ``multiprocessing.dummy``, whose ``Pool`` runs the very same nnU-Net worker functions
    (``verify_labels``, ``analyze_case``, ``run_case_save``) in threads of this process instead of
    freshly spawned interpreters (the trick of ``tests/test_trainers_e2net.py``'s ``planned``)."""

    @staticmethod
    def get_context(method=None):
        import multiprocessing.dummy

        return multiprocessing.dummy


@contextlib.contextmanager
def nnunet_environment(paths: NNUNetPaths, **extra: str) -> Iterator[pytest.MonkeyPatch]:
    """nnU-Net's path variables (and ``nnUNet_extTrainer`` = our ``trainers/``) set for the block only."""
    with pytest.MonkeyPatch.context() as mp:
        for key, folder in (("nnUNet_raw", paths.raw), ("nnUNet_preprocessed", paths.preprocessed),
                            ("nnUNet_results", paths.results)):
            mp.setenv(key, str(folder))
        mp.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
        for key, value in extra.items():
            mp.setenv(key, value)
        yield mp


@contextlib.contextmanager
def _planning(paths: NNUNetPaths):
    with nnunet_environment(paths) as mp:
        for module in PLANNING_POOL_MODULES:
            mp.setattr(importlib.import_module(module), "multiprocessing", ThreadPools)
        yield


def plan_and_preprocess(paths: NNUNetPaths, dataset_ids: Sequence[int], configurations: Sequence[str] = ("2d",),
                        verify: bool = False) -> str:
    """``nnUNetv2_plan_and_preprocess -d IDS -c CONFIGS [--verify_dataset_integrity]``, in this process.

    The entry point's three steps (``extract_fingerprints``, ``plan_experiments`` with nnU-Net's
    default planner, ``preprocess``) from ``plan_and_preprocess_api``, with the worker pools in
    threads (:class:`ThreadPools`).  Returns the plans identifier (``nnUNetPlans``).
    """
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    ids = [int(i) for i in dataset_ids]
    with _planning(paths):
        api.extract_fingerprints(ids, num_processes=1, check_dataset_integrity=verify, show_progress_bar=False)
        plans_name = api.plan_experiments(ids)
    preprocess(paths, ids, plans_name, configurations)
    return plans_name


def preprocess(paths: NNUNetPaths, dataset_ids: Sequence[int], plans: str = "nnUNetPlans",
               configurations: Sequence[str] = ("2d",)) -> None:
    """``nnUNetv2_preprocess -d IDS -plans_name PLANS -c CONFIGS -np 1`` (plans already in place), in this process."""
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    with _planning(paths):
        api.preprocess([int(i) for i in dataset_ids], plans, configurations=tuple(configurations),
                       num_processes=[1] * len(configurations), show_progress_bar=False)


def train(paths: NNUNetPaths, dataset: str, trainer_name: str, fold: int = 0, configuration: str = "2d",
          plans: str = "nnUNetPlans"):
    """nnU-Net's ``run_training`` body for ``trainer_name`` (found through ``nnUNet_extTrainer``), in this process.

    What ``nnUNetv2_train D 2d F -tr NAME -device cpu`` does up to the end of training: the
    trainer class is looked up by nnU-Net's ``recursive_find_trainer_class_by_name`` (our
    ``trainers/`` folder), built from the preprocessed plans and dataset.json, and
    ``run_training()`` writes ``plans.json``, ``dataset.json`` and ``checkpoint_final.pth`` to
    the model folder.  Two differences, both nnU-Net's own switches: data augmentation runs in
    this thread (``nnUNet_n_proc_DA=0``, nnU-Net's single-threaded augmenter), and the final
    validation (``perform_actual_validation``, a separate call of the console script that
    exports every validation case through a spawned pool) is not run; tests that check the
    validation folder train with the console script (``tests/test_integration_nnunet.py``,
    ``tests/test_training_coseg.py``).  Returns the trainer.
    """
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with nnunet_environment(paths, nnUNet_n_proc_DA="0") as mp:
        for key in ("ULSEG_SHORT_EPOCHS", "ULSEG_SHORT_ITERATIONS", "ULSEG_HRNET_WEIGHTS"):
            mp.delenv(key, raising=False)
        cls = recursive_find_trainer_class_by_name(trainer_name)
        if cls is None or cls.__name__ != trainer_name:
            raise AssertionError(f"nnUNet_extTrainer={TRAINERS_DIR}: trainer {trainer_name} not found")
        pre = paths.preprocessed / dataset
        # run_training.py's get_trainer_from_args adds this key (nnU-Net 2.8's trainer pops it): a fresh start
        plans_dict = {**json.loads((pre / f"{plans}.json").read_text()), "continue_training": False}
        dataset_json = json.loads((pre / "dataset.json").read_text())
        trainer = cls(plans=plans_dict, configuration=configuration, fold=fold, dataset_json=dataset_json,
                      device=torch.device("cpu"))
        trainer.run_training()
    return trainer
