"""``ulseg evaluate --3d``: score slice-by-slice predictions as lesion volumes and per slice offset (WSSS Sec. 4).

WSSS propagates a lesion's mask from its RECIST key slice to the slices around it
(Sec. 3.3, Algorithm 1) and scores the result in 3D: mean 3D Dice per lesion (Table 5)
and Dice against the slice distance from the RECIST slice (Fig. 4).  The input is a
predictions folder in the format ``ulseg propagate`` writes (``round<m>/test_predictions``)
and :mod:`.ellipse3d` writes for the ellipse baseline: crop-geometry label files
``<case><file_ending>`` of each key case and its off-key slices, every slice cut with the
KEY case's crop box, and ``slices.csv`` (:mod:`nnunet_ulseg.conversion.slices`: case,
key case, offset, slice index, ...).

Per key case (a ``lesions.csv`` row of ``split`` that the folder's ``slices.csv`` names):

1. every listed slice's file is read with the 2D evaluation's reader and label rule
   (:func:`~.references.crop.crop_label`, :class:`~.label_io.LabelRule`: ``--lesion-label``,
   ``--threshold``) and pasted back into slice geometry with the key case's row
   (:func:`~.evaluate.to_slice`, ``interpolation`` as in 2D), on the window of the slice
   that holds the crop box and the whole reference (:func:`~.evaluate.slice_window`), so
   nothing is cut and 512 x 512 slices are never held at once;
2. the slices are stacked by slice index (:func:`~nnunet_ulseg.conversion.geometry3d.stack_slices`,
   z spacing = the row's ``spacing_z``) and aligned with the 3D reference
   (:mod:`.references3d`: a generated sample's ``TrueMasks3D``, or label volumes);
3. scored with :func:`~.metrics3d.stack_metrics` (3D Dice, VS, precision, recall, AVD in mm,
   volumes in mm³) and :func:`~.metrics3d.dice_by_offset` (per-slice Dice, offsets in
   slices and mm), beside the RECIST ellipsoid volume ``pi L S² / 6``.

Choices where the paper is silent:

* **Scoring range**: the slices ``key - E .. key + E`` (``reach`` E, ``--reach``; default
  the largest ``|offset|`` any compared folder's ``slices.csv`` holds, so every folder is
  scored on the same slices) that the reference covers.  Prediction and reference are both
  cut to it: the truth beyond the range is not counted as missed (a propagation to ±3
  slices is not charged for slice 7), and predicted slices beyond it are not read.  Each
  lesion says whether its truth lies wholly inside the range (``complete``: no lesion voxel
  outside and the truth ends inside its own stack, :attr:`~nnunet_ulseg.demo.truth3d.TrueVolume.complete`);
  the summary gives the statistics over all lesions and over the complete ones, and
  ``ref_volume_total_mm3`` is the whole true volume.
* **Slices inside the range without a prediction** (the propagation skipped them, e.g. no
  CT slice there, or the folder reaches less far than another one): background, never
  lesion, and counted per lesion (``unpredicted_slices``, and ``unpredicted_lesion_slices``
  where the reference has lesion), so a folder cannot gain by predicting fewer slices.
* A slice that ``slices.csv`` lists but whose file is missing is an error naming the file
  and the ``slices.csv`` line, unless ``allow_missing``: the lesion then gets
  ``status = missing`` (NaN metrics, counted, not scored), as in 2D.  A ``slices.csv`` row
  whose key case is not in ``lesions.csv``, or whose ``slice_index`` is not the key
  slice + offset, is an error naming the file and line.
* A key case of the split that a folder's ``slices.csv`` does not name is not scored for
  that folder (``n_not_listed`` in the summary); key cases without a 3D reference are
  counted with the reason (``cases_without_reference``).
* The curve (``offset_curve.csv``) is the mean Dice over lesions at each signed offset
  and at each ``|offset|`` (Fig. 4's x-axis), over slices whose reference has lesion
  (:func:`~.metrics3d.offset_curve`); ``n`` is the number of such slices.
* **Post-processing** (``postprocess``, ``--postprocess``): ``none`` (default) scores the
  files as they are; ``mark`` / ``mark-ellipse`` first apply the slice-by-slice rule of
  :func:`nnunet_ulseg.postprocess3d.keep_marked_slices` in crop geometry, with the row's
  ``recist_crop`` mark, crop pixel spacing and ``spacing_z``: the key slice keeps the
  components its mark crosses (ellipse fallback), each off-key slice those the 3D RECIST
  estimate ``R̂`` crosses, walking outwards from the key slice and stopping at the first
  slice where ``R̂`` vanishes, nothing is kept or nothing was predicted, which is what
  ``ulseg segment --propagate`` does at inference; ``mark-grabcut`` also refines every kept
  slice with GrabCut on its CT crop (``images_dir``, ``--images``: ``<case>_0000.mha``, the
  folder ``ulseg propagate`` predicted from, ``slices/test_reach<E>``) and the row's DICOM
  window.  Only the listed slices inside the
  scoring range are read, so the walk also ends at the range's edge.  Several modes score
  every folder once per mode, named ``<name> [<mode>]`` (as in 2D); the ellipse row is
  scored as it is (it is ``R̂``'s own ellipse, which the rule keeps whole).  The mode and
  each lesion's stops (``up:<reason>;down:<reason>``) are columns of ``metrics3d.csv``.
* std is the population standard deviation (ddof = 0), NaN values left out and counted
  (:func:`~.aggregate.describe`), "worst" the minimum Dice.

Outputs in ``out_dir``: ``metrics3d.csv`` (one row per lesion x folder),
``offset_curve.csv``, ``summary3d.json`` (NaN as ``null``) and ``summary3d.txt`` (the
printed table).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnunet_ulseg.conversion.geometry3d import Stack3D, row_spacing, stack_slices
from nnunet_ulseg.conversion.sidecar import LesionRow, read_sidecar
from nnunet_ulseg.conversion.slices import SLICES_FILE, SliceRow, read_slices
from nnunet_ulseg.evaluation.aggregate import describe
from nnunet_ulseg.evaluation.evaluate import format_cell, jsonable, resolve_names, select_rows, slice_window, to_slice
from nnunet_ulseg.evaluation.label_io import IMAGE_ENDINGS, LabelRule
from nnunet_ulseg.evaluation.metrics import lesion_type_name
from nnunet_ulseg.evaluation.metrics3d import (
    LesionMetrics3D,
    dice_by_offset,
    offset_curve,
    recist_ellipsoid_volume,
    stack_metrics,
)
from nnunet_ulseg.evaluation.references.crop import crop_label
from nnunet_ulseg.evaluation.references3d import RefVolume, open_reference3d
from nnunet_ulseg.postprocess import IMAGE_MODES, read_crop_image
from nnunet_ulseg.postprocess3d import check_mode_3d, keep_marked_slices

#: endings looked for when the file ending is ``auto`` (nnU-Net writes the dataset's; PNG for 2D datasets)
PREDICTION_ENDINGS = (".mha", ".png") + tuple(e for e in IMAGE_ENDINGS if e != ".mha")
CASE_COLUMNS3D = ("pred_name", "case", "split", "dl_row", "File_name", "lesion_type", "lesion_type_name", "status",
                  "ref_source", "reach", "first_slice", "last_slice", "predicted_slices", "unpredicted_slices",
                  "unpredicted_lesion_slices", "complete", "ref_volume_total_mm3", "recist_ellipsoid_volume_mm3",
                  "postprocess", "postprocess_stops")
METRICS3D_COLUMNS = CASE_COLUMNS3D + tuple(f.name for f in fields(LesionMetrics3D))
CURVE_COLUMNS = ("pred_name", "grouping", "offset", "mean_offset_mm", "mean_dice", "n")
#: per-lesion metrics summarised per folder: name -> higher is better
SUMMARY3D = {"dice_3d": True, "vs_3d": True, "precision_3d": True, "recall_3d": True, "avd_3d_mm": False,
             "pred_volume_mm3": None, "ref_volume_mm3": None}


@dataclass
class Evaluation3DResult:
    """What :func:`evaluate_3d` computed and wrote."""

    out_dir: Path
    records: list[dict]
    curves: list[dict]
    summary: dict
    table: str
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionFolder:
    """One folder to score: its name, path, ``slices.csv`` and file ending; rows by key case, then offset."""

    name: str
    path: Path
    slices_csv: Path
    file_ending: str
    by_key: dict[str, dict[int, tuple[SliceRow, int]]]  # key case -> offset -> (row, slices.csv line)
    postprocess: str = "none"

    @property
    def reach(self) -> int:
        return max((abs(o) for offsets in self.by_key.values() for o in offsets), default=0)


def resolve_ending(folder: Path, slices: Sequence[SliceRow], file_ending: str | None) -> str:
    """``file_ending`` as given, or (``None``/``"auto"``) the one ending of the folder's files for its slices.

    nnU-Net writes the dataset's ``file_ending`` and copies ``dataset.json`` into its output
    folder, so that one is used when present; otherwise the ending under which the first
    listed case exists.
    """
    if file_ending not in (None, "auto"):
        return file_ending
    meta = folder / "dataset.json"
    if meta.is_file():
        try:
            ending = json.loads(meta.read_text()).get("file_ending")
        except json.JSONDecodeError:
            ending = None
        if isinstance(ending, str) and ending:
            return ending
    for s in slices:
        for ending in PREDICTION_ENDINGS:
            if (folder / f"{s.case}{ending}").is_file():
                return ending
    raise FileNotFoundError(f"{folder}: no prediction file of any case of its {SLICES_FILE} "
                            f"(looked for {', '.join(PREDICTION_ENDINGS)}; give --file-ending)")


def read_folder(name: str, folder: Path, slices_csv: Path | None, rows: dict[str, LesionRow], sidecar: Path,
                file_ending: str | None) -> PredictionFolder:
    """A predictions folder and its ``slices.csv`` checked against ``lesions.csv`` (module docstring, errors)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such prediction folder")
    slices_csv = Path(slices_csv) if slices_csv is not None else folder / SLICES_FILE
    if not slices_csv.is_file():
        raise FileNotFoundError(f"{slices_csv}: no such file (a 3D predictions folder holds a {SLICES_FILE}, "
                                "as ulseg propagate writes it; or give --slices)")
    slices = read_slices(slices_csv)
    by_key: dict[str, dict[int, tuple[SliceRow, int]]] = {}
    for line, s in enumerate(slices, start=2):
        row = rows.get(s.key_case)
        if row is None:
            raise ValueError(f"{slices_csv}, line {line}: key case {s.key_case!r} of case {s.case!r} is not in {sidecar}")
        if s.slice_index != row.key_slice + s.offset:
            raise ValueError(f"{slices_csv}, line {line}: case {s.case!r} has slice_index {s.slice_index}, but key "
                             f"slice {row.key_slice} + offset {s.offset} = {row.key_slice + s.offset} ({sidecar})")
        offsets = by_key.setdefault(s.key_case, {})
        if s.offset in offsets:
            raise ValueError(f"{slices_csv}, line {line}: case {s.case!r} listed again (first on line "
                             f"{offsets[s.offset][1]})")
        offsets[s.offset] = (s, line)
    return PredictionFolder(name, folder, slices_csv, resolve_ending(folder, slices, file_ending), by_key)


