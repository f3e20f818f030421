"""ULS23 VOIs -> nnU-Net weak-label raw dataset (DESIGN "ULS23 on disk", "Crops", "Labels").

:func:`convert_uls23` reads a ULS23-format images folder and labels folder (same file
names, e.g. ``novel_data/ULS23_DeepLesion3D/images`` and ``.../labels``; never written
to) and writes what :func:`~.deeplesion.convert_deeplesion` writes, so everything
downstream (nnU-Net, ``ulseg refine``, ``ulseg evaluate``) treats both alike::

    imagesTr/<case>_0000.mha (+ _0001.. context)   train + val VOIs: key-slice crop in HU
    labelsTr/<case>.mha                            RECIST-ellipse pseudo masks (0/1, uint8)
    imagesTs/<case>_0000.mha                       test VOIs
    pseudolabelsTs/<case>.mha                      their ellipses (not ground truth)
    referencesTs/<File_name>                       test VOIs' 3D labels (uint8, squeezed): the ground truth
    dataset.json  splits_final.json  lesions.csv  conversion_report.csv  uls23_volumes.csv

One case per VOI, ``ULS_<file stem>``: its key slice and RECIST mark are derived from the
label (:mod:`.uls23_voi`), the crop is DeepLesion's (same box rule, ``crop_size``, scale
policy, padding), the label is the ellipse of that mark.  So a user trains on
RECIST-derived labels and scores against ULS23's own masks.

Files:

* ``lesions.csv``: the DeepLesion sidecar schema (:class:`~.sidecar.LesionRow`), with
  ``File_name`` = the VOI file name (relative to the images folder), ``key_slice`` = the
  0-based z index of the ``[z, y, x]`` array SimpleITK reads, ``image_width/height`` =
  the VOI's x/y size, spacing from the header, ``recist_slice`` = the derived endpoints,
  ``dl_row`` = the VOI's line in ``conversion_report.csv``; patient/study/series,
  lesion type and window from the file name (:mod:`.uls23_names`), ``possibly_noisy``
  empty.
* ``conversion_report.csv``: one row per VOI (header = line 1, then VOIs sorted by file
  name): status ``converted`` or ``skipped`` with a reason from
  :data:`~.uls23_voi.VOI_REASONS`.
* ``uls23_volumes.csv``: one row per VOI: case key, size, spacing, labelled slices,
  partial flag, key slice and its component count, derived long/short axis in mm.

Splits: ULS23 VOIs carry none, so patients are assigned with
:func:`~.uls23_splits.assign_patient_splits` (``val_fraction``, ``test_fraction``,
``seed``); VOIs whose names identify no patient are split per VOI, with a warning.
Output-folder rules are DeepLesion's, from the same :mod:`.output` (issue 12): ``dataset.json``
is written last, an existing conversion or any file this converter writes is refused unless
``overwrite``, which deletes only what a run of convert-uls23 recorded in
``conversion_manifest.json`` (a dataset another tool made, convert-deeplesion included, is
refused); links in place of its folders or files are refused; an output inside an input
folder is refused.  ``strict`` raises
:class:`~.report.ConversionError` on the first bad VOI instead of skipping it.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from nnunet_ulseg.labels import LABELS

from ..pseudo_masks.registry import DEFAULT_PSEUDO, check_pseudo
from .context import channel_names, channel_offsets
from .deeplesion import NOMINAL_SPACING, default_num_processes, task_results
from .dl_info import SPLIT_NAMES
from .geometry import SCALE_POLICIES, crop_size_range
from .output import OutputFolder, check_inputs_outside
from .report import ConversionCounts, ConversionError, IssueLog, format_summary
from .sidecar import LesionRow, write_sidecar
from .splits import make_splits, preprocessed_root_from_env, write_splits
from .uls23_names import VOI_SUFFIXES, VoiName, case_id_for, number_patients, parse_voi_name, voi_stem
from .uls23_splits import assign_patient_splits
from .uls23_voi import VOI_REASONS
from .uls23_worker import REFERENCE_DIR, VoiIssue, VoiResult, VoiTask, VolumeInfo, convert_voi, reference_path
from .worker import TEST_DIRS, TRAIN_DIRS, output_paths

logger = logging.getLogger("nnunet_ulseg.conversion")

OUTPUT_DIRS = (*TRAIN_DIRS, *TEST_DIRS, REFERENCE_DIR)
OUTPUT_FILES = ("dataset.json", "splits_final.json", "lesions.csv", "conversion_report.csv", "uls23_volumes.csv")
#: ``converted_by`` in dataset.json and the output manifest (:mod:`.output`).
CONVERTED_BY = "nnunet_ulseg convert-uls23"
REPORT_COLUMNS = ("dl_row", "File_name", "case", "status", "reason", "detail", "file")
VOLUME_COLUMNS = tuple(f.name for f in dataclasses.fields(VolumeInfo))


@dataclass
class Uls23Result(ConversionCounts):
    """What :func:`convert_uls23` did: converted rows (sidecar), skipped VOIs, per-VOI volume facts."""

    out_dir: Path
    rows: list[LesionRow]
    issues: list[VoiIssue]
    volumes: list[VolumeInfo] = field(default_factory=list)
    n_vois: int = 0
    per_voi_split: int = 0
    seconds: float = 0.0
    pseudo: str = DEFAULT_PSEUDO

    @property
    def partial(self) -> list[VolumeInfo]:
        """Converted VOIs flagged as partially annotated."""
        return [v for v in self.volumes if v.status == "converted" and v.partial]

    def summary(self) -> str:
        notes = {"partially annotated VOIs (converted)": len(self.partial),
                 "VOIs split per VOI (no patient in the name)": self.per_voi_split}
        notes.update(self.pseudo_notes())
        return (f"ULS23 -> {self.out_dir} ({self.n_vois} VOIs, {self.seconds:.1f} s)\n"
                + format_summary(self.converted, self.skipped, notes))


def _check_paths(images: Path, labels: Path, out: Path, overwrite: bool) -> OutputFolder:
    """Check the input folders and the output folder (:mod:`.output`'s rules); nothing is written."""
    for what, d in (("images", images), ("labels", labels)):
        if not d.is_dir():
            raise FileNotFoundError(f"ULS23 {what} folder {d} does not exist")
    if images.resolve() == labels.resolve():
        # every image would pair with itself and its HU > 0.5 become the "lesion": refuse, do not guess
        raise ValueError(f"-i and -l are the same folder ({images}): give the images and the labels folders")
    check_inputs_outside(out, {"images": images, "labels": labels}, OUTPUT_DIRS)
    folder = OutputFolder(out, CONVERTED_BY, OUTPUT_DIRS, OUTPUT_FILES)
    folder.check(overwrite)
    return folder


def _case_files(out: Path, cases, context: int) -> list[str]:
    """Every file the cases ``(case_id, File_name, test)`` have in the output folder (crops, label, reference)."""
    n_channels = len(channel_offsets(context))
    files = []
    for case, file_name, test in cases:
        images, label = output_paths(str(out), case, n_channels, test)
        files += [*images, label] + ([reference_path(str(out), file_name)] if test else [])
    return files


def _voi_files(folder: Path) -> dict[str, list[str]]:
    """Stem -> file names (sorted) of the VOI files directly inside ``folder``."""
    found: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()):
        stem = voi_stem(p.name)
        if stem is not None and p.is_file():
            found.setdefault(stem, []).append(p.name)
    return found


