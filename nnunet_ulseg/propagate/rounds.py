"""``ulseg propagate``: WSSS self-paced slice propagation (Algorithm 1, Sec. 3.3) on nnU-Net, resumable.

Algorithm 1: train ``θ^0`` on the RECIST slices (line 4); for ``k = 1..K`` predict the
slices ``r - k .. r + k`` of every training lesion with ``θ^{k-1}`` (line 8), turn each
prediction into a label with the CNN trimap and GrabCut (lines 9-10), and train ``θ^k``
on them, starting from ``θ^{k-1}`` (line 13).  Model ``m`` is one nnU-Net dataset and one
trained fold; model 0's dataset is the user's key-slice dataset.

This is :class:`nnunet_ulseg.refine.rounds.Refinement` with its rounds numbered from 0
(``FIRST_ROUND``) and other inputs: the manifest, the coordinator lock, resume (a step cut
short is redone from scratch), the checkpoint checks, the dataset id reservations, the
plans transfer and ``--num-parts`` predictions are refine's.  Steps::

    slices         cut every off-key slice once (crops.py): training lesions r±1..r±K,
                   test lesions r±1..r±E, into <work>/slices
    prepare_0      plan + preprocess the key-slice dataset if needed (refine's prepare)
    train_0        nnUNetv2_train (skipped if checkpoint_final.pth exists and loads)
    test_0         nnUNetv2_predict the test key cases and their slices r±1..r±E
    predict_0      nnUNetv2_predict --save_probabilities of slices r±1 (training lesions)
    build_1        labels (trimap + GrabCut) and the raw dataset of model 1 (labels.py)
    preprocess_1   model 0's plans, fingerprint; the split extended to the slices
    train_1        nnUNetv2_train -pretrained_weights <model 0> (unless --from-scratch)
    test_1, predict_1 (slices r±1..r±2), build_2, ...  up to train_K and test_K

Choices where the paper is silent (more in :mod:`.crops` and :mod:`.labels`):

* Later models relabel every earlier offset (Algorithm 1 line 6, ``F = ∅``); the key slices
  keep model 0's labels.
* ``test_m`` writes ``round<m>/test_predictions/``: nnU-Net's output files of every test key
  case and of its slices ``r ± 1 .. r ± E`` (``--eval-reach`` E, default K), plus
  ``slices.csv`` (``label_status`` ``key`` at offset 0, ``none`` elsewhere), which is what
  the 3D evaluation reads; model 0 there is the key-slice-only baseline.
* The work folder is ``$nnUNet_results/<dataset>/ulseg_propagate_<trainer>__<plans>__<cfg>_fold<F>``;
  ``propagate.log`` holds nnU-Net's output, ``propagate_report.json`` the per-round counts.
* Model m's dataset gets refine's next free, reserved id (:mod:`nnunet_ulseg.refine.labels`,
  tried from ``base + 100 (m - 1)`` on) and the name ``Dataset<id>_<base name>_round<m>``.
* ``K`` and ``--eval-reach`` are fixed for a run (they decide which slices step ``slices`` cuts):
  a resumed run with other values stops with a :class:`ManifestConflict`.
* One fold (no ``--cross-val``): Algorithm 1 predicts the training lesions' new slices,
  which no model has trained on, so a cross-validated prediction buys nothing there.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nnunet_ulseg.conversion.sidecar import read_sidecar
from nnunet_ulseg.conversion.slices import SLICES_FILE, SliceRow, read_slices, write_slices
from nnunet_ulseg.nnunet_layout import image_filename
from nnunet_ulseg.propagate.crops import TEST_IMAGES, TRAIN_IMAGES, CropOptions, cut_slices
from nnunet_ulseg.propagate.labels import (build_slice_dataset, key_slice_row, lesion_probability, read_crop,
                                           slice_label)
from nnunet_ulseg.propagate.truth import SliceTruth, per_offset_mean, slice_dice
from nnunet_ulseg.refine.labels import link_file
from nnunet_ulseg.refine.manifest import Manifest, ManifestConflict, now, read_json, write_json_atomic
from nnunet_ulseg.refine.parts import collect_predictions
from nnunet_ulseg.refine.rounds import Refinement, RefineConfig, RefineError, RefineResult, _Step, paths_from_environ
from nnunet_ulseg.workflow.nnunet import NNUNetPaths

REPORT = "propagate_report.json"


@dataclass
class PropagateConfig(RefineConfig):
    """Options of ``ulseg propagate``: refine's, with ``K`` propagation rounds and the test reach."""

    K: int = 3
    eval_reach: int | None = None
    #: Algorithm 1 line 13 trains θ^k from θ^{k-1}; ``--from-scratch`` turns it off
    init_from_previous: bool = True

    def __post_init__(self):
        self.rounds = self.K + 1  # refine counts trained models

    @property
    def reach(self) -> int:
        return self.K if self.eval_reach is None else self.eval_reach

    def validate(self) -> None:
        if self.K < 1:
            raise ValueError(f"K must be at least 1, got {self.K}")
        if self.reach < 0:
            raise ValueError(f"--eval-reach must be >= 0, got {self.reach}")
        if self.cross_val:
            raise ValueError("ulseg propagate trains one fold per round; --cross-val is not supported")
        if self.postprocess != "none":
            raise ValueError("ulseg propagate does not post-process (the RECIST mark lies on the key slice only)")
        if self.truth is not None and not (Path(self.truth) / "masks3d.csv").is_file():
            raise ValueError(f"--truth {self.truth}: not a make-sample folder with true 3D masks (no masks3d.csv)")
        super().validate()

    def manifest_arguments(self, dataset_name: str) -> dict:
        return {**super().manifest_arguments(dataset_name), "K": self.K, "eval_reach": self.reach}