def predicted_crops(folder: PredictionFolder, row: LesionRow, lo: int, hi: int, rule: LabelRule,
                    images_dir: Path | None = None) -> tuple[dict[int, np.ndarray], str]:
    """The folder's listed crop masks of ``row`` in slices ``lo..hi`` by offset, post-processed; and the stops."""
    listed = folder.by_key[row.case]
    cases = {offset: s.case for offset, (s, _) in listed.items() if lo <= s.slice_index <= hi}
    crops = {offset: crop_label(folder.path / f"{case}{folder.file_ending}", row, rule)
             for offset, case in cases.items()}
    if folder.postprocess == "none":
        return crops, ""
    if 0 not in crops:
        raise ValueError(f"{folder.slices_csv}: key case {row.case!r} has no prediction of its key slice (offset 0), "
                         f"which --postprocess {folder.postprocess} starts from")
    images = None  # without images_dir an image mode is refused by keep_marked_slices (evaluate_3d checks first)
    if folder.postprocess in IMAGE_MODES and images_dir is not None:
        images = {offset: read_crop_image(images_dir, case) for offset, case in cases.items()}
    kept = keep_marked_slices(crops, row.recist_crop_points, row.crop_spacing_xy, row.spacing_z, folder.postprocess,
                              images=images, window=(row.window_min, row.window_max))
    return kept.masks, ";".join(f"{side}:{why}" for side, why in kept.stopped.items())


