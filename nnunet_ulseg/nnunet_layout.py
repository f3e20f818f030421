"""nnU-Net v2's folder layout, written down once: the one module every floor asks.

What nnU-Net 2.8 expects on disk and in the environment (its ``paths.py``,
``utilities/file_path_utilities.py``, ``utilities/dataset_name_id_conversion.py`` and the
dataset format documentation), and where this plugin looks for its own trainers:

* the environment variables ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``
  (:class:`NNUNetPaths`) and ``nnUNet_extTrainer`` (:func:`trainers_dir`);
* dataset folders ``Dataset<id:03d>_<Name>`` (:func:`dataset_folder_name`,
  :func:`parse_dataset_name`, :func:`find_dataset`);
* raw datasets (:class:`RawDataset`): ``dataset.json`` with its ``file_ending``,
  ``imagesTr/<case>_<channel:04d><file_ending>``, ``labelsTr/<case><file_ending>``,
  ``imagesTs``; ``splits_final.json`` is read from ``nnUNet_preprocessed/<dataset>/``
  (:meth:`NNUNetPaths.splits_file`, :meth:`NNUNetPaths.install_splits`);
* results: ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_<f>``,
  ``fold_all`` for ``-f all`` (:meth:`NNUNetPaths.model_dir`, :meth:`NNUNetPaths.fold_dir`).

Floor 1: standard library only, nothing from torch or nnunetv2, so conversion,
evaluation, refine and workflow can all import it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

logger = logging.getLogger("nnunet_ulseg")

#: nnU-Net's three folders, in :class:`NNUNetPaths` field order.
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: The variable nnU-Net searches for trainers outside its own tree (os.pathsep-separated).
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
#: Optional override of the trainers folder for ``ulseg`` itself (kept for existing setups).
TRAINERS_OVERRIDE_VARIABLE = "ULSEG_TRAINERS_DIR"
#: A file only our trainers folder has: how a folder in ``nnUNet_extTrainer`` is recognised as ours.
TRAINERS_MARKER = "nnUNetTrainerAHRNet.py"

DATASET_JSON = "dataset.json"
SPLITS_FILE = "splits_final.json"
DEFAULT_PLANS = "nnUNetPlans"
IMAGES_TR, LABELS_TR, IMAGES_TS = "imagesTr", "labelsTr", "imagesTs"

#: ``Dataset<id>_<name>``; nnU-Net writes the id with at least three digits.
DATASET_NAME = re.compile(r"Dataset(\d{3,})_(.+)")
#: ``<case>_<channel:04d>`` once the file ending is removed (nnU-Net strips exactly 5 characters).
IMAGE_STEM = re.compile(r"(.+)_(\d{4})")


class NNUNetEnvironmentError(ValueError):
    """nnU-Net's environment variables are missing; the message names them."""


