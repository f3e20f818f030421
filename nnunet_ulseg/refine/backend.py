"""The nnU-Net commands a refinement round runs, the plans transfer between rounds, and the check
that a checkpoint nnU-Net wrote can be loaded by nnU-Net's predictor.

Every training, preprocessing and prediction is the real ``nnUNetv2_*`` command (run by
:func:`nnunet_ulseg.workflow.nnunet.run_command`), exactly as a user would type it, so
nnU-Net's DDP training and multi-machine prediction keep working.  The orchestration in
:mod:`.rounds` only calls the methods of :class:`NNUNetBackend`; tests swap in a fake
with the same methods.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from nnunet_ulseg.refine.labels import dataset_id_of
from nnunet_ulseg.refine.manifest import read_json, write_json_atomic
from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script, run_command


#: What ``nnUNetPredictor.initialize_from_trained_model_folder`` reads from every fold's checkpoint
#: (nnunetv2 2.8 ``inference/predict_from_raw_data.py``): the trainer class to rebuild the
#: network with, its configuration (``init_args['configuration']``) and the weights.
CHECKPOINT_KEYS = ("network_weights", "trainer_name", "init_args")

#: Suffix of a checkpoint set aside because it cannot be loaded.
CORRUPT_SUFFIX = ".corrupt"


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why nnU-Net could not predict with the checkpoint ``path``, or None if it can.

    A training killed while ``torch.save`` wrote ``checkpoint_final.pth`` (nnU-Net writes
    it in place, not through a temporary file) leaves a file that exists but is cut short;
    only loading it tells.  It is loaded as nnU-Net's predictor loads it
    (``torch.load(map_location="cpu", weights_only=False)``: the checkpoint pickles the
    trainer's init arguments, which ``weights_only`` refuses) and must hold
    :data:`CHECKPOINT_KEYS`, with ``init_args`` naming the configuration.  This reads the
    whole file (a few hundred MB for a large network), once per training step.  An
    :class:`ImportError` while unpickling is a problem of this environment, not of the
    file, and is raised, never reported as a broken checkpoint.
    """
    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except ImportError:
        raise
    except Exception as exc:  # truncated zip, bad pickle, EOF, I/O error: all mean "not loadable"
        return f"{path} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not isinstance(checkpoint, dict):
        return f"{path} cannot be loaded as an nnU-Net checkpoint (it holds a {type(checkpoint).__name__}, not a dict)"
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        return f"{path} is not a complete nnU-Net checkpoint: it lacks {', '.join(missing)}"
    init_args = checkpoint["init_args"]
    if not isinstance(init_args, dict) or "configuration" not in init_args:
        return f"{path} is not a complete nnU-Net checkpoint: init_args names no configuration"
    return None