def predicted_stack(folder: PredictionFolder, row: LesionRow, lo: int, hi: int, window: tuple[slice, slice],
                    rule: LabelRule, interpolation: str, images_dir: Path | None = None) -> tuple[Stack3D, int, str]:
    """The folder's prediction of ``row`` over slices ``lo..hi`` (windowed), unlisted slices empty.

    Also returns the number of unlisted slices and the post-processing's stops (module docstring).
    """
    crops, stops = predicted_crops(folder, row, lo, hi, rule, images_dir)
    shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
    masks, unpredicted = {}, 0
    for index in range(lo, hi + 1):
        crop = crops.get(index - row.key_slice)
        if crop is None:
            masks[index] = np.zeros(shape, dtype=bool)
            unpredicted += 1
            continue
        masks[index] = to_slice(crop, row, interpolation)[window]
    return stack_slices(masks, row_spacing(row), row.key_slice, what=f"case {row.case}"), unpredicted, stops


def missing_files(folder: PredictionFolder, row: LesionRow, lo: int, hi: int) -> list[tuple[Path, int]]:
    """``(path, slices.csv line)`` of the listed slices in ``lo..hi`` whose file is not there."""
    out = []
    for offset, (s, line) in sorted(folder.by_key[row.case].items()):
        path = folder.path / f"{s.case}{folder.file_ending}"
        if lo <= s.slice_index <= hi and not path.is_file():
            out.append((path, line))
    return out


