"""One nnU-Net dataset in its own nnU-Net folders, driven through nnU-Net's commands.

The steps shared by ``ulseg demo``, the benchmarks and the refinement rounds: convert a
DeepLesion-format folder, plan and preprocess, train a trainer on a fold, predict a
folder.  Each step is the real ``nnUNetv2_*`` command (see :mod:`.nnunet`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnunet_ulseg.workflow.nnunet import NNUNetPaths, default_device


@dataclass
class Experiment:
    """``dataset_id``/``dataset_name`` inside ``paths``; logs to ``log``; echoes progress with ``echo``."""

    paths: NNUNetPaths
    dataset_id: int
    dataset_name: str
    log: Path
    device: str = field(default_factory=default_device)
    num_processes: int = 2
    echo: Callable[[str], None] | None = print

    def backend(self, trainer: str = "", configuration: str = "2d", tta: bool = True):
        """The command runner (shared with ``ulseg refine``) for ``trainer`` on this dataset's folders."""
        from nnunet_ulseg.refine.backend import NNUNetBackend

        return NNUNetBackend(self.paths, configuration, trainer, "nnUNetPlans", self.device, self.num_processes,
                             self.log, tta=tta, echo=self.echo)

    @property
    def raw(self) -> Path:
        return self.paths.raw / self.dataset_name

    def results(self, trainer: str, fold: int | str = 0, plans: str = "nnUNetPlans",
                configuration: str = "2d") -> Path:
        return self.paths.fold_dir(self.dataset_name, trainer, plans, configuration, fold)

    def convert(self, deeplesion_dir: Path, progress: bool = True, **kwargs):
        """Convert a DeepLesion-format folder into this dataset; install its split as fold 0."""
        from nnunet_ulseg.conversion.deeplesion import convert_deeplesion

        result = convert_deeplesion(deeplesion_dir, self.raw, num_processes=self.num_processes,
                                    progress=progress, **kwargs)
        self.install_splits()
        return result

    def install_splits(self) -> str:
        """Copy the raw dataset's ``splits_final.json`` to where nnU-Net reads it.

        It replaces whatever split is there: :meth:`convert` has just rewritten the raw
        dataset these folders hold, so an older split would name cases that are gone.
        """
        return self.paths.install_splits(self.dataset_name, overwrite=True)

    def plan_and_preprocess(self, configuration: str = "2d") -> None:
        self.backend(configuration=configuration).plan_and_preprocess(self.dataset_name)

    def train(self, trainer: str, fold: int = 0, configuration: str = "2d") -> None:
        self.backend(trainer, configuration).train(self.dataset_name, fold)

    def predict(self, trainer: str, input_dir: Path, output_dir: Path, fold: int = 0,
                configuration: str = "2d", tta: bool = True) -> None:
        """``nnUNetv2_predict``; mirroring TTA unless ``tta`` is False (nnU-Net's default, ``--disable_tta``)."""
        self.backend(trainer, configuration, tta).predict(self.dataset_name, [fold], input_dir, output_dir)
