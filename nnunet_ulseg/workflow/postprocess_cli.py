"""``ulseg postprocess``: apply the RECIST-mark post-processing to a folder of nnU-Net predictions.

Like nnU-Net's ``nnUNetv2_apply_postprocessing``: reads every ``<case><file_ending>`` of an
``nnUNetv2_predict`` output folder, writes the post-processed segmentation to a new folder
(never over the input), with each input file's size, spacing, origin and direction, and
copies ``dataset.json``, ``plans.json`` and ``predict_from_raw_data_args.json`` beside
them.  The rule is :func:`nnunet_ulseg.postprocess.postprocess_crop` with each case's
crop-geometry mark from the converter's ``lesions.csv`` (``recist_crop``).

Choices:

* Label values (issue 12, case 5): a file may hold 0 background, 1 lesion and 2 ignore;
  any other value stops the command with an error naming the file and the values (a
  0/255 mask used to be read as empty, every case getting the ellipse fallback).
  ``--lesion-label N`` reads N as the lesion instead (0/255 masks: 255), ``--threshold T``
  reads probability maps (lesion where value >= T); the rule is
  :class:`~nnunet_ulseg.evaluation.label_io.LabelRule`, the same as ``ulseg evaluate``'s.
* Only the lesion label changes: removed lesion pixels become background, added ones
  (filled holes, the ellipse fallback) become lesion (value N with ``--lesion-label N``,
  so a 0/255 folder stays 0/255); the ignore label is kept where it is not lesion now.
  The output has the input file's pixel type and is written uncompressed (CONVENTIONS
  "Files"), except with ``--threshold``: a probability map post-processed is a
  segmentation, written as uint8 0/1 with the input's geometry.
* Probability files (``--save_probabilities``: ``.npz``/``.pkl``) are not copied: they
  would no longer match the segmentation.
* A case without a sidecar row, or a file whose shape is not its crop size, is a
  ``ValueError`` naming the file; nothing is half-written for it (the output of the
  cases before it stays).
* ``postprocessing.json`` in the output records the mode, the sidecar and every case's
  status (``marked`` or the fallback used, see :class:`~nnunet_ulseg.postprocess.Kept`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_ulseg.cli_args import add_output_folder
from nnunet_ulseg.evaluation.cli import add_label_options

#: :data:`nnunet_ulseg.postprocess.MODES`, spelled out so that building the ``ulseg`` parser
#: imports neither numpy nor scipy (a test checks that both agree).
MODE_CHOICES = ("none", "mark", "mark-ellipse", "mark-grabcut")
#: nnUNetv2_predict's side files that still describe the post-processed folder.
SIDE_FILES = ("dataset.json", "plans.json", "predict_from_raw_data_args.json")
RECORD = "postprocessing.json"


def read_segmentation(path: str | os.PathLike):
    """``(array [y, x], image)`` of a 2D segmentation file (the image carries the geometry)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    return array.reshape(array.shape[-2:]), image


def write_segmentation(path: str | os.PathLike, array, reference, dtype=None) -> None:
    """Write ``array`` with ``reference``'s size, spacing, origin and direction, uncompressed.

    ``dtype``: the pixel type; default ``reference``'s.
    """
    import numpy as np
    import SimpleITK as sitk

    ref_array = sitk.GetArrayViewFromImage(reference)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype or ref_array.dtype)
                                   .reshape(ref_array.shape))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), False)


def apply_to_labels(labels, kept, lesion_label: int = 1):
    """``labels`` with the lesion label replaced by ``kept`` (other labels kept where not lesion now)."""
    import numpy as np

    out = np.array(labels, copy=True)
    out[(labels == lesion_label) & ~kept] = 0
    out[kept] = lesion_label
    return out