def propagate(dataset: int | str, trainer: str, *, paths: NNUNetPaths | None = None, backend=None,
              echo: Callable[[str], None] | None = print, **options) -> RefineResult:
    """Run (or continue) Algorithm 1 on ``dataset`` with ``trainer``; see :class:`PropagateConfig`."""
    config = PropagateConfig(dataset=dataset, trainer=trainer, **options)
    return Propagation(paths or paths_from_environ(), config, backend=backend, echo=echo).run()


class Propagation(Refinement):
    """One ``ulseg propagate`` run: models 0..K over the nnU-Net folders ``paths``."""

    FIRST_ROUND = 0
    TOOL = "ulseg propagate"
    WORK_PREFIX = "ulseg_propagate"
    LOG_NAME = "propagate.log"
    SAVE_PROBABILITIES = True

    def __init__(self, paths: NNUNetPaths, config: PropagateConfig, backend=None,
                 echo: Callable[[str], None] | None = print):
        super().__init__(paths, config, backend, echo)
        if not self.sidecar.is_file():
            raise RefineError(f"{self.sidecar} is missing: ulseg propagate needs each lesion's crop box and RECIST "
                              "mark (convert-deeplesion writes it)")
        self.rows = {r.case: r for r in read_sidecar(self.sidecar)}
        self.slices_dir = self.work / "slices"
        self._slice_rows: list[SliceRow] | None = None

    def _check_postprocess(self, manifest: Manifest) -> None:
        """Refine's argument check, plus ``K`` and ``--eval-reach``, which fix the slices cut in step ``slices``.

        Unlike refine's ``--rounds``, ``K`` cannot grow on a resumed run: the crops of the new
        offsets were never cut.  (Refine calls this hook on every start, coordinator and parts.)
        """
        super()._check_postprocess(manifest)
        recorded = manifest.arguments
        problems = [f"{k}: manifest has {recorded.get(k)!r}, this command has {self.arguments[k]!r}"
                    for k in ("K", "eval_reach") if recorded.get(k) != self.arguments[k]]
        if problems:
            raise ManifestConflict(f"{manifest.path} belongs to a propagation with other arguments:\n  "
                                   + "\n  ".join(problems) + "\nRe-run with the recorded arguments, or move that "
                                   "folder away to start over.")

    # -- layout ------------------------------------------------------------------------
    @property
    def K(self) -> int:
        return self.cfg.K

    def slice_rows(self) -> list[SliceRow]:
        if self._slice_rows is None:
            self._slice_rows = read_slices(self.slices_dir / SLICES_FILE)
        return self._slice_rows

    def reach_cases(self, reach: int, split_test: bool) -> list[str]:
        return sorted(r.case for r in self.slice_rows()
                      if 0 < abs(r.offset) <= reach and (r.split == "test") == split_test)

    def prediction_jobs(self, r: int) -> list[tuple[int, list[str], Path]]:
        """Model r predicts the training lesions' slices ``±1 .. ±(r+1)`` for round r+1."""
        fold = self.cfg.folds[0]
        return [(fold, self.reach_cases(r + 1, False), self.work / f"round{r}" / "predictions" / f"fold{fold}")]

    def prediction_input(self, r: int) -> Path:
        return self.slices_dir / f"predict_reach{r + 1}"

    def test_input(self) -> Path:
        return self.slices_dir / f"test_reach{self.cfg.reach}"

    # -- steps -------------------------------------------------------------------------
    def steps(self) -> list[_Step]:
        c, fold = self.cfg, self.cfg.folds[0]
        steps = [_Step("slices", f"cut slices r±1..r±{self.K} (training) and r±1..r±{c.reach} (test)", self._cut),
                 _Step("prepare_0", f"model 0 = {self.base}: plans, preprocessing, split", self._prepare)]
        for m in range(self.K + 1):
            if m > 0:
                steps += [
                    _Step(f"predict_{m - 1}", f"nnUNetv2_predict slices r±1..r±{m} with model {m - 1}",
                          lambda redo, r=m - 1: self._predict(r)),
                    _Step(f"build_{m}", f"labels of slices r±1..r±{m} (trimap + GrabCut), dataset of model {m}",
                          lambda redo, m=m: self._build(m)),
                    _Step(f"preprocess_{m}", f"model {m}: model 0's plans, nnUNetv2_preprocess",
                          lambda redo, m=m: self._preprocess(m))]
            steps.append(_Step(f"train_{m}", f"nnUNetv2_train model {m} fold {fold} -tr {c.trainer}",
                               lambda redo, m=m: self._train(m, fold, redo)))
            steps.append(_Step(f"test_{m}", f"nnUNetv2_predict the test lesions' slices r±0..r±{c.reach} "
                               f"with model {m}", lambda redo, m=m: self._test(m)))
        return steps

    def _cut(self, redo: bool) -> dict:
        """Off-key crops of every lesion, once, and the link folders each prediction reads."""
        if self.slices_dir.exists():
            shutil.rmtree(self.slices_dir)
        rows = list(self.rows.values())
        offsets = {}
        for row in rows:
            reach = self.cfg.reach if row.split == "test" else self.K
            offsets[row.case] = [k for k in range(-reach, reach + 1) if k != 0]
        result = cut_slices(rows, offsets, CropOptions.from_dataset(self.base_raw), self.slices_dir,
                            self.cfg.num_processes, progress=True)
        self._slice_rows = None
        n_channels = len(read_json(self.base_raw / "dataset.json")["channel_names"])
        for reach in range(1, self.K + 1):
            self._link(self.prediction_input(reach - 1), TRAIN_IMAGES, self.reach_cases(reach, False), n_channels)
        test = self.test_input()
        self._link(test, TEST_IMAGES, self.reach_cases(self.cfg.reach, True), n_channels)
        for f in sorted((self.base_raw / "imagesTs").glob(f"*{self.ending}")):
            link_file(f, test / f.name)
        info = result.to_dict()
        self.say(f"  {info['slices']} slices cut (per offset {info['per_offset']}), skipped {info['skipped']}")
        return info

    def _link(self, folder: Path, images: str, cases: list[str], n_channels: int) -> None:
        folder.mkdir(parents=True)
        for case in cases:
            for ch in range(n_channels):
                name = image_filename(case, self.ending, ch)
                link_file(self.slices_dir / images / name, folder / name)

    def _build(self, m: int) -> dict:
        """Algorithm 1 lines 6-11: labels of slices ±1..±m from model m-1, then model m's raw dataset."""
        from tqdm import tqdm

        entry = self._round_entry(m)
        target = self.paths.raw / entry["dataset_name"]
        for stale in (target, target.with_name(f".{target.name}.partial")):
            if stale.exists():
                shutil.rmtree(stale)
        prev = m - 1
        num_parts = self.manifest.steps[f"predict_{prev}"]["num_parts"]
        (_, cases, job), = self.prediction_jobs(prev)
        predictions = collect_predictions(job, num_parts, cases, self.ending)
        by_case = {r.case: r for r in self.slice_rows()}
        labels, beyond, scores = {}, [], []
        truth = self._truth()
        for case in tqdm(cases, desc=f"labels for model {m}", unit="slice"):
            row = by_case[case]
            npz = predictions[case].with_name(f"{case}.npz")
            if not npz.is_file():
                raise RefineError(f"{npz} missing: nnUNetv2_predict ran without --save_probabilities?")
            image = read_crop(self.slices_dir / TRAIN_IMAGES / image_filename(case, self.ending))
            got = slice_label(self.rows[row.key_case], row.offset, lesion_probability(npz), image)
            if got is None:
                beyond.append(case)
                continue
            labels[case] = (got.labels, got.status)
            if truth is not None:
                scores.append((row.offset, slice_dice(got.labels, self.rows[row.key_case], row.offset, truth)))
        split_file = self.paths.splits_file(self.base)
        provenance = {"model": m, "base_dataset": self.base, "predicted_by": self.dataset_name(prev),
                      "offsets": f"±1..±{m}", "rule": "WSSS Algorithm 1 lines 8-10: trimap(CNN, R̂) + GrabCut, "
                                                      "fallback CNN ∩ R̂ / ignore", "created": now()}
        stats = build_slice_dataset(self.base_raw, target, self.slices_dir, labels, self.slice_rows(),
                                    read_json(split_file) if split_file.exists() else None, provenance)
        stats["beyond_reach"] = len(beyond)
        if truth is not None:
            stats["label_dice_per_offset"] = per_offset_mean(scores)
        self.say(f"  {target.name}: {stats['key_cases']} key cases + {stats['slices']} slices "
                 f"(per offset {stats['per_offset']}), status {stats['label_status']}, "
                 f"{len(beyond)} beyond the lesion's reach")
        return {"dataset": entry["dataset_name"], "labels": stats}

    def _preprocess(self, m: int) -> dict:
        info = super()._preprocess(m)
        raw_split = self.paths.raw / self.dataset_name(m) / "splits_final.json"
        if raw_split.exists():  # the base split extended to the slices (labels.extended_splits)
            self.paths.install_splits(self.dataset_name(m), raw_split, overwrite=True)
        return info

    def _test(self, m: int) -> dict:
        out = self.work / f"round{m}" / "test_predictions"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        self.backend.predict(self.dataset_name(m), self.cfg.folds, self.test_input(), out)
        rows = [key_slice_row(r, "key") for r in sorted(self.rows.values(), key=lambda r: r.case)
                if r.split == "test"]
        wanted = set(self.reach_cases(self.cfg.reach, True))
        rows += [r for r in self.slice_rows() if r.case in wanted]
        missing = [r.case for r in rows if not (out / f"{r.case}{self.ending}").exists()]
        if missing:
            raise RefineError(f"nnUNetv2_predict left {len(missing)} test slice(s) unpredicted in {out}: "
                              f"{', '.join(missing[:5])}")
        write_slices(out / SLICES_FILE, sorted(rows, key=lambda r: (r.key_case, r.offset)))
        info = {"predictions": Path(os.path.relpath(out, self.work)).as_posix(), "slices": len(rows)}
        truth = self._truth()
        if truth is not None:
            info["dice_per_offset"] = per_offset_mean(
                (r.offset, slice_dice(read_crop(out / f"{r.case}{self.ending}"), self.rows[r.key_case], r.offset,
                                      truth)) for r in rows)
        return info

    def _truth(self) -> SliceTruth | None:
        """``--truth``'s true masks (a make-sample folder), or None."""
        return None if self.cfg.truth is None else SliceTruth(self.cfg.truth)

    # -- report ------------------------------------------------------------------------
    def report(self) -> dict:
        from nnunet_ulseg.propagate.report import build_report, format_report

        report = build_report(self.manifest.data)
        write_json_atomic(self.work / REPORT, report)
        self.say(format_report(report))
        return report

