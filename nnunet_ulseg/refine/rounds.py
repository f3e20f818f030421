"""``ulseg refine``: rounds of training and pseudo-mask updates, resumable, inside nnU-Net's folders.

AHRNet Sec. 2.3, last paragraph: train on the RECIST-ellipse pseudo masks, predict the
training images with the trained model, build updated pseudo masks g' (p ∩ e lesion,
(p ∪ e) − (p ∩ e) ignore, the rest background), "retrain the model using the same way
described above"; "the training has converged after three rounds".

Round r (1-based) is one nnU-Net dataset and one trained model; ``rounds`` counts the
models, so the paper's setting is ``rounds=3``: ellipses -> model 1 -> labels 2 ->
model 2 -> labels 3 -> model 3.  The steps, in order, each recorded in the manifest
(:mod:`.manifest`) when finished::

    prepare_1      plan + preprocess round 1 if needed, install its split, label statistics
    train_1        nnUNetv2_train (skipped if checkpoint_final.pth already exists and loads)
    test_1         with truth only: nnUNetv2_predict imagesTs with model 1
    predict_1      nnUNetv2_predict every training case with model 1 (split in parts)
    build_2        raw dataset of round 2 (:func:`.labels.build_round_dataset`)
    preprocess_2   round 1's plans, dataset fingerprint and split; nnUNetv2_preprocess
    train_2        nnUNetv2_train (optionally -pretrained_weights <model 1>)
    test_2, predict_2, build_3, ...  up to train_R (and test_R)

With ``cross_val`` each ``train_r`` is ``train_r_fold0..4``, ``predict_r`` predicts
each fold's validation cases with that fold's model (:mod:`.splits`), and ``test_r``
uses the five folds as an ensemble (``nnUNetv2_predict -f 0 1 2 3 4``).

Choices where the paper is silent:

* The round-1 dataset is the user's; we never delete anything of it (we only add a
  missing ``splits_final.json`` to its preprocessed folder from the raw one, and
  ``--cross-val`` replaces it, keeping the old one as ``splits_final.before_ulseg_crossval.json``,
  while no fold of the trainer has been trained on it).  Everything else
  (round r+1 datasets in the three nnU-Net folders, predictions, the manifest) is ours,
  and a step's own outputs are removed before it runs, so a step cut short is redone
  from scratch.  One exception protects a user's run: a round-1 fold folder without
  ``checkpoint_final.pth`` is only cleaned when the manifest shows that we started it.
* ``predict_r`` uses nnU-Net's exported segmentations (argmax), not probabilities:
  :func:`~nnunet_ulseg.pseudo_masks.update.binarize_prediction` at 0.5 is the same
  decision for two classes, and ``--save_probabilities`` would only add large files.
* Mirroring TTA in predictions is on, as in ``nnUNetv2_predict``, unless ``tta=False`` (``--disable_tta``).
* Every round trains the same fold(s), trainer, plans and configuration as round 1; the
  next rounds reuse round 1's plans (so the same patch size, spacing and CT
  normalisation intensities) and split.
* The work folder is ``$nnUNet_results/<round-1 dataset>/ulseg_refine_<trainer>__<plans>__<cfg>_fold<F>``
  (``_crossval`` with ``cross_val``): ``manifest.json``, ``refine.log`` (all nnU-Net
  output), ``refine_report.json``, ``round<r>/predictions`` and ``round<r>/test_predictions``.
* One coordinator at a time per work folder: ``coordinator.lock`` (host, pid, token) in the
  work folder, taken over atomically when its process died on this host, and removed on
  exit only if it is still this coordinator's (:func:`coordinator_lock`).  Coordinators of
  different folds have different work folders and may run at the same time: round dataset
  ids are reserved atomically (:mod:`.labels`), so each gets datasets of its own.
* A step counts as done only when its outputs are usable: a training step loads the
  checkpoints it hands on; a truncated one (a training killed while saving) is set aside
  as ``*.corrupt`` and the fold is trained again (``Refinement._train``).
* ``postprocess`` (``--postprocess``, :data:`nnunet_ulseg.postprocess.MODES`, default
  ``none``): every prediction is post-processed with its case's crop-geometry RECIST mark
  from round 1's ``lesions.csv`` (:func:`nnunet_ulseg.postprocess.postprocess_crop`) before
  it is used.  ``build_r`` post-processes round r-1's training-case predictions into
  ``round<r-1>/predictions_<mode>/`` and hands those to the round update (so ``p`` in
  p ∩ e is the cleaned prediction; the update rule itself, including its own restriction
  of ``p`` to the components touching the ellipse, is unchanged), and ``test_r``
  post-processes ``round<r>/test_predictions`` into ``round<r>/test_predictions_<mode>/``,
  which is what the report scores (the step records both folders).  The raw nnU-Net
  outputs stay as they are.  The mode is one of the manifest's arguments and, like the
  others that change what finished steps mean, cannot change when a run is resumed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnunet_ulseg.refine.backend import NNUNetBackend, checkpoint_problem, set_aside, transfer_plans
from nnunet_ulseg.refine.labels import (build_round_dataset, claim_dataset_id, dataset_id_of, find_dataset,
                                        label_statistics, link_file, read_reservation, reservation_file,
                                        reserve_round_dataset_id, round_dataset_name, training_cases)
from nnunet_ulseg.postprocess import MODES as POSTPROCESS_MODES
from nnunet_ulseg.refine.manifest import Manifest, ManifestConflict, now, read_json, write_json_atomic
from nnunet_ulseg.refine.parts import (collect_predictions, mark_part_done, missing_parts, model_fingerprint,
                                       part_cases, part_done, part_folder, wait_until)
from nnunet_ulseg.refine.report import build_report, format_report, write_report
from nnunet_ulseg.refine.splits import NUM_FOLDS, crossval_splits, is_crossval_partition, patients_from_sidecar
from nnunet_ulseg.nnunet_layout import NNUNetEnvironmentError, RawDataset, case_from_filename
from nnunet_ulseg.workflow.nnunet import NNUNetPaths, default_device

CROSSVAL_BACKUP = "splits_final.before_ulseg_crossval.json"

logger = logging.getLogger("nnunet_ulseg.refine")


class RefineError(ValueError):
    """A refinement cannot go on as asked; the message says why and what to do."""


@dataclass
class RefineConfig:
    """Options of one refinement run (the ``ulseg refine`` arguments)."""

    dataset: int | str
    trainer: str
    configuration: str = "2d"
    #: one fold: a number or "all" (nnU-Net's fold trained on every case); None = 0
    fold: int | str | None = None
    rounds: int = 3
    cross_val: bool = False
    num_parts: int = 1
    part_id: int = 0
    truth: Path | None = None
    ref_format: str = "auto"
    init_from_previous: bool = False
    plans: str = "nnUNetPlans"
    checkpoint: str = "checkpoint_final.pth"
    device: str | None = None
    num_processes: int = 2
    num_gpus: int = 1
    #: mirroring TTA in every nnUNetv2_predict call, on by default as in nnU-Net (--disable_tta turns it off)
    tta: bool = True
    wait_timeout: float = 48 * 3600.0
    poll_interval: float = 30.0
    follow: bool = False
    postprocess: str = "none"

    def validate(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.num_gpus < 1:
            raise ValueError(f"num_gpus must be at least 1, got {self.num_gpus}")
        if self.num_parts < 1 or not 0 <= self.part_id < self.num_parts:
            raise ValueError(f"part id {self.part_id} must be in 0..{self.num_parts - 1} (num parts {self.num_parts})")
        if self.cross_val and self.fold is not None:
            raise ValueError("--cross-val trains folds 0-4 of every round; do not pass a fold")
        if self.fold is not None and self.fold != "all" and int(self.fold) < 0:
            raise ValueError(f"fold must be >= 0, got {self.fold}")
        if self.postprocess not in POSTPROCESS_MODES:
            raise ValueError(f"unknown post-processing mode {self.postprocess!r}; choose one of "
                             f"{', '.join(POSTPROCESS_MODES)}")
        if self.truth is not None:
            from nnunet_ulseg.evaluation.references import check_reference_folder

            check_reference_folder(self.truth, self.ref_format)

    @property
    def folds(self) -> list[int | str]:
        if self.cross_val:
            return list(range(NUM_FOLDS))
        return ["all"] if self.fold == "all" else [int(self.fold or 0)]

    def manifest_arguments(self, dataset_name: str) -> dict:
        return {"dataset": dataset_name, "configuration": self.configuration, "trainer": self.trainer,
                "plans": self.plans, "fold": None if self.cross_val else self.folds[0],
                "cross_val": self.cross_val, "init_from_previous": self.init_from_previous, "rounds": self.rounds,
                "postprocess": self.postprocess}


@dataclass
class RefineResult:
    """What :func:`refine` did: the coordinator's report, or the rounds a part predicted."""

    work_dir: Path
    manifest: Path
    role: str
    report: dict | None = None
    predicted_rounds: list[int] = field(default_factory=list)