def postprocess_file(source: str | os.PathLike, target: str | os.PathLike, row, mode: str,
                     images_dir: str | os.PathLike | None = None, file_ending: str = ".mha", rule=None):
    """Post-process one segmentation file with its sidecar ``row``; errors name ``source``.

    ``images_dir`` holds the CT crops (``<case>_0000<file_ending>``) that the image modes
    (``mark-grabcut``) read.  ``rule``: a :class:`~nnunet_ulseg.evaluation.label_io.LabelRule`
    (default: 0/1/2), checked before anything is written.  Returns the
    :class:`~nnunet_ulseg.postprocess.Kept` of the case.
    """
    from nnunet_ulseg.evaluation.label_io import DEFAULT_RULE, lesion_and_ignore
    from nnunet_ulseg.postprocess import IMAGE_MODES, postprocess_crop, read_crop_image

    rule = rule or DEFAULT_RULE
    labels, image = read_segmentation(source)
    lesion, _ = lesion_and_ignore(labels, source, rule)
    try:
        ct = None
        if mode in IMAGE_MODES:
            if images_dir is None:
                raise ValueError(f"post-processing mode {mode!r} needs the CT crops (give their folder)")
            ct = read_crop_image(images_dir, row.case, file_ending)
        kept = postprocess_crop(lesion, row, mode, image=ct)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    Path(target).parent.mkdir(parents=True, exist_ok=True)  # created once a first case is good
    if rule.threshold is not None:
        write_segmentation(target, kept.mask, image, dtype="uint8")
    else:
        write_segmentation(target, apply_to_labels(labels, kept.mask, rule.lesion), image)
    return kept


def postprocess_cases(files: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, rows: Sequence,
                      mode: str, file_ending: str = ".mha", progress: bool = False,
                      sidecar: str | os.PathLike | None = None,
                      images_dir: str | os.PathLike | None = None, lesion_label: int | None = None,
                      threshold: float | None = None) -> tuple[dict[str, Path], dict]:
    """Post-process ``files`` (case -> file) into ``out_dir/<case><file_ending>``.

    ``rows``: the sidecar's :class:`~nnunet_ulseg.conversion.sidecar.LesionRow` objects.
    ``lesion_label`` / ``threshold``: how the files' values are read (module docstring).
    Returns ``(case -> written file, record)``, ``record`` as in ``postprocessing.json``
    (also written to ``out_dir``).  Raises ``ValueError`` naming the file of a case that
    the sidecar lacks, before anything is written.
    """
    from tqdm import tqdm

    from nnunet_ulseg.evaluation.label_io import LabelRule
    from nnunet_ulseg.postprocess import check_mode, describe_mode

    check_mode(mode)
    rule = LabelRule(lesion_label, threshold)
    out_dir = Path(out_dir)
    by_case = {r.case: r for r in rows}
    unknown = sorted(c for c in files if c not in by_case)
    if unknown:
        raise ValueError(f"{files[unknown[0]]}: case {unknown[0]} is not in the sidecar"
                         f"{f' {sidecar}' if sidecar else ''} ({len(unknown)} file(s) without a row)")
    for c, path in files.items():
        if Path(out_dir / f"{c}{file_ending}").resolve() == Path(path).resolve():
            raise ValueError(f"{path}: post-processing would overwrite its input; choose another output folder")
    written, statuses = {}, {}
    for case in tqdm(sorted(files), desc=f"postprocess ({mode})", unit="case", disable=not progress):
        target = out_dir / f"{case}{file_ending}"
        statuses[case] = postprocess_file(files[case], target, by_case[case], mode, images_dir, file_ending,
                                          rule).status
        written[case] = target
    counts = Counter(statuses.values())
    record = {"mode": mode, "description": describe_mode(mode), "labels": rule.describe(),
              "sidecar": None if sidecar is None else str(sidecar),
              "cases": len(statuses), "status_counts": dict(sorted(counts.items())),
              "fallback_cases": sorted(c for c, s in statuses.items() if s.startswith("fallback_")),
              "status": statuses}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return written, record


def folder_file_ending(pred_dir: str | os.PathLike, file_ending: str | None = None) -> str:
    """``file_ending``, else ``pred_dir/dataset.json``'s (nnUNetv2_predict writes it), else ``.mha``."""
    if file_ending:
        return file_ending
    dataset_json = Path(pred_dir) / "dataset.json"
    if dataset_json.is_file():
        try:
            return json.loads(dataset_json.read_text())["file_ending"]
        except (ValueError, KeyError):
            pass
    return ".mha"


