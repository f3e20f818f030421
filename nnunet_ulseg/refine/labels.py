"""Round r+1 as a new nnU-Net raw dataset: linked images, updated pseudo masks (AHRNet Sec. 2.3).

"Based on the prediction p from the trained model and the fitted ellipse e, we further
construct an updated pseudo mask g' by setting p ∩ e as the foreground, p ∪ e − p ∩ e
as the ignored region, and the rest as the background.  With the updated pseudo masks,
we can retrain the model using the same way described above."  The rule itself is
:func:`nnunet_ulseg.pseudo_masks.update.update_pseudo_mask`; this module turns it into
a dataset nnU-Net can plan, preprocess and train on.

Choices where the paper is silent:

* ``e`` is always the round-1 ellipse (round 1's ``labelsTr/<case> == 1``), never the
  previous round's foreground: the RECIST mark is the only evidence, and taking the
  intersection with an already shrunk mask would let the foreground only ever shrink.
* Images are not copied: every file of round 1's ``imagesTr``, ``imagesTs`` and
  ``pseudolabelsTs`` is a *relative* symbolic link to round 1's file (so moving the
  whole ``nnUNet_raw`` folder keeps the links valid); where the file system refuses
  symbolic links we fall back to hard links, then to copies, and report which.
* The dataset is written into ``.<name>.partial`` next to its final place and renamed
  at the end, so nnU-Net never sees half a dataset.
* Round r+1's dataset id: the first id not used in ``nnUNet_raw``, ``nnUNet_preprocessed``
  or ``nnUNet_results`` in ``base + 100 r, base + 100 r + 1, ..., 999``, then
  ``1, 2, ...`` (e.g. 501 -> 601 -> 701), and not reserved by another refinement run;
  its name is ``Dataset<id>_<base name>_round<r+1>``.
* Ids are reserved, atomically, before anything is built: coordinators of different folds
  (or of different datasets) may run at the same time, and "the first free id" seen by two
  of them at once is the same id.  A reservation is the file
  ``nnUNet_raw/.ulseg_dataset_ids/<id>.json``, created with a hard link from a complete
  temporary file (creation fails if the file exists, and nobody ever sees it half
  written), naming its owner: the run's work folder below ``nnUNet_results`` and the
  round.  The coordinator records the id in its manifest only after the reservation is
  its own, and checks on every start that each id its manifest records is still
  reserved for it, so a run whose manifest names another run's id (left by a version
  without reservations) stops instead of rebuilding that run's dataset.  We reserve ids
  rather than make the folds of one dataset share one coordinator: one coordinator per
  work folder keeps each fold's run independent (different machines, one fold resumed
  while another trains), and ids must not collide across datasets either.  A
  reservation stays after its run ends; the ids it holds are skipped, which costs
  nothing, and deleting the file frees its id.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import SimpleITK as sitk

from nnunet_ulseg import nnunet_layout as layout
from nnunet_ulseg.nnunet_layout import parse_dataset_name
from nnunet_ulseg.pseudo_masks.update import IGNORE, binarize_prediction, update_pseudo_mask
from nnunet_ulseg.refine.manifest import write_json_atomic

logger = logging.getLogger("nnunet_ulseg.refine")

MAX_DATASET_ID = 999


# -- datasets and ids (nnU-Net's naming lives in nnunet_ulseg.nnunet_layout) ----------------
def dataset_id_of(name: str) -> int:
    """The id of an nnU-Net dataset folder name ``DatasetNNN_Name``."""
    return parse_dataset_name(name)[0]


def find_dataset(raw_root: str | os.PathLike, dataset: int | str) -> str:
    """The folder name in ``raw_root`` of dataset ``dataset`` (an id such as 501 or "501", or a full name)."""
    return layout.find_dataset(raw_root, dataset)


def used_dataset_ids(roots: Iterable[str | os.PathLike]) -> set[int]:
    """Ids of every ``DatasetNNN_*`` entry in any of ``roots`` (missing roots are skipped)."""
    return layout.dataset_ids(roots)


def candidate_dataset_ids(base_id: int, round_index: int) -> list[int]:
    """Ids tried for the dataset of round ``round_index + 1``, in order (see the module docstring)."""
    start = base_id + 100 * round_index
    return [*range(start, MAX_DATASET_ID + 1), *range(1, min(start, MAX_DATASET_ID + 1))]


def next_round_dataset_id(base_id: int, round_index: int, used: set[int]) -> int:
    """Id for the dataset of round ``round_index + 1`` (see the module docstring), without reserving it."""
    for candidate in candidate_dataset_ids(base_id, round_index):
        if candidate not in used:
            return candidate
    raise ValueError("no free nnU-Net dataset id left (1-999)")


# -- id reservations (several coordinators at once) -------------------------------------------
RESERVATIONS = ".ulseg_dataset_ids"
#: The fields of a reservation that say whose it is.
OWNER_KEYS = ("work_dir", "round")


def reservation_file(raw_root: str | os.PathLike, dataset_id: int) -> Path:
    """``nnUNet_raw/.ulseg_dataset_ids/<id>.json``, the reservation of ``dataset_id``."""
    return Path(raw_root) / RESERVATIONS / f"{dataset_id:03d}.json"


def read_reservation(raw_root: str | os.PathLike, dataset_id: int) -> dict | None:
    """The reservation of ``dataset_id`` (None if there is none; ``{}`` if it cannot be read)."""
    try:
        data = json.loads(reservation_file(raw_root, dataset_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_owner(reservation: dict | None, owner: dict) -> bool:
    """True if ``reservation`` was made by ``owner`` (same work folder and round)."""
    return reservation is not None and all(reservation.get(k) == owner[k] for k in OWNER_KEYS)


def claim_dataset_id(raw_root: str | os.PathLike, dataset_id: int, owner: dict) -> bool:
    """Reserve ``dataset_id`` for ``owner`` unless another holds it; True if it is now ``owner``'s.

    ``owner`` holds :data:`OWNER_KEYS` (and may hold more, e.g. the dataset name, which is
    recorded).  The reservation is created atomically (a hard link of a complete temporary
    file onto the reservation's name fails if that name exists); an earlier reservation by
    the same owner counts as its own, so a run killed between reserving and recording the
    id takes the same id again.
    """
    target = reservation_file(raw_root, dataset_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {**owner, "dataset_id": dataset_id, "host": socket.gethostname(), "pid": os.getpid(),
              "reserved": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    try:
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return is_owner(read_reservation(raw_root, dataset_id), owner)
        except OSError:  # no hard links on this file system: an exclusive create, then the content
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return is_owner(read_reservation(raw_root, dataset_id), owner)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(tmp.read_text(encoding="utf-8"))
            return True
    finally:
        tmp.unlink(missing_ok=True)


def reserve_round_dataset_id(raw_root: str | os.PathLike, roots: Iterable[str | os.PathLike], base_id: int,
                             round_index: int, owner: dict) -> int:
    """Reserve and return the id of round ``round_index + 1``'s dataset for ``owner``.

    The first candidate (:func:`candidate_dataset_ids`) that no ``DatasetNNN_*`` entry in
    ``roots`` uses and that :func:`claim_dataset_id` gets for ``owner``.
    """
    used = used_dataset_ids(roots)
    for candidate in candidate_dataset_ids(base_id, round_index):
        if candidate not in used and claim_dataset_id(raw_root, candidate, owner):
            return candidate
    raise ValueError("no free nnU-Net dataset id left (1-999)")


def round_dataset_name(dataset_id: int, base_name: str, round_number: int) -> str:
    """``Dataset<id>_<base name without its DatasetNNN_ prefix>_round<r>``."""
    m = layout.DATASET_NAME.fullmatch(base_name)
    stem = m.group(2) if m else base_name
    return layout.dataset_folder_name(dataset_id, f"{stem}_round{round_number}")


def training_cases(raw_dir: str | os.PathLike) -> list[str]:
    """Sorted case ids of a raw dataset's ``imagesTr`` (``<case>_XXXX<file_ending>``), each with a label.

    The same identifiers nnU-Net trains on and ``nnUNetv2_predict`` reads from a folder.
    """
    dataset = layout.RawDataset(raw_dir)
    cases = dataset.cases()
    if not cases:
        raise ValueError(f"{dataset.images_dir()} holds no <case>_0000{dataset.file_ending} images")
    missing = [c for c in cases if not dataset.label_path(c).exists()]
    if missing:
        raise ValueError(f"{dataset.labels_dir} lacks labels for {len(missing)} case(s): {', '.join(missing[:5])}")
    return cases


# -- files -------------------------------------------------------------------------------
def link_file(source: str | os.PathLike, target: str | os.PathLike) -> str:
    """Make ``target`` refer to ``source``: relative symlink, else hard link, else copy.

    Returns the method used: ``"symlink"``, ``"hardlink"`` or ``"copy"``.
    """
    source, target = Path(source), Path(target)
    try:
        os.symlink(os.path.relpath(source.parent.resolve() / source.name, target.parent.resolve()), target)
        return "symlink"
    except OSError:
        pass
    try:
        os.link(source, target)
        return "hardlink"
    except OSError:
        shutil.copy2(source, target)
        return "copy"


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, sitk.Image]:
    """A 2D label image as an ``[y, x]`` array, and the image (for its geometry)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    return array.reshape(array.shape[-2:]), image


def write_label(path: str | os.PathLike, label: np.ndarray, reference: sitk.Image) -> None:
    """Write ``label`` (uint8) with ``reference``'s size, spacing, origin and direction, uncompressed."""
    shape = sitk.GetArrayViewFromImage(reference).shape
    image = sitk.GetImageFromArray(np.ascontiguousarray(label, dtype=np.uint8).reshape(shape))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), False)