def score_range(row: LesionRow, ref: RefVolume, reach: int) -> tuple[int, int]:
    """The slices ``key - reach .. key + reach`` that the reference covers (module docstring, "Scoring range")."""
    return max(row.key_slice - reach, ref.first_slice), min(row.key_slice + reach, ref.last_slice)


def _record(folder: PredictionFolder, row: LesionRow, ref: RefVolume, reach: int, lo: int, hi: int, status: str,
            m: LesionMetrics3D | None, unpredicted: int | str = "", unpredicted_lesion: int | str = "",
            stops: str = "") -> dict:
    sx, sy, sz = row_spacing(row)
    inside = ref.mask[lo - ref.first_slice:hi - ref.first_slice + 1]
    complete = bool(inside.sum() == ref.mask.sum() and not ref.mask[0].any() and not ref.mask[-1].any())
    rec = {"pred_name": folder.name, "case": row.case, "split": row.split, "dl_row": row.dl_row,
           "File_name": row.File_name, "lesion_type": row.lesion_type if row.lesion_type is not None else -1,
           "lesion_type_name": lesion_type_name(row.lesion_type), "status": status, "ref_source": ref.source,
           "reach": reach, "first_slice": lo, "last_slice": hi,
           "predicted_slices": sum(lo <= s.slice_index <= hi for s, _ in folder.by_key[row.case].values()),
           "unpredicted_slices": unpredicted, "unpredicted_lesion_slices": unpredicted_lesion, "complete": complete,
           "ref_volume_total_mm3": float(ref.mask.sum()) * sx * sy * sz,
           "recist_ellipsoid_volume_mm3": recist_ellipsoid_volume(row.long_mm, row.short_mm),
           "postprocess": folder.postprocess, "postprocess_stops": stops}
    if m is not None:
        rec.update(m.as_dict())
    else:
        rec.update({f.name: float("nan") for f in fields(LesionMetrics3D)})
    return rec