def paths_from_environ(environ: dict[str, str] | None = None) -> NNUNetPaths:
    """The user's nnU-Net folders from ``nnUNet_raw/_preprocessed/_results``; a clear error if unset."""
    try:
        return NNUNetPaths.from_environ(environ)
    except NNUNetEnvironmentError as e:
        raise RefineError(f"{e}: ulseg refine works inside your nnU-Net folders "
                          "(see README, 'nnU-Net environment')") from None


def work_dir_name(trainer: str, plans: str, configuration: str, fold: int | None, cross_val: bool,
                  prefix: str = "ulseg_refine") -> str:
    """``<prefix>_<trainer>__<plans>__<configuration>_fold<F>`` (or ``_crossval``); prefix ``ulseg_refine``."""
    return f"{prefix}_{trainer}__{plans}__{configuration}_" + ("crossval" if cross_val else f"fold{fold}")


def refine(dataset: int | str, trainer: str, *, paths: NNUNetPaths | None = None, backend=None,
           echo: Callable[[str], None] | None = print, **options) -> RefineResult:
    """Run (or continue) refinement rounds of ``dataset`` with ``trainer``; see :class:`RefineConfig`.

    ``paths`` defaults to the ``nnUNet_*`` environment variables; ``backend`` to
    :class:`~.backend.NNUNetBackend` (nnU-Net's commands).  Part 0 (the default) trains and
    builds and returns the report; other parts predict their share and return.
    """
    config = RefineConfig(dataset=dataset, trainer=trainer, **options)
    return Refinement(paths or paths_from_environ(), config, backend=backend, echo=echo).run()