# -- statistics --------------------------------------------------------------------------
@dataclass
class LabelStats:
    """Pixel counts of one round's labels: ignore pixels, and pixels changed since the previous round."""

    cases: int = 0
    pixels: int = 0
    lesion_pixels: int = 0
    ignore_pixels: int = 0
    changed_pixels: int = 0
    compared_pixels: int = 0
    fallback_cases: int = 0

    def add(self, label: np.ndarray, previous: np.ndarray | None = None, fallback: bool = False) -> None:
        self.cases += 1
        self.pixels += label.size
        self.lesion_pixels += int((label == 1).sum())
        self.ignore_pixels += int((label == IGNORE).sum())
        self.fallback_cases += int(fallback)
        if previous is not None:
            if previous.shape != label.shape:
                raise ValueError(f"label shape {label.shape} differs from the previous round's {previous.shape}")
            self.compared_pixels += label.size
            self.changed_pixels += int((label != previous).sum())

    def to_dict(self) -> dict:
        """Counts plus ``ignore_fraction`` and ``label_change`` (None without a previous round)."""
        return {
            "cases": self.cases, "pixels": self.pixels, "lesion_pixels": self.lesion_pixels,
            "ignore_pixels": self.ignore_pixels, "changed_pixels": self.changed_pixels,
            "fallback_cases": self.fallback_cases,
            "ignore_fraction": self.ignore_pixels / self.pixels if self.pixels else float("nan"),
            "label_change": self.changed_pixels / self.compared_pixels if self.compared_pixels else None,
        }