def score_lesion(folder: PredictionFolder, row: LesionRow, ref: RefVolume, reach: int, rule: LabelRule,
                 interpolation: str, allow_missing: bool, images_dir: Path | None = None) -> tuple[dict, list]:
    """One lesion of one folder: its ``metrics3d.csv`` record and its per-offset curve (module docstring)."""
    lo, hi = score_range(row, ref, reach)
    missing = missing_files(folder, row, lo, hi)
    if missing:
        if not allow_missing:
            path, line = missing[0]
            more = f" and {len(missing) - 1} more slice(s) of this lesion" if len(missing) > 1 else ""
            raise FileNotFoundError(f"{path}: no prediction for the slice on {folder.slices_csv} line {line}{more} "
                                    "(--allow-missing goes on without the lesion)")
        return _record(folder, row, ref, reach, lo, hi, "missing", None), []
    window = slice_window(row, mask=ref.mask.any(axis=0))
    ref_stack = Stack3D(ref.mask[lo - ref.first_slice:hi - ref.first_slice + 1, window[0], window[1]],
                        row_spacing(row), lo, row.key_slice)
    pred_stack, unpredicted, stops = predicted_stack(folder, row, lo, hi, window, rule, interpolation, images_dir)
    listed = folder.by_key[row.case]
    unpredicted_lesion = sum(int(ref_stack.mask[z].any()) for z, index in enumerate(ref_stack.slice_indices)
                             if index - row.key_slice not in listed)
    rec = _record(folder, row, ref, reach, lo, hi, "ok", stack_metrics(pred_stack, ref_stack), unpredicted,
                  unpredicted_lesion, stops)
    return rec, dice_by_offset(pred_stack, ref_stack)


def summarize_folder(records: Sequence[dict]) -> dict:
    """Statistics of one folder's ok records, over all lesions and over the complete ones."""
    ok = [r for r in records if r["status"] == "ok"]
    out = {"n": len(ok), "n_missing": sum(r["status"] == "missing" for r in records),
           "n_complete": sum(bool(r["complete"]) for r in ok)}
    for metric, better in SUMMARY3D.items():
        out[metric] = describe([r[metric] for r in ok], better)
    out["dice_3d_complete"] = describe([r["dice_3d"] for r in ok if r["complete"]], True)
    return out


def _curve_rows(name: str, curves: Sequence[list]) -> list[dict]:
    rows = []
    for grouping, absolute in (("signed", False), ("absolute", True)):
        for c in offset_curve(curves, absolute=absolute):
            rows.append({"pred_name": name, "grouping": grouping, **c})
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:5.1f}" if isinstance(v, float) and math.isfinite(v) else "  -  "


def format_table3d(summary: dict, curves: Sequence[dict], reach: int) -> str:
    """The printed table: per folder, n, 3D Dice mean ± sd and worst, VS, AVD, then Dice (%) at offsets -E..+E."""
    names = list(summary)
    width = max([len(n) for n in names] + [6])
    offsets = list(range(-reach, reach + 1))
    head = (f"{'method':{width}s} {'n':>4s} {'3D Dice':>13s} {'worst':>6s} {'VS':>6s} {'AVD mm':>7s} "
            f"{'complete':>13s} " + " ".join(f"{o:+6d}" for o in offsets))
    lines = ["3D Dice per lesion (%, mean ± sd) and Dice by slice offset from the key slice (%, WSSS Fig. 4)", head]
    for n in names:
        s = summary[n]
        d, c = s["dice_3d"], s["dice_3d_complete"]
        at = {r["offset"]: r["mean_dice"] for r in curves if r["pred_name"] == n and r["grouping"] == "signed"}
        avd = s["avd_3d_mm"]["mean"]
        lines.append(f"{n:{width}s} {s['n']:4d} {_pct(d['mean'])} ± {_pct(d['std'])} {_pct(d['worst']):>6s} "
                     f"{_pct(s['vs_3d']['mean']):>6s} {avd:7.2f} "
                     f"{s['n_complete']:4d}: {_pct(c['mean'])}  " + " ".join(f"{_pct(at.get(o, float('nan'))):>6s}"
                                                                     for o in offsets))
    lines.append(f"scored on slices key-{reach}..key+{reach} inside the reference; unpredicted slices there count "
                 "as background; complete: lesions whose truth lies wholly inside that range (n: mean Dice)")
    return "\n".join(lines)