def set_aside(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """Move ``path`` to ``<folder>/<name>.corrupt`` (``.corrupt.1``, ... if taken); return the new path.

    ``folder`` defaults to the file's own folder.  A broken checkpoint is kept, never deleted:
    it is the evidence of what went wrong, and the user may still want it.
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / f"{path.name}{CORRUPT_SUFFIX}", 0
    while target.exists():
        n += 1
        target = folder / f"{path.name}{CORRUPT_SUFFIX}.{n}"
    try:
        os.replace(path, target)
    except OSError:  # another file system: copy, then remove
        shutil.move(str(path), str(target))
    return target


def transfer_plans(preprocessed_root: str | os.PathLike, source: str, target: str,
                   plans_identifier: str = "nnUNetPlans") -> Path:
    """Copy ``source``'s plans to ``target`` (both dataset folder names); return the file written.

    What ``nnUNetv2_move_plans_between_datasets -s SOURCE -t TARGET -sp P -tp P`` writes,
    the source plans with ``dataset_name`` set to the target, so every configuration
    (patch size, spacing, normalisation intensities of round 1's fingerprint, ...) is
    identical, with one difference: nnU-Net 2.8 re-detects ``image_reader_writer`` on a
    target image with ``allow_nonmatching_filename=True``, which tries ``NaturalImage2DIO``
    first; it opens our 2D ``.mha`` files and would replace round 1's ``SimpleITKIO`` with a
    reader that ignores the file's spacing (``999, 1, 1``).  Refinement rounds use round 1's
    very image files, so we keep round 1's reader.  Done in-process, which also avoids
    that entry point's need for ``nnUNet_preprocessed`` at import time.
    """
    root = Path(preprocessed_root)
    source_file = root / source / f"{plans_identifier}.json"
    if not source_file.exists():
        raise FileNotFoundError(f"plans {source_file} not found: plan and preprocess {source} first")
    plans = read_json(source_file)
    plans["dataset_name"] = target
    out = root / target / f"{plans_identifier}.json"
    write_json_atomic(out, plans)
    return out


@dataclass
class NNUNetBackend:
    """Runs nnU-Net's commands for ``ulseg refine`` in ``paths``; output goes to ``log``.

    The one place that builds nnU-Net command lines: :class:`~nnunet_ulseg.workflow.experiment.Experiment`
    (demo, benchmarks) delegates here too.  Beyond plan/train/predict it covers what
    refinement needs (``-p``, ``-pretrained_weights``, ``-chk``, several folds,
    ``-num_parts/-part_id``).  ``num_processes`` also bounds nnU-Net's own worker pools:
    ``-npfp`` for the fingerprint, and ``nnUNet_def_n_proc`` (unless the user set it), the
    pool that exports the final validation of every training; nnU-Net's default of 8
    spawned processes costs minutes per training on a 2-core machine.
    """

    paths: NNUNetPaths
    configuration: str
    trainer: str
    plans: str
    device: str
    num_processes: int
    log: Path
    checkpoint: str = "checkpoint_final.pth"
    #: mirroring TTA, on unless False (nnUNetv2_predict's default; False adds --disable_tta)
    tta: bool = True
    echo: Callable[[str], None] | None = print
    num_gpus: int = 1

    @property
    def env(self) -> dict[str, str]:
        return self.paths.environ(num_processes=self.num_processes)

    def _run(self, args: list[str]) -> None:
        run_command(args, self.env, self.log, self.echo)

    def plan_and_preprocess(self, dataset: str) -> None:
        """``nnUNetv2_plan_and_preprocess -d ID -c CFG -np N -npfp N --verify_dataset_integrity`` (round 1 only)."""
        n = str(self.num_processes)
        self._run([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id_of(dataset)),
                   "-c", self.configuration, "-np", n, "-npfp", n, "--verify_dataset_integrity"])

    def preprocess(self, dataset: str) -> None:
        """``nnUNetv2_preprocess -d ID -plans_name PLANS -c CFG -np N`` with plans already in place."""
        self._run([console_script("nnUNetv2_preprocess"), "-d", str(dataset_id_of(dataset)),
                   "-plans_name", self.plans, "-c", self.configuration, "-np", str(self.num_processes)])

    def train(self, dataset: str, fold: int, pretrained: Path | None = None) -> None:
        """``nnUNetv2_train ID CFG FOLD -tr TRAINER -p PLANS -device D [-num_gpus G] [-pretrained_weights CKPT]``.

        ``-num_gpus`` > 1 is nnU-Net's own DDP training.
        """
        args = [console_script("nnUNetv2_train"), str(dataset_id_of(dataset)), self.configuration, str(fold),
                "-tr", self.trainer, "-p", self.plans, "-device", self.device]
        if self.num_gpus > 1:
            args += ["-num_gpus", str(self.num_gpus)]
        if pretrained is not None:
            args += ["-pretrained_weights", str(pretrained)]
        self._run(args)

    def predict(self, dataset: str, folds: Sequence[int], input_dir: Path, output_dir: Path,
                num_parts: int = 1, part_id: int = 0, save_probabilities: bool = False) -> None:
        """``nnUNetv2_predict`` of ``input_dir`` with the model (ensemble) of ``folds``.

        ``save_probabilities`` adds ``--save_probabilities`` (a ``<case>.npz`` with the softmax
        beside each segmentation; ``ulseg propagate`` builds its trimaps from it).

        Mirroring TTA is on unless ``tta`` is False, as in nnUNetv2_predict (on a 2D model it
        is 4 forward passes per patch: callers that need speed or comparability pass False).
        """
        args = [console_script("nnUNetv2_predict"), "-i", str(input_dir), "-o", str(output_dir),
                "-d", str(dataset_id_of(dataset)), "-c", self.configuration, "-f", *[str(f) for f in folds],
                "-tr", self.trainer, "-p", self.plans, "-chk", self.checkpoint, "-device", self.device,
                "-npp", str(self.num_processes), "-nps", str(self.num_processes)]
        if not self.tta:
            args.append("--disable_tta")
        if save_probabilities:
            args.append("--save_probabilities")
        if num_parts > 1:
            args += ["-num_parts", str(num_parts), "-part_id", str(part_id)]
        self._run(args)