def postprocess_folder(pred_dir: str | os.PathLike, out_dir: str | os.PathLike, sidecar: str | os.PathLike,
                       mode: str = "mark", file_ending: str | None = None, progress: bool = True,
                       images_dir: str | os.PathLike | None = None, lesion_label: int | None = None,
                       threshold: float | None = None) -> dict:
    """Post-process every ``<case><file_ending>`` of ``pred_dir`` into ``out_dir`` (module docstring).

    Returns the ``postprocessing.json`` record.  Raises ``FileNotFoundError`` for a missing
    folder, sidecar or an empty folder; ``ValueError`` when ``out_dir`` is ``pred_dir`` or
    for a case the sidecar lacks or a file whose values ``lesion_label``/``threshold`` (default:
    0/1/2) do not allow (naming the file).
    """
    from nnunet_ulseg.conversion.sidecar import read_sidecar
    from nnunet_ulseg.postprocess import check_mode

    check_mode(mode)
    pred_dir, out_dir, sidecar = Path(pred_dir), Path(out_dir), Path(sidecar)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: no such folder")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: no such sidecar file")
    if out_dir.resolve() == pred_dir.resolve():
        raise ValueError(f"{out_dir}: the output folder must differ from the input folder (inputs are never "
                         "overwritten)")
    ending = folder_file_ending(pred_dir, file_ending)
    files = {p.name[:-len(ending)]: p for p in sorted(pred_dir.iterdir())
             if p.is_file() and p.name.endswith(ending) and len(p.name) > len(ending)}
    if not files:
        raise FileNotFoundError(f"{pred_dir}: no <case>{ending} segmentation files")
    _, record = postprocess_cases(files, out_dir, read_sidecar(sidecar), mode, ending, progress, sidecar,
                                  images_dir, lesion_label, threshold)
    for name in SIDE_FILES:
        if (pred_dir / name).is_file():
            shutil.copy2(pred_dir / name, out_dir / name)
    return record


def add_postprocess_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``postprocess`` on the ``ulseg`` sub-parsers."""
    p = subparsers.add_parser(
        "postprocess",
        help="clean nnUNetv2_predict outputs with each case's RECIST mark (keep marked components, fill holes)",
        description="For every <case> segmentation in -i, keep the 8-connected lesion components that the case's "
                    "RECIST long or short axis crosses (lesions.csv, crop coordinates) and fill their holes; the "
                    "RECIST ellipse when none is crossed. 'mark-ellipse' also clips to the RECIST ellipse scaled by "
                    "1.5; 'mark-grabcut' refines the result with GrabCut on the CT crop (--images), kept when it "
                    "keeps the mark's axes. Writes new files to -o with the geometry of each input; never "
                    "overwrites -i.",
    )
    p.add_argument("-i", dest="input", type=Path, required=True, metavar="PRED_DIR",
                   help="folder of nnUNetv2_predict segmentations (<case>.mha, 0 background, 1 lesion, 2 ignore; "
                        "see --lesion-label, --threshold)")
    add_output_folder(p, dest="output", help="output folder (created; must differ from -i)")
    p.add_argument("--sidecar", type=Path, required=True, metavar="lesions.csv",
                   help="the converted dataset's lesions.csv (RECIST mark of each case in crop pixels)")
    p.add_argument("--mode", choices=MODE_CHOICES, default="mark",
                   help="mark (default): marked components + fill holes; mark-ellipse: also clip to the 1.5x "
                        "RECIST ellipse; mark-grabcut: mark, then GrabCut from it and the RECIST axes, kept when "
                        "it keeps the mark's axes (needs --images); none: copy")
    p.add_argument("--images", type=Path, default=None, metavar="IMAGES_DIR",
                   help="the CT crops (<case>_0000.mha, e.g. the dataset's imagesTs) for --mode mark-grabcut")
    p.add_argument("--file-ending", default=None,
                   help="file ending of segmentations (default: dataset.json's in -i, else .mha)")
    add_label_options(p, "segmentation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    record = postprocess_folder(args.input, args.output, args.sidecar, args.mode, args.file_ending,
                                progress=not args.no_progress, images_dir=args.images,
                                lesion_label=args.lesion_label, threshold=args.threshold)
    counts = ", ".join(f"{k} {v}" for k, v in record["status_counts"].items())
    print(f"post-processed {record['cases']} case(s) with {record['description']}\n  {counts}\n  -> {args.output}")
    return 0