def evaluate_3d(pred_dirs: Sequence[str | Path], ref_dir: str | Path, sidecar: str | Path, out_dir: str | Path,
                slices: Sequence[str | Path] | None = None, names: Sequence[str] | None = None,
                split: str | None = "test", ref_format: str = "auto", reach: int | None = None,
                interpolation: str = "linear", file_ending: str | None = None, lesion_label: int | None = None,
                threshold: float | None = None, allow_missing: bool = False, ellipse: bool = False,
                postprocess: str | Sequence[str] = "none", images_dir: str | Path | None = None,
                progress: bool = True) -> Evaluation3DResult:
    """Score each 3D predictions folder against ``ref_dir`` (module docstring); write and return the results.

    ``slices``: one ``slices.csv`` per folder (default ``<folder>/slices.csv``).
    ``ellipse``: first write the ellipse baseline (:mod:`.ellipse3d`) for the first
    folder's slices into ``<out_dir>/ellipse_predictions`` and score it as the first row,
    ``ellipse``.  ``file_ending``: ``None``/``auto`` detects it per folder (:func:`resolve_ending`).
    ``postprocess``: a mode of :data:`~nnunet_ulseg.postprocess3d.MODES_3D` or several
    (module docstring, "Post-processing"); ``images_dir``: the slices' CT crops
    ``<case>_0000.mha`` that ``mark-grabcut`` reads.
    """
    from nnunet_ulseg.evaluation.ellipse3d import ELLIPSE_FOLDER, write_ellipse_predictions

    if not pred_dirs:
        raise ValueError("no prediction folders given")
    sidecar, out_dir = Path(sidecar), Path(out_dir)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: no such sidecar file")
    pred_paths = [Path(p) for p in pred_dirs]
    if slices is not None and len(slices) not in (1, len(pred_paths)):
        raise ValueError(f"--slices: give one slices.csv or one per prediction folder, got {len(slices)} for "
                         f"{len(pred_paths)} folders")
    slice_files = ([Path(slices[0])] * len(pred_paths) if slices is not None and len(slices) == 1 else
                   [Path(s) for s in slices] if slices is not None else [None] * len(pred_paths))
    folder_names = resolve_names(pred_paths, names)
    if reach is not None and (isinstance(reach, bool) or int(reach) != reach or reach < 0):
        raise ValueError(f"reach must be a whole number of slices >= 0, got {reach!r}")
    rule = LabelRule(lesion_label, threshold)
    all_rows = read_sidecar(sidecar)
    by_case = {r.case: r for r in all_rows}
    rows = select_rows(all_rows, split)
    if not rows:
        raise ValueError(f"{sidecar}: no cases of split {split!r}")
    modes = postprocess_modes_3d(postprocess)
    image_modes = [m for m in modes if m in IMAGE_MODES]
    if image_modes and images_dir is None:
        raise ValueError(f"--postprocess {image_modes[0]} needs the CT crops of the slices (--images DIR: "
                         "<case>_0000.mha, e.g. ulseg propagate's slices/test_reach<E>)")
    images_dir = Path(images_dir) if images_dir is not None else None
    folders = [dataclasses.replace(folder, name=folder.name if len(modes) == 1 else f"{folder.name} [{mode}]",
                                   postprocess=mode)
               for folder in (read_folder(n, p, s, by_case, sidecar, file_ending)
                              for n, p, s in zip(folder_names, pred_paths, slice_files))
               for mode in modes]
    if ellipse:
        if "ellipse" in folder_names:
            raise ValueError("a prediction folder is named 'ellipse', the name of the --ellipse row; give --names")
        target = out_dir / ELLIPSE_FOLDER
        write_ellipse_predictions(folders[0].slices_csv, sidecar, target, ".mha", progress=progress)
        folders.insert(0, read_folder("ellipse", target, None, by_case, sidecar, ".mha"))
    reach = max(f.reach for f in folders) if reach is None else int(reach)
    reference = open_reference3d(ref_dir, ref_format)
    listed = {r.case for f in folders for r in rows if r.case in f.by_key}
    records, curves_by = [], {f.name: [] for f in folders}
    without_ref: dict[str, str] = {}
    for row in tqdm([r for r in rows if r.case in listed], desc="3D evaluation", unit="lesion",
                    disable=not progress):
        ref = reference.get(row)
        if ref.mask is None:
            without_ref[row.case] = ref.reason
            continue
        for f in folders:
            if row.case not in f.by_key:
                continue
            rec, curve = score_lesion(f, row, ref, reach, rule, interpolation, allow_missing, images_dir)
            records.append(rec)
            if curve:
                curves_by[f.name].append(curve)
    if not records:
        raise FileNotFoundError(f"{ref_dir}: no 3D reference ({reference.kind}) for any of the {len(listed)} listed "
                                f"key cases of split {split!r}" + (f"; e.g. {next(iter(without_ref.values()))}"
                                                                    if without_ref else ""))
    curves = [c for f in folders for c in _curve_rows(f.name, curves_by[f.name])]
    per = {f.name: summarize_folder([r for r in records if r["pred_name"] == f.name]) for f in folders}
    table = format_table3d(per, curves, reach) + "\n" + reference.summary_line()
    if modes != ["none"]:
        table += (f"\npost-processing {', '.join(modes)}: slice by slice outwards from the key slice, components "
                  "crossed by the mark / the 3D RECIST estimate, stopping at the first empty slice "
                  "(nnunet_ulseg.postprocess3d)" + ("; the ellipse row as it is" if ellipse else ""))
    if without_ref:
        table += f"\n{len(without_ref)} key case(s) have no 3D reference and were skipped"
    summary = {
        "settings": {"pred_dirs": {f.name: str(f.path) for f in folders},
                     "slices": {f.name: str(f.slices_csv) for f in folders},
                     "file_endings": {f.name: f.file_ending for f in folders}, "ref_dir": str(ref_dir),
                     "sidecar": str(sidecar), "split": split, "reach": reach, "interpolation": interpolation,
                     "labels": rule.describe(), "allow_missing": allow_missing, "ellipse": ellipse,
                     "postprocess": modes, "images": str(images_dir) if images_dir is not None else None},
        "reference": reference.describe(),
        "scoring": f"slices key-{reach}..key+{reach} inside the reference, slice geometry (predictions pasted back "
                   "with the key case's lesions.csv crop box), spacing (spacing_x, spacing_y, spacing_z); slices "
                   "without a prediction there are background",
        "n_cases_in_split": len(rows),
        "n_not_listed": {f.name: sum(r.case not in f.by_key for r in rows) for f in folders},
        "cases_without_reference": without_ref,
        "per_prediction": per,
        "offset_curve": curves,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"metrics3d": out_dir / "metrics3d.csv", "offset_curve": out_dir / "offset_curve.csv",
             "summary": out_dir / "summary3d.json", "table": out_dir / "summary3d.txt"}
    _write_csv(files["metrics3d"], METRICS3D_COLUMNS, records)
    _write_csv(files["offset_curve"], CURVE_COLUMNS, curves)
    with open(files["summary"], "w", encoding="utf-8") as fh:
        json.dump(jsonable(summary), fh, indent=2, allow_nan=False)
        fh.write("\n")
    files["table"].write_text(table + "\n", encoding="utf-8")
    return Evaluation3DResult(out_dir, records, curves, summary, table, files)


def postprocess_modes_3d(postprocess: str | Sequence[str]) -> list[str]:
    """The modes of ``postprocess`` (one or several of :data:`~nnunet_ulseg.postprocess3d.MODES_3D`), checked."""
    modes = [postprocess] if isinstance(postprocess, str) else list(postprocess)
    if not modes:
        raise ValueError("no post-processing mode given")
    if len(set(modes)) != len(modes):
        raise ValueError(f"post-processing modes repeated: {modes}")
    return [check_mode_3d(m) for m in modes]


def _write_csv(path: Path, columns: Sequence[str], records: Sequence[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in records:
            w.writerow([format_cell(r[c]) for c in columns])