@dataclass
class _Step:
    name: str
    title: str
    run: Callable[[bool], dict | None]


class Refinement:
    """One refinement run over the nnU-Net folders ``paths``.

    Class attributes a subclass may change (``ulseg propagate`` does, WSSS Algorithm 1
    numbers its models from 0): ``FIRST_ROUND`` (the user's dataset), ``WORK_PREFIX`` and
    ``LOG_NAME`` (work folder and log file names).
    """

    FIRST_ROUND = 1
    TOOL = "ulseg refine"
    WORK_PREFIX = "ulseg_refine"
    LOG_NAME = "refine.log"
    #: nnUNetv2_predict --save_probabilities for the training-case predictions
    SAVE_PROBABILITIES = False

    def __init__(self, paths: NNUNetPaths, config: RefineConfig, backend=None,
                 echo: Callable[[str], None] | None = print):
        config.validate()
        self.paths, self.cfg = paths, config
        self.say = echo or (lambda _line: None)
        self.base = find_dataset(paths.raw, config.dataset)
        self.base_raw = paths.raw / self.base
        self.ending = RawDataset(self.base_raw).file_ending
        self.cases = training_cases(self.base_raw)
        self.work = paths.results / self.base / work_dir_name(config.trainer, config.plans, config.configuration,
                                                              config.folds[0], config.cross_val, self.WORK_PREFIX)
        self.manifest_path = self.work / "manifest.json"
        self.log = self.work / self.LOG_NAME
        self.device = config.device or default_device()
        self.backend = backend or NNUNetBackend(paths, config.configuration, config.trainer, config.plans,
                                                self.device, config.num_processes, self.log, config.checkpoint,
                                                config.tta, echo, config.num_gpus)
        self.arguments = config.manifest_arguments(self.base)
        self.manifest: Manifest | None = None
        self.sidecar = self.base_raw / "lesions.csv"
        if config.postprocess != "none" and not self.sidecar.is_file():
            raise RefineError(f"--postprocess {config.postprocess} needs each case's RECIST mark, but {self.sidecar} "
                              "is missing (the converter writes it)")

    # -- layout ------------------------------------------------------------------------
    def dataset_name(self, r: int) -> str:
        if r == self.FIRST_ROUND:
            return self.base
        entry = self.manifest.round(r) if self.manifest else None
        if entry is None:
            raise RefineError(f"round {r} has no dataset yet")
        return entry["dataset_name"]

    def fold_dir(self, r: int, fold: int) -> Path:
        c = self.cfg
        return self.paths.fold_dir(self.dataset_name(r), c.trainer, c.plans, c.configuration, fold)

    def checkpoints(self, r: int) -> list[Path]:
        return [self.fold_dir(r, k) / self.cfg.checkpoint for k in self.cfg.folds]

    def train_steps(self, r: int) -> list[str]:
        return [f"train_{r}_fold{k}" for k in self.cfg.folds] if self.cfg.cross_val else [f"train_{r}"]

    def prediction_jobs(self, r: int) -> list[tuple[int, list[str], Path]]:
        """``(fold, cases, job folder)`` of round r's prediction of the training cases."""
        root = self.work / f"round{r}" / "predictions"
        if not self.cfg.cross_val:
            return [(self.cfg.folds[0], self.cases, root / f"fold{self.cfg.folds[0]}")]
        splits = read_json(self.paths.splits_file(self.base))
        return [(k, sorted(splits[k]["val"]), root / f"fold{k}") for k in range(NUM_FOLDS)]

    def prediction_input(self, r: int) -> Path:
        """The folder of images that round r's model predicts for the next round: the round's ``imagesTr``."""
        return self.paths.raw / self.dataset_name(r) / "imagesTr"

    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.paths.results)).as_posix()

    # -- entry -------------------------------------------------------------------------
    def run(self) -> RefineResult:
        if self.cfg.part_id == 0:
            return self._coordinate()
        return self._serve_part()

    # -- coordinator -------------------------------------------------------------------
    def _coordinate(self) -> RefineResult:
        self.work.mkdir(parents=True, exist_ok=True)
        with coordinator_lock(self.work / "coordinator.lock"):
            if self.manifest_path.exists():
                self._check_postprocess(Manifest.read(self.manifest_path))
            m = self.manifest = Manifest.open(self.manifest_path, self.arguments, self.TOOL)
            for r in sorted(int(k) for k in m.data["rounds"] if int(k) > self.FIRST_ROUND):
                self._check_reservation(r)
            interrupted = (m.in_progress or {}).get("step")
            steps = self.steps()
            pending = [s for s in steps if not m.is_done(s.name)]
            if pending:
                self.say(f"ulseg refine {self.base}: {len(steps) - len(pending)} of {len(steps)} steps done, "
                         f"continuing at {pending[0].name} (manifest {self.manifest_path})")
            for step in pending:
                redo = step.name == interrupted
                self.say(f"[{step.name}] {step.title}" + ("  (continuing after an interruption)" if redo else ""))
                m.start(step.name)
                start = time.perf_counter()
                info = step.run(redo) or {}
                m.finish(step.name, time.perf_counter() - start, info)
            return RefineResult(self.work, self.manifest_path, "coordinator", report=self.report())

    def report(self) -> dict:
        """Write ``refine_report.json`` from the finished manifest, print the table, return the report."""
        report = build_report(self.manifest.data, self.paths.raw, self.work, self.cfg.truth, self.cfg.ref_format)
        write_report(report, self.work / "refine_report.json")
        self.say(format_report(report))
        if self.cfg.postprocess != "none":
            self.say(f"  predictions post-processed with --postprocess {self.cfg.postprocess} before the round "
                     "updates and the test scores")
        return report

    def steps(self) -> list[_Step]:
        """Every step of this run in order (finished ones included)."""
        c = self.cfg
        steps = [_Step("prepare_1", f"round 1 = {self.base}: plans, preprocessing, split", self._prepare)]
        for r in range(1, c.rounds + 1):
            if r > 1:
                steps.append(_Step(f"build_{r}", f"round {r} dataset from round {r - 1}'s predictions",
                                   lambda redo, r=r: self._build(r)))
                steps.append(_Step(f"preprocess_{r}", f"round {r}: round 1's plans, nnUNetv2_preprocess",
                                   lambda redo, r=r: self._preprocess(r)))
            for name, fold in zip(self.train_steps(r), c.folds):
                steps.append(_Step(name, f"nnUNetv2_train round {r} fold {fold} -tr {c.trainer}",
                                   lambda redo, r=r, fold=fold: self._train(r, fold, redo)))
            if c.truth is not None and any((self.base_raw / "imagesTs").glob(f"*{self.ending}")):
                steps.append(_Step(f"test_{r}", f"nnUNetv2_predict the test split with round {r}'s model",
                                   lambda redo, r=r: self._test(r)))
            if r < c.rounds:
                steps.append(_Step(f"predict_{r}", f"nnUNetv2_predict the training cases with round {r}'s model"
                                   + (f" (part 0 of {c.num_parts})" if c.num_parts > 1 else ""),
                                   lambda redo, r=r: self._predict(r)))
        return steps

    def _check_postprocess(self, manifest: Manifest) -> None:
        """Refuse to continue a run whose manifest records another post-processing mode.

        Manifests written before the option existed have no ``postprocess``: they ran with ``none``.
        """
        recorded = manifest.arguments.get("postprocess", "none")
        if recorded != self.cfg.postprocess:
            raise ManifestConflict(
                f"{manifest.path} belongs to a refinement run with other arguments:\n  postprocess: manifest has "
                f"{recorded!r}, this command has {self.cfg.postprocess!r}\nRe-run with the recorded arguments, or "
                "move that folder away to start over.")

    def _postprocess(self, files: dict[str, Path], out_dir: Path, images: str = "imagesTr"
                     ) -> tuple[dict[str, Path], dict]:
        """``files`` (case -> prediction) post-processed into ``out_dir`` (emptied first); new mapping and counts.

        ``images``: the round-1 folder of the cases' CT crops (for the image modes such as ``mark-grabcut``).
        """
        from nnunet_ulseg.conversion.sidecar import read_sidecar
        from nnunet_ulseg.workflow.postprocess_cli import postprocess_cases

        if out_dir.exists():
            shutil.rmtree(out_dir)
        written, record = postprocess_cases(files, out_dir, read_sidecar(self.sidecar), self.cfg.postprocess,
                                            self.ending, sidecar=self.sidecar, images_dir=self.base_raw / images)
        info = {"mode": self.cfg.postprocess, "folder": Path(os.path.relpath(out_dir, self.work)).as_posix(),
                "status_counts": record["status_counts"], "fallback_cases": len(record["fallback_cases"])}
        return written, info

    def _prepare(self, redo: bool) -> dict:
        """Round 1's plans, preprocessed data and split, shared by every run on this dataset.

        Coordinators of different folds each run this step on the same round-1 folders, so it
        runs under :func:`shared_lock` on ``nnUNet_results/<round 1>/.ulseg_refine_round1.lock``:
        a second coordinator waits for the first to finish planning and preprocessing, then
        finds them done instead of running ``nnUNetv2_plan_and_preprocess`` over them again.
        """
        c, info = self.cfg, {}
        self.manifest.set_round(self.FIRST_ROUND, dataset_id=dataset_id_of(self.base), dataset_name=self.base)
        pre = self.paths.preprocessed / self.base
        with shared_lock(self.paths.results / self.base / ".ulseg_refine_round1.lock",
                         f"another ulseg refine run preparing {self.base}", self.say):
            if not all((self.fold_dir(self.FIRST_ROUND, k) / "checkpoint_final.pth").exists() for k in c.folds):
                plans_file = pre / f"{c.plans}.json"
                if not plans_file.exists():
                    if c.plans != "nnUNetPlans":
                        raise FileNotFoundError(f"plans {plans_file} not found; create them or use nnUNetPlans")
                    self.backend.plan_and_preprocess(self.base)
                    info["planned"] = True
                else:
                    identifier = read_json(plans_file)["configurations"][c.configuration].get(
                        "data_identifier", f"{c.plans}_{c.configuration}")
                    # nnU-Net writes <case>.pkl beside each preprocessed case (npz and blosc2 formats);
                    # after an interrupted prepare_1 the data may be partial, so it is redone
                    data = pre / identifier
                    if redo or not all((data / f"{case}.pkl").exists() for case in self.cases):
                        self.backend.preprocess(self.base)
                        info["preprocessed"] = True
            info["splits"] = self._install_round1_splits(pre)
        info["labels"] = label_statistics(self.base_raw, self.cases)
        return info

    def _install_round1_splits(self, pre: Path) -> str:
        target = self.paths.splits_file(self.base)
        pre.mkdir(parents=True, exist_ok=True)
        if not self.cfg.cross_val:
            if not target.exists():
                if RawDataset(self.base_raw).splits_file.exists():
                    self.paths.install_splits(self.base)
                    return "copied from the raw dataset"
                self.say("  no splits_final.json: nnU-Net will make its own random 5-fold split")
                return "none (nnU-Net's own)"
            if self.cfg.folds[0] != "all" and self.cfg.folds[0] >= len(read_json(target)):
                self.say(f"  warning: {target} has no fold {self.cfg.folds[0]}; nnU-Net will use a random 80:20 split")
            return "existing"
        if target.exists() and is_crossval_partition(read_json(target), self.cases):
            return "existing 5-fold"
        sidecar = self.base_raw / "lesions.csv"
        if not sidecar.exists():
            raise RefineError(f"--cross-val groups folds by patient, but {sidecar} is missing")
        splits = crossval_splits(self.cases, patients_from_sidecar(sidecar))
        trained = [k for k in range(NUM_FOLDS) if self.fold_dir(self.FIRST_ROUND, k).exists()]
        if trained:
            raise RefineError(
                f"--cross-val needs folds 0-{NUM_FOLDS - 1} trained on a patient-grouped 5-fold split, but "
                f"{target} is not one and fold(s) {trained} of {self.cfg.trainer} were already trained on it "
                f"({self.fold_dir(self.FIRST_ROUND, trained[0]).parent}); move them away or run without --cross-val")
        if target.exists() and not (pre / CROSSVAL_BACKUP).exists():
            shutil.copy2(target, pre / CROSSVAL_BACKUP)
        write_json_atomic(target, splits)
        self.say(f"  wrote a patient-grouped {NUM_FOLDS}-fold split to {target}"
                 + (f" (previous one kept as {CROSSVAL_BACKUP})" if (pre / CROSSVAL_BACKUP).exists() else ""))
        return f"patient-grouped {NUM_FOLDS}-fold (written)"

    def _train(self, r: int, fold: int, redo: bool) -> dict:
        """Train round r's fold (or accept the user's finished round-1 training); only a loadable checkpoint counts.

        nnU-Net writes ``checkpoint_final.pth`` in place, so a training killed while saving it
        leaves a file that exists but is cut short.  Every checkpoint the step hands on
        (``checkpoint_final.pth`` and the ``--checkpoint`` that predictions use) is therefore
        loaded (:func:`~.backend.checkpoint_problem`) before the step counts as done, both
        for a round-1 training found on disk and after our own training.  A broken one is
        set aside (:func:`~.backend.set_aside`), never deleted: renamed ``<name>.corrupt``
        beside itself in a round-1 folder we did not start (and we stop: the user resumes
        that training with ``--c``, which falls back to ``checkpoint_latest.pth``), or moved
        to ``<work>/round<r>/set_aside/fold_<F>/`` when the fold folder is ours and is about
        to be cleaned for a new training.  The step records what it set aside.
        """
        fold_dir = self.fold_dir(r, fold)
        final = fold_dir / "checkpoint_final.pth"
        moved: list[str] = []
        checked = False
        if r == self.FIRST_ROUND and final.exists():
            broken = self._set_aside_broken(fold_dir, r, fold, keep_in_place=not redo)
            checked = True
            if not broken:
                self.say(f"  {final} exists and loads: round 1 fold {fold} is trained")
                return {"checkpoint": self._rel(final), "preexisting": True}
            if not redo:
                problem, target = broken[0]
                raise RefineError(
                    f"{problem}; renamed to {target}. Round 1 fold {fold} in {fold_dir} is not a finished training "
                    f"(killed while saving?): continue it (nnUNetv2_train ... --c resumes from checkpoint_latest.pth) "
                    f"or move the folder away, then re-run.")
            moved += [self._rel(target) for _, target in broken]
        if fold_dir.exists():
            if r == self.FIRST_ROUND and not redo:
                raise RefineError(
                    f"{fold_dir} exists without checkpoint_final.pth: a training of round 1 is unfinished or still "
                    f"running. Finish it (nnUNetv2_train ... --c) or move the folder away, then re-run.")
            if not checked:
                moved += [self._rel(target) for _, target in self._set_aside_broken(fold_dir, r, fold, False)]
            shutil.rmtree(fold_dir)
        pretrained = None
        if self.cfg.init_from_previous and r > self.FIRST_ROUND:
            pretrained = self.fold_dir(r - 1, fold) / "checkpoint_final.pth"
        self.backend.train(self.dataset_name(r), fold, pretrained)
        if not final.exists():
            raise RefineError(f"nnUNetv2_train finished without writing {final} (see {self.log})")
        broken = self._set_aside_broken(fold_dir, r, fold, keep_in_place=False)
        if broken:
            problem, target = broken[0]
            raise RefineError(f"nnUNetv2_train finished, but {problem} (moved to {target}; see {self.log}); "
                              "re-running trains this fold again")
        info = {"checkpoint": self._rel(final)}
        if pretrained is not None:
            info["pretrained_weights"] = self._rel(pretrained)
        if moved:
            info["set_aside"] = moved
        return info

    def _set_aside_broken(self, fold_dir: Path, r: int, fold: int, keep_in_place: bool) -> list[tuple[str, Path]]:
        """Set aside every checkpoint of ``fold_dir`` that this run would use and nnU-Net cannot load.

        Returns ``(problem, new path)`` per file; each one is also reported.
        """
        out = []
        for name in dict.fromkeys(["checkpoint_final.pth", self.cfg.checkpoint]):
            ckpt = fold_dir / name
            if not ckpt.is_file():
                continue
            problem = checkpoint_problem(ckpt)
            if problem is None:
                continue
            target = set_aside(ckpt, None if keep_in_place else self.work / f"round{r}" / "set_aside" / f"fold_{fold}")
            self.say(f"  {problem}: set aside as {target}, not used")
            out.append((problem, target))
        return out

    def _test(self, r: int) -> dict:
        out = self.work / f"round{r}" / "test_predictions"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        self.backend.predict(self.dataset_name(r), self.cfg.folds, self.paths.raw / self.dataset_name(r) / "imagesTs",
                             out)
        if self.cfg.postprocess == "none":
            return {"predictions": Path(os.path.relpath(out, self.work)).as_posix()}
        files = {case_from_filename(p.name, self.ending, channel=False): p for p in sorted(out.iterdir())
                 if p.is_file() and p.name.endswith(self.ending)}
        _, info = self._postprocess(files, out.with_name(f"test_predictions_{self.cfg.postprocess}"), "imagesTs")
        return {"predictions": info["folder"], "postprocess": info,
                "unprocessed_predictions": Path(os.path.relpath(out, self.work)).as_posix()}

    def _model(self, r: int) -> list[dict]:
        return model_fingerprint(self.checkpoints(r), self.paths.results)

    def _predict(self, r: int) -> dict:
        c = self.cfg
        model = self._model(r)
        jobs = self.prediction_jobs(r)
        for fold, cases, job in jobs:
            self._predict_part(r, fold, cases, job, model)
        if c.num_parts > 1:
            waiting = lambda: all(not missing_parts(job, c.num_parts, model) for _, _, job in jobs)  # noqa: E731
            wait_until(waiting, c.wait_timeout, c.poll_interval,
                       f"parts 1-{c.num_parts - 1} of round {r}'s predictions in {jobs[0][2].parent} "
                       f"(start `ulseg refine ... --num-parts {c.num_parts} --part-id I` for I = 1..{c.num_parts - 1})",
                       self.say)
        for _, cases, job in jobs:
            collect_predictions(job, c.num_parts, cases, self.ending)
        return {"num_parts": c.num_parts, "jobs": [Path(os.path.relpath(job, self.work)).as_posix()
                                                   for _, _, job in jobs]}

    def _predict_part(self, r: int, fold: int, cases: list[str], job: Path, model: list[dict]) -> None:
        """Predict this process' share of one job unless its current marker exists."""
        c = self.cfg
        folder = part_folder(job, c.part_id, c.num_parts)
        if part_done(folder, model):
            self.say(f"  round {r} fold {fold} part {c.part_id}: already predicted")
            return
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        mine = part_cases(cases, c.part_id, c.num_parts)
        raw_images = self.prediction_input(r)
        if c.cross_val:
            source = job / f"input_part{c.part_id}of{c.num_parts}"
            if source.exists():
                shutil.rmtree(source)
            source.mkdir(parents=True)
            wanted = set(cases)
            for f in raw_images.iterdir():
                with contextlib.suppress(ValueError):  # not an image of this dataset
                    if case_from_filename(f.name, self.ending) in wanted:
                        link_file(f, source / f.name)
        else:
            source = raw_images
        if mine:
            self.backend.predict(self.dataset_name(r), [fold], source, folder, c.num_parts, c.part_id,
                                 **({"save_probabilities": True} if self.SAVE_PROBABILITIES else {}))
        absent = [case for case in mine if not (folder / f"{case}{self.ending}").exists()]
        if absent:
            raise RefineError(f"nnUNetv2_predict left {len(absent)} case(s) of part {c.part_id} unpredicted in "
                              f"{folder}: {', '.join(absent[:5])}")
        mark_part_done(folder, c.part_id, c.num_parts, mine, model)

    def _id_owner(self, r: int) -> dict:
        """Who reserves round r's dataset id: this run's work folder (below nnUNet_results) and the round."""
        return {"work_dir": self._rel(self.work), "round": r}

    def _check_reservation(self, r: int) -> None:
        """Make sure the id the manifest records for round r is reserved for this run (reserving it if free).

        A manifest written before ids were reserved has no reservation: it is made now.  An id
        reserved by another run means both recorded it (the old allocation raced); going on
        would rebuild or train over the other run's dataset.
        """
        entry = self.manifest.round(r)
        owner = {**self._id_owner(r), "dataset_name": entry["dataset_name"]}
        if claim_dataset_id(self.paths.raw, entry["dataset_id"], owner):
            return
        other = read_reservation(self.paths.raw, entry["dataset_id"]) or {}
        raise RefineError(
            f"dataset id {entry['dataset_id']} ({entry['dataset_name']}), recorded for round {r} in "
            f"{self.manifest.path}, is reserved by another ulseg refine run ({other.get('work_dir')}, round "
            f"{other.get('round')}; {reservation_file(self.paths.raw, entry['dataset_id'])}): both runs took this "
            f"id. Its dataset is left as it is; move this run's folder {self.work} away and re-run to start this "
            "run over with ids of its own")

    def _round_entry(self, r: int) -> dict:
        """Round r's dataset id and name from the manifest, reserved (and recorded) first if new; clashes refused."""
        m, prev = self.manifest, r - 1
        entry = m.round(r)
        if entry is None:
            # reserved before it is recorded, and recorded before anything is built (labels.py)
            new_id = reserve_round_dataset_id(self.paths.raw, [self.paths.raw, self.paths.preprocessed,
                                                               self.paths.results],
                                              dataset_id_of(self.base), prev, self._id_owner(r))
            m.set_round(r, dataset_id=new_id, dataset_name=round_dataset_name(new_id, self.base, r))
            entry = m.round(r)
        else:
            self._check_reservation(r)
        clash = [p for root in (self.paths.raw, self.paths.preprocessed, self.paths.results)
                 for p in root.glob(f"Dataset{entry['dataset_id']:03d}_*") if p.name != entry["dataset_name"]]
        if clash:
            raise RefineError(f"dataset id {entry['dataset_id']}, recorded for round {r} in {m.path}, is now also "
                              f"used by {clash[0]}; nnU-Net needs unique ids: move that dataset away")
        return entry

    def _build(self, r: int) -> dict:
        """Round r's raw dataset from round r-1's predictions."""
        m, prev = self.manifest, r - 1
        entry = self._round_entry(r)
        target = self.paths.raw / entry["dataset_name"]
        for stale in (target, target.with_name(f".{target.name}.partial")):
            if stale.exists():
                shutil.rmtree(stale)
        num_parts = m.steps[f"predict_{prev}"]["num_parts"]
        predictions = {}
        for _, cases, job in self.prediction_jobs(prev):
            predictions.update(collect_predictions(job, num_parts, cases, self.ending))
        postprocess = None
        if self.cfg.postprocess != "none":
            predictions, postprocess = self._postprocess(
                predictions, self.work / f"round{prev}" / f"predictions_{self.cfg.postprocess}")
            self.say(f"  round {prev}'s predictions post-processed ({self.cfg.postprocess}): "
                     + ", ".join(f"{k} {v}" for k, v in postprocess["status_counts"].items()))
        split_file = self.paths.splits_file(self.base)
        provenance = {"round": r, "base_dataset": self.base, "previous_dataset": self.dataset_name(prev),
                      "predicted_by": {"trainer": self.cfg.trainer, "plans": self.cfg.plans,
                                       "configuration": self.cfg.configuration, "folds": self.cfg.folds,
                                       "cross_val": self.cfg.cross_val, "checkpoint": self.cfg.checkpoint,
                                       "postprocess": self.cfg.postprocess},
                      "rule": "lesion = p AND e, ignore = (p OR e) - (p AND e), e = round-1 ellipse "
                              "(AHRNet Sec. 2.3)", "created": now()}
        stats = build_round_dataset(self.base_raw, self.paths.raw / self.dataset_name(prev), target, predictions,
                                    read_json(split_file) if split_file.exists() else None, provenance)
        if stats["link_method"] != ["symlink"]:
            self.say(f"  symbolic links unavailable: images linked by {', '.join(stats['link_method'])}")
        self.say(f"  {target.name}: {stats['cases']} cases, ignore {100 * stats['ignore_fraction']:.2f} % of pixels, "
                 f"{100 * stats['label_change']:.2f} % changed, {stats['fallback_cases']} ellipse fallbacks")
        info = {"dataset": entry["dataset_name"], "labels": stats}
        if postprocess is not None:
            info["postprocess"] = postprocess
        return info

    def _preprocess(self, r: int) -> dict:
        """Round 1's plans, fingerprint and split for round r, then ``nnUNetv2_preprocess``."""
        name = self.dataset_name(r)
        pre, base_pre = self.paths.preprocessed / name, self.paths.preprocessed / self.base
        if pre.exists():
            shutil.rmtree(pre)
        pre.mkdir(parents=True)
        transfer_plans(self.paths.preprocessed, self.base, name, self.cfg.plans)
        shutil.copy2(self.paths.raw / name / "dataset.json", pre / "dataset.json")
        fingerprint = base_pre / "dataset_fingerprint.json"
        if not fingerprint.exists():
            raise FileNotFoundError(f"{fingerprint} not found: nnUNetv2_train copies it; re-plan round 1")
        shutil.copy2(fingerprint, pre / "dataset_fingerprint.json")
        if self.paths.splits_file(self.base).exists():
            self.paths.install_splits(name, self.paths.splits_file(self.base))
        self.backend.preprocess(name)
        return {"plans_from": self.base}

    # -- other parts -------------------------------------------------------------------
    def _serve_part(self) -> RefineResult:
        c = self.cfg
        wait_until(self.manifest_path.exists, c.wait_timeout, c.poll_interval,
                   f"part 0 to create {self.manifest_path}", self.say)
        predicted: list[int] = []
        while True:
            self.manifest = Manifest.read(self.manifest_path)
            self._check_postprocess(self.manifest)
            self.manifest.check_arguments({**self.arguments,
                                           "rounds": max(c.rounds, self.manifest.arguments["rounds"])})
            r = self._next_round_for_part()
            if r is None:
                break
            if not self._trained(r):
                wait_until(lambda: self._trained(r, reload=True), c.wait_timeout, c.poll_interval,
                           f"part 0 to finish training round {r}", self.say)
            model = self._model(r)
            for fold, cases, job in self.prediction_jobs(r):
                self.say(f"round {r}: predicting part {c.part_id} of {c.num_parts} (fold {fold})")
                self._predict_part(r, fold, cases, job, model)
            predicted.append(r)
            if not c.follow:
                break
        self.say(f"part {c.part_id} of {c.num_parts}: "
                 + (f"predicted round(s) {predicted}" if predicted else "nothing left to predict")
                 + "; part 0 builds the next rounds")
        return RefineResult(self.work, self.manifest_path, "part", predicted_rounds=predicted)

    def _trained(self, r: int, reload: bool = False) -> bool:
        if reload:
            self.manifest = Manifest.read(self.manifest_path)
        return all(self.manifest.is_done(s) for s in self.train_steps(r))

    def _next_round_for_part(self) -> int | None:
        """The first round whose training-case predictions still need this part."""
        m, c = self.manifest, self.cfg
        first = self.FIRST_ROUND
        for r in range(first, first + max(c.rounds, m.arguments["rounds"]) - 1):
            if m.is_done(f"predict_{r}"):
                continue
            if self._trained(r):
                model = self._model(r)
                if all(part_done(part_folder(job, c.part_id, c.num_parts), model)
                       for _, _, job in self.prediction_jobs(r)):
                    continue
            return r
        return None