# -- dataset names ---------------------------------------------------------------------
def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<id:03d>_<name>``, the folder name nnU-Net finds a dataset id by."""
    dataset_id = int(dataset_id)
    if not 0 < dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1-999, got {dataset_id}")
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"invalid dataset name {name!r}: it must be non-empty and hold no path separator")
    return f"Dataset{dataset_id:03d}_{name}"


def parse_dataset_name(folder_name: str) -> tuple[int, str]:
    """``(id, name)`` of ``Dataset<id>_<name>``; ``ValueError`` for anything else."""
    m = DATASET_NAME.fullmatch(str(folder_name))
    if not m:
        raise ValueError(f"{folder_name!r} is not an nnU-Net dataset name (DatasetNNN_Name)")
    return int(m.group(1)), m.group(2)


def dataset_ids(roots: Iterable[str | os.PathLike]) -> set[int]:
    """Ids of every ``DatasetNNN_*`` entry in any of ``roots`` (missing roots are skipped)."""
    ids = set()
    for root in map(Path, roots):
        if root.is_dir():
            for p in root.iterdir():
                m = DATASET_NAME.fullmatch(p.name)
                if m:
                    ids.add(int(m.group(1)))
    return ids


def find_dataset(roots: str | os.PathLike | Iterable[str | os.PathLike], dataset: int | str) -> str:
    """The folder name of ``dataset`` (an id such as 501 / "501", or a full name) in ``roots``.

    An id is looked up the way nnU-Net's ``maybe_convert_to_dataset_name`` does: every
    ``Dataset<id:03d>_*`` folder in the roots; none or several different names is an
    error.  A full name must exist as a folder in one of the roots.
    """
    roots = [Path(roots)] if isinstance(roots, (str, os.PathLike)) else [Path(r) for r in roots]
    where = ", ".join(map(str, roots))
    text = str(dataset)
    if text.isdigit():
        matches = sorted({p.name for r in roots for p in r.glob(f"Dataset{int(text):03d}_*") if p.is_dir()})
        if not matches:
            raise FileNotFoundError(f"no dataset with id {int(text)} in {where}")
        if len(matches) > 1:
            raise ValueError(f"several datasets with id {int(text)} in {where}: {', '.join(matches)}")
        return matches[0]
    parse_dataset_name(text)
    if not any((r / text).is_dir() for r in roots):
        raise FileNotFoundError(f"dataset {text} not found in {where}")
    return text


# -- results ---------------------------------------------------------------------------
def model_folder_name(trainer: str, plans: str = DEFAULT_PLANS, configuration: str = "2d") -> str:
    """``<trainer>__<plans>__<configuration>`` (nnU-Net's ``convert_trainer_plans_config_to_identifier``)."""
    for what, value in (("trainer", trainer), ("plans", plans), ("configuration", configuration)):
        if not value or "__" in value or "/" in value:
            raise ValueError(f"invalid {what} {value!r} for an nnU-Net results folder name")
    return f"{trainer}__{plans}__{configuration}"


def fold_folder_name(fold: int | str) -> str:
    """``fold_<f>``; ``fold_all`` for nnU-Net's ``-f all`` (train on every case)."""
    if str(fold) == "all":
        return "fold_all"
    if not str(fold).isdigit():
        raise ValueError(f"fold must be a non-negative integer or 'all', got {fold!r}")
    return f"fold_{int(fold)}"


# -- trainers --------------------------------------------------------------------------
def _is_trainers_folder(folder: Path) -> bool:
    return (folder / TRAINERS_MARKER).is_file()


def trainers_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding our trainers, to put into ``nnUNet_extTrainer``.

    Looked for, in this order (``environ`` defaults to this process' environment):

    1. ``ULSEG_TRAINERS_DIR``, when set (an explicit override; it must hold our trainers);
    2. the first folder of the user's ``nnUNet_extTrainer`` that holds our trainers, so
       the one variable nnU-Net needs is also the one ``ulseg`` honours;
    3. ``trainers/`` at the top of the source tree (a checkout, ``pip install -e .``);
    4. the copy shipped inside the installed package, ``nnunet_ulseg/trainers``
       (``pip install .``; see ``setup.py``).

    A folder counts as ours when it holds ``nnUNetTrainerAHRNet.py``.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(TRAINERS_OVERRIDE_VARIABLE)
    if override:
        if not _is_trainers_folder(Path(override)):
            raise FileNotFoundError(f"{TRAINERS_OVERRIDE_VARIABLE}={override} is not a folder holding "
                                    f"nnunet-ulseg's trainers (no {TRAINERS_MARKER}); unset it or fix it")
        return Path(override)
    for entry in (environ.get(EXT_TRAINER_VARIABLE) or "").split(os.pathsep):
        if entry.strip() and _is_trainers_folder(Path(entry)):
            return Path(entry)
    package = Path(__file__).resolve().parent
    candidates = (package.parent / "trainers", package / "trainers")
    for candidate in candidates:
        if _is_trainers_folder(candidate):
            return candidate
    raise FileNotFoundError(
        "nnunet-ulseg's trainers folder not found: looked in nnUNet_extTrainer="
        f"{environ.get(EXT_TRAINER_VARIABLE, '')!r} and at {', '.join(map(str, candidates))}. "
        "Reinstall nnunet-ulseg (pip install .) or point nnUNet_extTrainer at its trainers/ folder")


# -- raw datasets ----------------------------------------------------------------------
def read_json_file(path: str | os.PathLike):
    """Parsed JSON of ``path``; a missing file is ``FileNotFoundError``, bad JSON a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


class RawDataset:
    """One nnU-Net raw dataset folder ``nnUNet_raw/DatasetNNN_Name``.

    ``file_ending`` is read from ``dataset.json`` unless given (a converter writes the
    images before ``dataset.json``, which it writes last).
    """

    def __init__(self, path: str | os.PathLike, file_ending: str | None = None):
        self.path = Path(path)
        self._file_ending = file_ending
        self._dataset_json: dict | None = None

    def __repr__(self) -> str:
        return f"RawDataset({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def id(self) -> int:
        """The dataset id (``ValueError`` when the folder is not named ``DatasetNNN_Name``)."""
        return parse_dataset_name(self.name)[0]

    @property
    def dataset_json_file(self) -> Path:
        return self.path / DATASET_JSON

    @property
    def dataset_json(self) -> dict:
        """``dataset.json`` (read once)."""
        if self._dataset_json is None:
            data = read_json_file(self.dataset_json_file)
            if not isinstance(data, dict):
                raise ValueError(f"{self.dataset_json_file}: expected a JSON object")
            self._dataset_json = data
        return self._dataset_json

    @property
    def file_ending(self) -> str:
        if self._file_ending is not None:
            return self._file_ending
        ending = self.dataset_json.get("file_ending")
        if not isinstance(ending, str) or not ending:
            raise ValueError(f"{self.dataset_json_file}: no 'file_ending' (nnU-Net needs it, e.g. \".mha\")")
        return ending

    @property
    def splits_file(self) -> Path:
        """The raw folder's copy of the split (converters write one; nnU-Net reads the preprocessed one)."""
        return self.path / SPLITS_FILE

    def images_dir(self, test: bool = False) -> Path:
        return self.path / (IMAGES_TS if test else IMAGES_TR)

    @property
    def labels_dir(self) -> Path:
        return self.path / LABELS_TR

    def image_path(self, case: str, channel: int = 0, test: bool = False) -> Path:
        """``imagesTr/<case>_<channel:04d><file_ending>`` (``imagesTs`` with ``test``)."""
        return self.images_dir(test) / image_filename(case, self.file_ending, channel)

    def label_path(self, case: str) -> Path:
        """``labelsTr/<case><file_ending>``."""
        return self.labels_dir / f"{case}{self.file_ending}"

    def case_from_filename(self, filename: str, channel: bool = True) -> str:
        """The case id of an image file name ``<case>_XXXX<file_ending>`` (``channel=False``:
        a label or prediction ``<case><file_ending>``); ``ValueError`` for other names."""
        return case_from_filename(filename, self.file_ending, channel)

    def cases(self, test: bool = False) -> list[str]:
        """Sorted case ids of ``imagesTr`` (``imagesTs``), one per case whatever its channel count."""
        folder = self.images_dir(test)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found")
        ending = self.file_ending
        found = set()
        for p in folder.iterdir():
            try:
                found.add(case_from_filename(p.name, ending))
            except ValueError:
                continue
        return sorted(found)

    dataset_folder_name = staticmethod(dataset_folder_name)


def image_filename(case: str, file_ending: str, channel: int = 0) -> str:
    """``<case>_<channel:04d><file_ending>``, nnU-Net's image file name."""
    if not 0 <= int(channel) <= 9999:
        raise ValueError(f"channel must be 0-9999, got {channel}")
    return f"{case}_{int(channel):04d}{file_ending}"


def case_from_filename(filename: str, file_ending: str, channel: bool = True) -> str:
    """Inverse of :func:`image_filename` (``channel=False``: of ``<case><file_ending>``)."""
    name = Path(filename).name
    if not name.endswith(file_ending) or len(name) == len(file_ending):
        raise ValueError(f"{filename!r} does not end with the dataset's file ending {file_ending!r}")
    stem = name[: -len(file_ending)]
    if not channel:
        return stem
    m = IMAGE_STEM.fullmatch(stem)
    if not m:
        raise ValueError(f"{filename!r} is not an nnU-Net image name <case>_XXXX{file_ending}")
    return m.group(1)


# -- the three folders -----------------------------------------------------------------
@dataclass(frozen=True)
class NNUNetPaths:
    """The three folders nnU-Net works in, and where each dataset, split and model lies in them."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: str | os.PathLike) -> "NNUNetPaths":
        """``<root>/nnUNet_raw``, ``<root>/nnUNet_preprocessed``, ``<root>/nnUNet_results``."""
        root = Path(root)
        return cls(*(root / v for v in NNUNET_VARIABLES))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "NNUNetPaths":
        """The user's folders from ``nnUNet_raw/_preprocessed/_results``; an error naming any unset one."""
        environ = os.environ if environ is None else environ
        missing = [v for v in NNUNET_VARIABLES if not environ.get(v)]
        if missing:
            raise NNUNetEnvironmentError(f"set {', '.join(missing)} (nnU-Net's raw, preprocessed and results "
                                         "folders)")
        return cls(*(Path(environ[v]) for v in NNUNET_VARIABLES))

    def create(self) -> "NNUNetPaths":
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def environ(self, base: Mapping[str, str] | None = None, num_processes: int | None = None) -> dict[str, str]:
        """``base`` (default: this process' environment) plus nnU-Net's variables.

        ``nnUNet_extTrainer`` gets our trainers folder (:func:`trainers_dir`, looked up in
        ``base``) first, then whatever the user already has there.  With
        ``num_processes``, nnU-Net's worker pools are bounded by it unless the user set
        them: ``nnUNet_n_proc_DA`` (data-augmentation workers per training; nnU-Net's
        default is sized for its own GPU servers) and ``nnUNet_def_n_proc`` (8 processes
        export every training's final validation).  On a 2-core machine their defaults
        cost minutes per training.
        """
        env = dict(os.environ if base is None else base)
        if num_processes is not None:
            env.setdefault("nnUNet_n_proc_DA", str(num_processes))
            env.setdefault("nnUNet_def_n_proc", str(num_processes))
        extra = [str(trainers_dir(env))]
        if env.get(EXT_TRAINER_VARIABLE):
            extra += [p for p in env[EXT_TRAINER_VARIABLE].split(os.pathsep) if p and p not in extra]
        for variable, folder in zip(NNUNET_VARIABLES, (self.raw, self.preprocessed, self.results)):
            env[variable] = str(folder)
        env[EXT_TRAINER_VARIABLE] = os.pathsep.join(extra)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- datasets ------------------------------------------------------------------------
    def dataset_name(self, dataset: int | str) -> str:
        """``DatasetNNN_Name`` of ``dataset``: a full name as given (validated), an id looked up
        in the three folders like nnU-Net does (:func:`find_dataset`)."""
        text = str(dataset)
        if text.isdigit():
            return find_dataset([self.raw, self.preprocessed, self.results], text)
        parse_dataset_name(text)
        return text

    def raw_dataset(self, dataset: int | str) -> RawDataset:
        return RawDataset(self.raw / self.dataset_name(dataset))

    def preprocessed_dataset(self, dataset: int | str) -> Path:
        return self.preprocessed / self.dataset_name(dataset)

    def results_dataset(self, dataset: int | str) -> Path:
        return self.results / self.dataset_name(dataset)

    def model_dir(self, dataset: int | str, trainer: str, plans: str = DEFAULT_PLANS,
                  configuration: str = "2d") -> Path:
        """``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``."""
        return self.results_dataset(dataset) / model_folder_name(trainer, plans, configuration)

    def fold_dir(self, dataset: int | str, trainer: str, plans: str = DEFAULT_PLANS, configuration: str = "2d",
                 fold: int | str = 0) -> Path:
        """``<model_dir>/fold_<fold>`` (``fold_all`` for ``"all"``), where ``nnUNetv2_train`` writes."""
        return self.model_dir(dataset, trainer, plans, configuration) / fold_folder_name(fold)

    def splits_file(self, dataset: int | str) -> Path:
        """``nnUNet_preprocessed/<dataset>/splits_final.json``, the split nnU-Net trains with."""
        return self.preprocessed_dataset(dataset) / SPLITS_FILE

    def install_splits(self, dataset: int | str, source: str | os.PathLike | None = None,
                       overwrite: bool = False) -> str:
        """Copy a split to :meth:`splits_file`; ``source`` defaults to the raw dataset's own.

        Returns what happened: ``"installed"`` (there was none), ``"unchanged"`` (the same
        split is already there), ``"replaced"`` (``overwrite``) or ``"kept"``: a different
        split is already installed and ``overwrite`` is off, so it is left as it is (it may
        be the user's own) and a warning names both files.
        """
        source = Path(source) if source is not None else self.raw_dataset(dataset).splits_file
        return install_splits_file(source, self.splits_file(dataset), overwrite)


def install_splits_file(source: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False) -> str:
    """Copy the split ``source`` to ``target`` unless a different split is there; see
    :meth:`NNUNetPaths.install_splits` for the statuses returned."""
    source, target = Path(source), Path(target)
    splits = read_json_file(source)
    if not isinstance(splits, list) or not all(isinstance(f, dict) for f in splits):
        raise ValueError(f"{source}: expected a list of folds {{\"train\": [...], \"val\": [...]}}")
    status = "installed"
    if target.exists():
        try:
            same = read_json_file(target) == splits
        except ValueError:
            same = False
        if same:
            return "unchanged"
        if not overwrite:
            logger.warning("%s already holds a different split; it is kept (delete it to install %s)",
                           target, source)
            return "kept"
        status = "replaced"
    target.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process and thread only: two coordinators may install the same split at once
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(json.dumps(splits, indent=1), encoding="utf-8")
    os.replace(partial, target)
    return status