def pair_vois(images: Path, labels: Path) -> tuple[list[tuple[str, str | None, str | None]], dict[str, str]]:
    """``[(stem, image file or None, label file or None)]`` sorted by stem, and stems with a duplicate problem.

    Image and label are paired by file name; a stem held by two files of one folder
    (``x.nii`` and ``x.nii.gz``) is a ``duplicate_voi`` (reported, not guessed).
    """
    img, lab = _voi_files(images), _voi_files(labels)
    pairs, dupes = [], {}
    for stem in sorted(set(img) | set(lab)):
        i, l_ = img.get(stem, []), lab.get(stem, [])
        if len(i) > 1 or len(l_) > 1:
            dupes[stem] = ", ".join(i + l_)
        pairs.append((stem, i[0] if i else None, l_[0] if l_ else None))
    return pairs, dupes


def _write_report(path: Path, results: list[VoiResult]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(REPORT_COLUMNS)
        for r in sorted(results, key=lambda r: r.dl_row):
            i = r.issue
            w.writerow((r.dl_row, r.volume.File_name, r.case_id, "skipped" if i else "converted",
                        i.reason if i else "", i.detail if i else "", i.file if i else ""))


def read_uls23_report(path: str | os.PathLike) -> list[dict[str, str]]:
    """``conversion_report.csv`` of a ULS23 conversion as dicts (columns :data:`REPORT_COLUMNS`)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def write_volumes(path: str | os.PathLike, volumes: list[VolumeInfo]) -> None:
    """Write ``uls23_volumes.csv`` (columns :data:`VOLUME_COLUMNS`, one row per VOI)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(VOLUME_COLUMNS)
        for v in sorted(volumes, key=lambda v: v.dl_row):
            w.writerow([_fmt(getattr(v, c)) for c in VOLUME_COLUMNS])


def read_volumes(path: str | os.PathLike) -> list[VolumeInfo]:
    """Read ``uls23_volumes.csv`` back (empty cells -> None)."""
    types = {f.name: f.type for f in dataclasses.fields(VolumeInfo)}

    def parse(name: str, text: str):
        if text == "":
            return None
        return int(text) if "int" in types[name] else float(text) if "float" in types[name] else text

    with open(path, newline="") as f:
        return [VolumeInfo(**{c: parse(c, r[c]) for c in VOLUME_COLUMNS}) for r in csv.DictReader(f)]


def _write_dataset_json(out: Path, dataset_name: str, images: Path, labels: Path, n_training: int, n_test: int,
                        context: int, scale_policy: str, min_crop: float, size_range: tuple[int, int],
                        n_partial: int, pseudo: str = DEFAULT_PSEUDO) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    names = channel_names(context)
    generate_dataset_json(
        str(out),
        channel_names={str(c): "CT" for c in range(len(names))},
        labels=dict(LABELS),
        num_training_cases=n_training,
        file_ending=".mha",
        dataset_name=dataset_name,
        description=f"ULS23 VOIs: key-slice lesion crops with {pseudo} pseudo masks from RECIST axes derived "
                    "from the labels (nnunet_ulseg)",
        pseudo=pseudo,
        reference="https://uls23.grand-challenge.org/",
        license="the ULS23 data terms (uls23.grand-challenge.org and the Zenodo records of each part)",
        converted_by=CONVERTED_BY,
        source="ULS23",
        recist_convention="uls23",  # the marks are derived with ULS23's pixel-centre rule (sidecar.recist_convention)
        source_dir=str(images),
        labels_dir=str(labels),
        scale_policy=scale_policy,
        context=context,
        channel_slices=names,
        min_crop=min_crop,
        crop_size_range=list(size_range) if scale_policy == "lesion" else None,
        nominal_spacing=scale_policy == "lesion",
        numTest=n_test,
        pseudolabels_test="pseudolabelsTs",
        references_test=REFERENCE_DIR,
        partial_vois=n_partial,
    )


def _plan(pairs, dupes, images: Path, labels: Path, out: Path, log: IssueLog, opts: dict, val_fraction: float,
          test_fraction: float, seed: int) -> tuple[list[VoiTask], list[VoiResult], int]:
    """Tasks for the complete pairs; results (skips) for the others; how many VOIs were split per VOI."""
    entries = []
    for row, (stem, img, lab) in enumerate(pairs, start=2):
        entries.append((row, stem, img, lab, parse_voi_name(img or lab)))
    names: list[VoiName] = [e[4] for e in entries]
    patients = number_patients(names)
    splits = assign_patient_splits(patients.values(), val_fraction, test_fraction, seed)
    per_voi = sum(n.kind == "voi" for n in names)
    if per_voi:
        logger.warning("%d VOI name(s) identify no patient (expected <patient>_<study>_<series>_<slice>[_lesion_NN] "
                       "or <source>_<case>_lesion_NN): those VOIs are split one by one, so lesions of one patient "
                       "may land in different splits", per_voi)
    tasks, skipped = [], []
    for row, stem, img, lab, name in entries:
        patient = patients[name.file_name]
        case = case_id_for(stem)
        volume = VolumeInfo(row, name.file_name, case, name.case_key, patient, SPLIT_NAMES[splits[patient]], "skipped")
        issue = None
        if stem in dupes:
            issue = VoiIssue(row, name.file_name, str(images), "duplicate_voi", dupes[stem])
        elif lab is None:
            issue = VoiIssue(row, name.file_name, str(labels / img), "missing_label", f"no {img} in {labels}")
        elif img is None:
            issue = VoiIssue(row, name.file_name, str(images / lab), "missing_image", f"no {lab} in {images}")
        if issue is not None:
            log.add(issue)
            skipped.append(VoiResult(row, case, volume, issue=issue))
            continue
        tasks.append(VoiTask(row, name, patient, splits[patient], case, str(images / img), str(labels / lab),
                             str(out), **opts))
    return tasks, skipped, per_voi


def convert_uls23(images_dir: str | os.PathLike, labels_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  num_processes: int | None = None, context: int = 0, strict: bool = False,
                  scale_policy: str = "lesion", min_crop: float = 32, overwrite: bool = False, progress: bool = True,
                  crop_size: int | Sequence[int] | None = None, val_fraction: float = 0.1,
                  test_fraction: float = 0.2, seed: int = 0, pseudo: str = DEFAULT_PSEUDO) -> Uls23Result:
    """Convert a ULS23 images + labels folder into the nnU-Net raw dataset folder ``out_dir``.

    Options as :func:`~.deeplesion.convert_deeplesion` (``context``, ``scale_policy``,
    ``min_crop``, ``crop_size``, ``num_processes``, ``strict``, ``overwrite``,
    ``progress``), plus the patient-level split (``val_fraction``, ``test_fraction``,
    ``seed``; see :mod:`.uls23_splits`) and ``pseudo``, the pseudo-mask maker
    (:mod:`nnunet_ulseg.pseudo_masks.registry`; recorded in dataset.json, each VOI's status in
    ``lesions.csv``).  Bad VOIs are skipped and reported; see the
    module docstring for everything written.
    """
    t0 = time.perf_counter()
    if scale_policy not in SCALE_POLICIES:
        raise ValueError(f"scale_policy must be one of {SCALE_POLICIES}, got {scale_policy!r}")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    check_pseudo(pseudo)
    if not min_crop > 0:
        raise ValueError(f"min_crop must be positive, got {min_crop}")
    size_range = crop_size_range(crop_size, scale_policy)
    num_processes = default_num_processes() if num_processes is None else int(num_processes)
    images, labels, out = Path(images_dir).resolve(), Path(labels_dir).resolve(), Path(out_dir).resolve()
    folder = _check_paths(images, labels, out, overwrite)
    pairs, dupes = pair_vois(images, labels)
    if not pairs:
        raise ConversionError(f"{images} holds no VOI files ({', '.join(VOI_SUFFIXES)})")

    log = IssueLog(strict)
    opts = dict(context=context, scale_policy=scale_policy, min_crop=float(min_crop), size_range=size_range,
                nominal_spacing=NOMINAL_SPACING, pseudo=pseudo)
    tasks, results, per_voi = _plan(pairs, dupes, images, labels, out, log, opts, val_fraction, test_fraction, seed)

    if overwrite:
        folder.clear()
    # recorded before the first case file, so an interrupted run can be replaced with --overwrite
    folder.start(_case_files(out, ((t.case_id, t.name.file_name, t.split == 3) for t in tasks), context))

    from tqdm import tqdm

    with task_results(convert_voi, tasks, num_processes, chunksize=1) as done, \
            tqdm(total=len(tasks), unit="VOI", desc="convert ULS23", disable=not progress) as bar:
        for res in done:
            results.append(res)
            if res.issue is not None:
                log.add(res.issue)
            elif res.note:
                logger.info("%s (%s): %s", res.case_id, res.volume.File_name, res.note)
            bar.update(1)

    results.sort(key=lambda r: r.dl_row)
    rows = [r.row for r in results if r.row is not None]
    write_sidecar(folder.new_file("lesions.csv"), rows)
    _write_report(folder.new_file("conversion_report.csv"), results)
    volumes = [r.volume for r in results]
    write_volumes(folder.new_file("uls23_volumes.csv"), volumes)
    split_value = {name: value for value, name in SPLIT_NAMES.items()}
    splits = make_splits((r.case, split_value[r.split]) for r in rows)
    folder.new_file("splits_final.json")
    write_splits(splits, out, preprocessed_root_from_env(), overwrite=overwrite)
    n_test = sum(r.split == "test" for r in rows)
    if not splits[0]["val"]:
        logger.warning("no validation cases: nnU-Net's fold 0 needs a non-empty 'val' list in splits_final.json")
    result = Uls23Result(out, rows, [r.issue for r in results if r.issue is not None], volumes, len(pairs), per_voi,
                         pseudo=pseudo)
    folder.write_new("dataset.json", lambda tmp: _write_dataset_json(
        tmp, out.name, images, labels, len(rows) - n_test, n_test, context, scale_policy, min_crop, size_range,
        len(result.partial), pseudo))
    folder.finish(_case_files(out, ((r.case, r.File_name, r.split == "test") for r in rows), context))
    result.seconds = time.perf_counter() - t0
    if progress:
        print(result.summary(), file=sys.stdout, flush=True)
    else:
        logger.info("%s", result.summary())
    return result


__all__ = ["convert_uls23", "Uls23Result", "read_uls23_report", "read_volumes", "write_volumes", "pair_vois",
           "VOI_REASONS"]