def label_statistics(raw_dir: str | os.PathLike, cases: Iterable[str] | None = None) -> dict:
    """:class:`LabelStats` of a raw dataset's ``labelsTr`` (round 1: no previous round)."""
    dataset = layout.RawDataset(raw_dir)
    stats = LabelStats()
    for case in (training_cases(raw_dir) if cases is None else cases):
        stats.add(read_label(dataset.label_path(case))[0])
    return stats.to_dict()


# -- the next round's dataset --------------------------------------------------------------
def build_round_dataset(round1_raw: str | os.PathLike, previous_raw: str | os.PathLike,
                        target_raw: str | os.PathLike, predictions: Mapping[str, str | os.PathLike],
                        splits: list | None, provenance: dict | None = None,
                        threshold: float = 0.5) -> dict:
    """Write the raw dataset of the next round into ``target_raw``; return its statistics.

    * ``imagesTr``, ``imagesTs``, ``pseudolabelsTs``: links to round 1's files;
    * ``labelsTr/<case>``: ``update_pseudo_mask(predictions[case], e)`` with ``e`` =
      round 1's ``labelsTr/<case> == 1``;
    * ``dataset.json``: round 1's (same labels, channels, file ending) with ``name`` set to
      the new folder name and ``provenance`` under ``ulseg_refine``;
    * ``splits_final.json`` (``splits``, if given) and ``lesions.csv`` (copied).

    ``predictions`` must map every training case of round 1 to a prediction file in crop
    geometry (nnU-Net's exported segmentation: lesion where the value is 1); a missing or unknown case is an error.
    Statistics: :meth:`LabelStats.to_dict` against ``previous_raw``'s labels, plus
    ``link_method`` (every method used, e.g. ``["symlink"]``).
    """
    round1_raw, previous_raw, target_raw = Path(round1_raw), Path(previous_raw), Path(target_raw)
    if target_raw.exists():
        raise FileExistsError(f"{target_raw} already exists")
    round1 = layout.RawDataset(round1_raw)
    dataset_json = round1.dataset_json
    ending = round1.file_ending
    previous_round = layout.RawDataset(previous_raw, ending)
    cases = training_cases(round1_raw)
    missing = [c for c in cases if c not in predictions]
    unknown = sorted(set(predictions) - set(cases))
    if missing or unknown:
        raise ValueError(f"predictions do not match the training cases of {round1_raw.name}: "
                         f"missing {missing[:5]} ({len(missing)}), unknown {unknown[:5]} ({len(unknown)})")

    partial = target_raw.with_name(f".{target_raw.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    methods: set[str] = set()
    for folder in ("imagesTr", "imagesTs", "pseudolabelsTs"):
        source = round1_raw / folder
        if not source.is_dir():
            continue
        (partial / folder).mkdir(parents=True)
        for f in sorted(source.iterdir()):
            if f.name.endswith(ending):
                methods.add(link_file(f, partial / folder / f.name))
    if methods - {"symlink"}:
        logger.warning("symbolic links unavailable in %s: images linked by %s", target_raw.parent,
                       ", ".join(sorted(methods)))

    (partial / "labelsTr").mkdir(parents=True)
    stats = LabelStats()
    for case in cases:
        ellipse, reference = read_label(round1.label_path(case))
        prediction = read_label(predictions[case])[0]
        if prediction.shape != ellipse.shape:
            raise ValueError(f"{predictions[case]}: shape {prediction.shape} differs from the ellipse's "
                             f"{ellipse.shape}")
        ellipse = ellipse == 1
        label = update_pseudo_mask(prediction, ellipse, threshold)
        previous, _ = read_label(previous_round.label_path(case))
        # update_pseudo_mask falls back to the ellipse when p ∩ e is empty; count those cases
        fallback = bool(ellipse.any()) and not (binarize_prediction(prediction, threshold) & ellipse).any()
        stats.add(label, previous, fallback)
        write_label(layout.RawDataset(partial, ending).label_path(case), label, reference)

    new_json = dict(dataset_json)
    new_json["name"] = target_raw.name
    new_json["ulseg_refine"] = dict(provenance or {})
    write_json_atomic(layout.RawDataset(partial).dataset_json_file, new_json)
    if splits is not None:
        write_json_atomic(layout.RawDataset(partial).splits_file, splits)
    if (round1_raw / "lesions.csv").exists():
        shutil.copy2(round1_raw / "lesions.csv", partial / "lesions.csv")
    os.replace(partial, target_raw)
    return {**stats.to_dict(), "link_method": sorted(methods)}