@contextlib.contextmanager
def coordinator_lock(path: str | os.PathLike):
    """Hold ``path`` while the block runs: one coordinator per work folder.

    The lock is a small JSON file (host, pid, a random token, start time).

    * It is created atomically with its content: a complete temporary file is hard-linked
      onto ``path``, which fails if ``path`` exists (where the file system has no hard
      links, an ``O_EXCL`` create, then the content).
    * A lock held by a live process, by any process on another host, or whose content
      cannot be read, is a :class:`RefineError`.
    * One left by a dead process on this host is taken over.  Every change to an existing
      lock (takeover and release) happens under an ``flock`` on ``<path>.takeover`` (that
      file stays; the kernel frees the ``flock`` when its holder dies, so the mutex itself
      never goes stale) after reading the lock again: the takeover replaces the lock
      (``os.replace``) only if it still holds the same dead holder's record.  Two processes
      that found the same stale lock therefore cannot both win: the second finds the
      first's record and is refused.  The lock is host-local by design (a pid says nothing
      on another host), so a per-host mutex is enough.
    * On exit the lock is removed only if it still holds this coordinator's token; a lock
      that was replaced meanwhile (by hand, or by another coordinator) is left to its owner.
    """
    path = Path(path)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "started": now()}
    _take_lock(path, mine)
    try:
        yield path
    finally:
        with _lock_mutex(path):
            if (_read_lock(path) or {}).get("token") == mine["token"]:
                path.unlink(missing_ok=True)
            else:
                logger.warning("%s is no longer this coordinator's lock (host %s, pid %s); left in place", path,
                               mine["host"], mine["pid"])


def _take_lock(path: Path, mine: dict) -> None:
    for _ in range(3):
        if _create_lock(path, mine):
            return
        other = _read_lock(path)
        if other is None:  # released between the two calls: try again
            continue
        if not (other.get("host") == mine["host"] and isinstance(other.get("pid"), int)
                and not _alive(other["pid"])):
            raise RefineError(f"another ulseg refine coordinator holds {path} (host {other.get('host')}, pid "
                              f"{other.get('pid')}, since {other.get('started')}); if it is no longer running, "
                              "delete that file")
        with _lock_mutex(path):
            if _read_lock(path) == other:  # still the dead holder's: replace it with ours in one step
                tmp = path.with_name(f".{path.name}.{mine['token']}.tmp")
                tmp.write_text(json.dumps(mine))
                os.replace(tmp, path)
                return
        # someone else took it over or released it first: look again
    raise RefineError(f"could not take {path}: it changed hands while this coordinator tried; run again")


def _create_lock(path: Path, mine: dict) -> bool:
    """Create ``path`` holding ``mine`` if it does not exist; False if it does."""
    tmp = path.with_name(f".{path.name}.{mine['token']}.tmp")
    tmp.write_text(json.dumps(mine))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    """The lock's record; None if there is no lock, ``{}`` if it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def shared_lock(path: str | os.PathLike, holder: str, say: Callable[[str], None] | None = None):
    """Wait for, then hold, an exclusive ``flock`` on ``path`` (created if missing, never removed).

    For work that several coordinators share and that must not run twice at once; the
    kernel releases the lock when its holder exits or dies, so it never goes stale.  While
    waiting, ``say`` is told once that ``holder`` has it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say(f"  waiting for {holder} ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock_mutex(path: Path):
    """The mutex under which an existing coordinator lock is re-read and replaced or removed."""
    return shared_lock(path.with_name(f"{path.name}.takeover"), "another coordinator changing the lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
