"""``ulseg evaluate``: score prediction folders against reference masks, per lesion, in mm.

Inputs are crop-geometry label files as nnU-Net writes them (``<case>.mha``), a reference
folder and the ``lesions.csv`` sidecar of the converted dataset.  Metrics are computed in
**key-slice geometry** (``image_height x image_width`` of the lesion's row): every
predicted crop is pasted back once with the sidecar's crop box
(:func:`nnunet_ulseg.conversion.sidecar.paste_back`, bilinear + threshold 0.5 by default),
and the reference is read in that geometry directly, so the numbers are those of the
lesion in the original image, with the true spacing ``(spacing_x, spacing_y)``, and do
not depend on how a crop was scaled.

References (``ref_format``, ``--ref-format``; :mod:`nnunet_ulseg.evaluation.references`):
key-slice PNGs named like DeepLesion (``png``), NIfTI/MHA files with the key slice from
the sidecar (``volume``), ULS23 VOIs (``uls23``), a generated sample's true masks
(``sample``), or crop-geometry ``<case>.mha`` files (``crop``), which are pasted back like
the predictions: the one lossy path, named as such in the output.  ``auto`` detects the
kind from the folder.  ``summary.json`` (``reference``, ``geometry``) and the printed table
say which kind, folder and geometry were used; ``metrics.csv`` names each lesion's
reference file (``ref_source``).  The metric definitions are in
:mod:`.metrics` and :mod:`.distances`; the statistics in :mod:`.aggregate`.

Choices where the spec is silent:

* Labels: label 1 is the lesion in both prediction and reference; the ignore label 2
  is background (a manual reference has no 2s; a pseudo-label folder used as a
  reference would have its uncertain band counted as background rather than silently
  dropped from the pixel counts).  Any other value in a prediction (a 0/255 mask, a
  probability map, a label 3) is an error naming the file and the values, which used to
  score Dice 0 silently (issue 12): ``lesion_label`` (``--lesion-label N``, e.g. 255) or
  ``threshold`` (``--threshold T``: lesion where value >= T) say how to read such files
  (:class:`~nnunet_ulseg.evaluation.label_io.LabelRule`).  They apply to the predictions;
  crop-geometry references are always read as 0/1/2, slice-geometry ones by their own
  rule (value > 0 is lesion, :mod:`.references`).
* Cases: the sidecar rows of ``split`` (``"all"`` for every row) that have a reference.
  Rows without one (no file, or a shared slice mask in which the lesion's RECIST mark
  crosses no lesion) are counted (``n_without_reference``) and listed in
  ``summary.json`` with the reason: DeepLesion has manual masks for only part of its test
  lesions.  No row with a reference at all is an error.
* A missing prediction file is an error naming the cases, unless ``allow_missing``: then
  the lesion gets a ``metrics.csv`` row with ``status = missing`` and NaN metrics and is
  counted, but not scored (see :mod:`.aggregate`).
* Post-processing (``postprocess``, ``--postprocess``): a mode of
  :data:`nnunet_ulseg.postprocess.MODES` is applied to every *prediction* (never to the
  reference) in crop geometry, with the case's crop-geometry RECIST mark from the sidecar,
  before paste-back (:func:`nnunet_ulseg.postprocess.postprocess_crop`), the same place
  as in ``ulseg postprocess`` and ``ulseg refine``.  Several modes evaluate every folder
  once per mode, named ``<name> [<mode>]``, so their effect sits in one table.  The mode
  and the per-case outcome (``marked`` or the fallback used) are columns of
  ``metrics.csv``; ``summary.json`` counts them under ``postprocess`` and the printed
  table ends with the mode(s) used.
* Metrics are computed on the part of the key slice around the crop box
  (:func:`slice_window`), which gives the same numbers as the whole slice, faster.
* Outputs in ``out_dir`` (created; files of the same name are replaced):
  ``metrics.csv``, ``summary.json`` (NaN written as ``null``), ``summary.txt`` (the
  printed table), ``dice_cumulative.png`` and ``gallery.png`` (:mod:`.plots`, drawn in the
  key-slice window where the metrics are computed).
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ulseg.conversion.geometry import paste_back_image
from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back, read_sidecar
from nnunet_ulseg.conversion.sidecar import recist_convention as dataset_recist_convention
from nnunet_ulseg.evaluation.aggregate import DICE_THRESHOLDS, aggregate, format_table
from nnunet_ulseg.evaluation.label_io import DEFAULT_RULE, LabelRule, read_crop_mask
from nnunet_ulseg.evaluation.metrics import LesionMetrics, lesion_metrics, lesion_type_name
from nnunet_ulseg.evaluation.references import Reference, crop_label, open_reference
from nnunet_ulseg.labels import LESION
from nnunet_ulseg.nnunet_layout import image_filename

logger = logging.getLogger(__name__)

LESION_LABEL = LESION
CASE_COLUMNS = ("pred_name", "case", "split", "dl_row", "File_name", "lesion_type", "lesion_type_name", "status",
                "postprocess", "postprocess_status", "ref_source")
#: The geometry every metric is computed in (``summary.json`` ``geometry``).
SCORING_GEOMETRY = ("key slice (image_height x image_width of lesions.csv), window around the crop box; predictions "
                    "pasted back once from crop geometry; reference read in key-slice geometry (crop references: "
                    "pasted back like the predictions)")
METRICS_COLUMNS = CASE_COLUMNS + tuple(f.name for f in fields(LesionMetrics))

DEFINITIONS = {
    "geometry": "crops pasted back into the key slice with the lesions.csv crop box (--interpolation: "
                "bilinear then >= 0.5 by default, or nearest); "
                "mm from the sidecar's spacing_x, spacing_y",
    "labels": "predictions: 0 background, 1 lesion (--lesion-label N: N), 2 ignore = background, any other value "
              "an error (--threshold T: lesion where value >= T); references: label 1 (crop) or value > 0 (slice)",
    "precision": "TP / (TP + FP); NaN for an empty prediction",
    "recall": "TP / (TP + FN); NaN for an empty reference",
    "dice": "2TP / (2TP + FP + FN); 1 when both masks are empty, 0 when exactly one is "
            "(nnU-Net's compute_metrics gives NaN when both are empty and averages with nanmean)",
    "vs": "1 - |FN - FP| / (2TP + FP + FN); 1 when both are empty",
    "surface": "foreground pixels with a 4-neighbour in the background (outside the image = background); "
               "pixel centres, Euclidean mm (medpy's and MONAI's edges)",
    "avg_hd_mm": "surface average Hausdorff: mean of the two directed mean surface distances (pred->ref, ref->pred)",
    "hd95_mm": "pooled HD95: 95th percentile (nearest rank, ceil(0.95 n)-th smallest) of the surface distances "
               "of both directions pooled (medpy's hd95 pools the same values, interpolating linearly)",
    "hd95_max_directed_mm": "max-directed HD95: the larger of the two directed 95th percentiles, linear "
                            "interpolation (MONAI compute_hausdorff_distance(percentile=95))",
    "hd_mm": "maximum of the pooled surface distances (Hausdorff distance)",
    "avd_mm": "Taha & Hanbury's AVD: max of the two directed mean distances over all foreground pixels "
              "(pixels inside the other mask count 0)",
    "avd_mean_mm": "the same two directed means averaged (EvaluateSegmentation's AVGDIST)",
    "distances_empty": "NaN when either mask is empty",
    "axes": "RECIST long/short axis (nnunet_ulseg.recist.mask_axes) of the largest 8-connected component; "
            "*_long_mm/*_short_mm: ULS23's evaluator rule between boundary pixel centres (convention uls23); "
            "*_long_edge_mm/*_short_edge_mm: between outer pixel edges (convention edge, ~1 px longer); "
            "deviations from ULS23's evaluator: 8- instead of 4-connected components, and a mask whose boundary "
            "pixels are collinear (1 px wide) gets short axis 0 where ULS23's search returns the long axis",
    "long_err/short_err": "|pred - ref| / (|pred| + |ref|) of the uls23 axes (ULS23's SAPE before min(1, .)); "
                          "long_err_edge/short_err_edge: the same of the edge axes",
    "*_err_recist": "same error against the RECIST mark's long_mm/short_mm from lesions.csv, under the dataset's "
                    "recist_convention (settings; edge for DeepLesion's caliper marks, uls23 for ULS23 imports)",
    "std": "population standard deviation (ddof=0); NaN values excluded and counted as n_nan",
    "dice_at_least": f"share of evaluated lesions with Dice >= {', '.join(str(t) for t in DICE_THRESHOLDS)}",
    "missing": "prediction file missing (--allow-missing): counted, excluded from statistics",
    "postprocess": "predictions post-processed in crop geometry with the lesions.csv RECIST mark before paste-back "
                   "(nnunet_ulseg.postprocess); postprocess_status: marked, unchanged or the fallback used",
}


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folders` wrote and computed."""

    out_dir: Path
    records: list[dict]
    summary: dict
    table: str
    files: dict[str, Path] = field(default_factory=dict)


def select_rows(rows: Sequence[LesionRow], split: str | None) -> list[LesionRow]:
    """Sidecar rows of ``split``; ``None`` or ``"all"`` keeps every row."""
    if split in (None, "all"):
        return list(rows)
    return [r for r in rows if r.split == split]


def resolve_names(pred_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """Display names of the prediction folders: ``names`` as given, else the folder names.

    Duplicate folder names fall back to ``parent/name``; names that are still not
    unique (or a wrong number of ``names``) raise ``ValueError``.
    """
    paths = [Path(p).resolve() for p in pred_dirs]
    if names:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise ValueError(f"--names: got {len(names)} names for {len(paths)} prediction folders")
    else:
        names = [p.name for p in paths]
        if len(set(names)) != len(names):
            names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"prediction folder names are not unique ({names}); give --names")
    return names


def missing_predictions_error(folder: Path, cases: Sequence[str], n_cases: int) -> FileNotFoundError:
    """The error for prediction files missing from ``folder``: names the first 5 cases and the count."""
    shown = ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")
    return FileNotFoundError(f"{folder}: no prediction for case {shown} ({len(cases)} of {n_cases} cases "
                             f"missing; --allow-missing goes on without them)")


def predicted_label(path: Path, row: LesionRow, postprocess: str = "none", images_dir: Path | None = None,
                    file_ending: str = ".mha", rule: LabelRule = DEFAULT_RULE) -> tuple[np.ndarray, str]:
    """:func:`crop_label` of a prediction after the ``postprocess`` mode, and the case's post-processing status.

    ``images_dir``: the CT crops, read by the image modes (``mark-grabcut``); ``rule``: how
    the file's values are read (a value it does not allow is a ``ValueError`` naming ``path``).
    """
    from nnunet_ulseg.postprocess import IMAGE_MODES, postprocess_crop, read_crop_image

    crop = crop_label(path, row, rule)  # its errors name the file already
    try:
        ct = read_crop_image(images_dir, row.case, file_ending) if postprocess in IMAGE_MODES else None
        kept = postprocess_crop(crop, row, postprocess, image=ct)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return kept.mask, kept.status


def postprocess_modes(postprocess: str | Sequence[str]) -> list[str]:
    """The mode(s) asked for as a list, each checked; duplicates are an error."""
    from nnunet_ulseg.postprocess import check_mode

    modes = [postprocess] if isinstance(postprocess, str) else list(postprocess)
    if not modes:
        raise ValueError("no post-processing mode given")
    if len(set(modes)) != len(modes):
        raise ValueError(f"post-processing modes repeated: {modes}")
    return [check_mode(m) for m in modes]


def to_slice(crop_mask: np.ndarray, row: LesionRow, interpolation: str = "linear") -> np.ndarray:
    """Paste a boolean crop mask back into the ``(image_height, image_width)`` key slice (bool)."""
    out = paste_back(crop_mask.astype(np.uint8), row, interpolation=interpolation)
    return np.asarray(out, dtype=bool)


def slice_window(row: LesionRow, margin: int = 2, mask: np.ndarray | None = None) -> tuple[slice, slice]:
    """``(rows, cols)`` slices of the key slice that hold everything pasted back from ``row``'s crop.

    The crop box ``[x0, x0 + side)`` plus ``margin`` pixels (bilinear paste-back reaches at
    most one pixel past the box), clipped to the image.  Paste-back writes 0 outside the
    box, so metrics of a pasted-back prediction computed on this window equal those on the
    whole slice (they are translation invariant, and the window edge is either the image
    edge or a band of zeros), at a fraction of the cost for small lesions on 512 x 512 slices.

    ``mask``: a key-slice mask read in slice geometry (a real reference), which may reach
    past the crop box (a manual mask larger than the RECIST extent, a second component of a
    ULS23 slice).  The window then also covers its foreground's bounding box plus
    ``margin``, so no reference pixel is dropped and a cut edge never counts as surface.
    """
    x0, y0, side = row.crop_x0, row.crop_y0, row.crop_side
    c0, c1 = max(0, math.floor(x0) - margin), min(row.image_width, math.ceil(x0 + side) + margin)
    r0, r1 = max(0, math.floor(y0) - margin), min(row.image_height, math.ceil(y0 + side) + margin)
    if mask is not None and np.any(mask):
        rr, cc = np.nonzero(mask)
        r0, r1 = min(r0, max(0, int(rr.min()) - margin)), max(r1, min(mask.shape[0], int(rr.max()) + 1 + margin))
        c0, c1 = min(c0, max(0, int(cc.min()) - margin)), max(c1, min(mask.shape[1], int(cc.max()) + 1 + margin))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _record(name: str, row: LesionRow, status: str, m: LesionMetrics | None, postprocess: str = "none",
            postprocess_status: str = "", ref_source: str = "") -> dict:
    rec = {"pred_name": name, "case": row.case, "split": row.split, "dl_row": row.dl_row,
           "File_name": row.File_name, "lesion_type": row.lesion_type if row.lesion_type is not None else -1,
           "lesion_type_name": lesion_type_name(row.lesion_type), "status": status, "postprocess": postprocess,
           "postprocess_status": postprocess_status, "ref_source": ref_source}
    if m is not None:
        rec.update(m.as_dict())
    else:
        rec.update({f.name: float("nan") for f in fields(LesionMetrics)})
        rec.update(pred_empty="", ref_empty="", tp="", fp="", fn="", pred_components="", ref_components="")
    return rec


def format_cell(v) -> str:
    """A CSV cell: booleans as 0/1, floats exactly (repr) with NaN as ``nan``, the rest as ``str``."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def write_metrics_csv(path: str | Path, records: Sequence[dict]) -> None:
    """``metrics.csv``: :data:`METRICS_COLUMNS`, one row per case x prediction folder; NaN as ``nan``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(METRICS_COLUMNS)
        for r in records:
            w.writerow([format_cell(r[c]) for c in METRICS_COLUMNS])


def jsonable(obj):
    """``obj`` with non-finite floats replaced by ``None`` (strict JSON has no NaN) and numpy scalars unwrapped."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def evaluate_folders(pred_dirs: Sequence[str | Path], ref_dir: str | Path, sidecar: str | Path,
                     out_dir: str | Path, names: Sequence[str] | None = None, split: str | None = "test",
                     images_dir: str | Path | None = None, allow_missing: bool = False,
                     interpolation: str = "linear", file_ending: str = ".mha", plots: bool = True,
                     postprocess: str | Sequence[str] = "none", ref_format: str = "auto",
                     lesion_label: int | None = None, threshold: float | None = None,
                     recist_convention: str = "auto") -> EvaluationResult:
    """Evaluate every prediction folder against ``ref_dir`` (module docstring); write and return the results.

    ``recist_convention``: the axis convention the ``*_err_recist`` errors compare the masks'
    axes under; ``auto`` takes the dataset's (:func:`nnunet_ulseg.conversion.sidecar.recist_convention`:
    ``uls23`` for a ULS23 import, ``edge`` for DeepLesion).

    ``ref_format``: the kind of reference folder, one of
    :data:`nnunet_ulseg.evaluation.references.REF_FORMATS` (``auto`` detects it).

    ``images_dir`` holds the CT crops (``<case>_0000<file_ending>``) for the gallery;
    default ``<ref_dir>/../imagesTs``; when absent the gallery is drawn without CT.
    ``postprocess``: one mode of :data:`nnunet_ulseg.postprocess.MODES` or several (each
    folder is then evaluated once per mode, named ``<name> [<mode>]``).
    ``lesion_label`` / ``threshold``: how the prediction files' values are read (module
    docstring, "Labels"; at most one of them).
    Raises ``FileNotFoundError`` for a missing folder, a missing prediction (unless
    ``allow_missing``) or when no case has a reference; ``ValueError`` for bad input.
    """
    if not pred_dirs:
        raise ValueError("no prediction folders given")
    ref_dir, sidecar, out_dir = Path(ref_dir), Path(sidecar), Path(out_dir)
    pred_paths = [Path(p) for p in pred_dirs]
    for p in [ref_dir, *pred_paths]:
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such folder")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: no such sidecar file")
    recist_convention = dataset_recist_convention(sidecar, recist_convention)
    folder_names = resolve_names(pred_paths, names)
    rule = LabelRule(lesion_label, threshold)
    modes = postprocess_modes(postprocess)
    entries = [(n if len(modes) == 1 else f"{n} [{mode}]", p, mode) for n, p in zip(folder_names, pred_paths)
               for mode in modes]
    names = [n for n, _, _ in entries]
    rows = select_rows(read_sidecar(sidecar), split)
    if not rows:
        raise ValueError(f"{sidecar}: no cases of split {split!r}")
    reference = open_reference(ref_dir, ref_format, rows, file_ending, interpolation)
    refs, sources, reasons, windows = read_references(reference, rows)
    with_ref = [r for r in rows if r.case in refs]
    without_ref = [r.case for r in rows if r.case not in refs]
    if not with_ref:
        raise FileNotFoundError(f"{ref_dir}: no reference ({reference.kind}) for any of the {len(rows)} "
                                f"cases of split {split!r} in {sidecar}; e.g. {next(iter(reasons.values()))}")
    missing = {n: [r.case for r in with_ref if not (p / f"{r.case}{file_ending}").is_file()]
               for n, p in zip(folder_names, pred_paths)}
    if not allow_missing:
        for n, p in zip(folder_names, pred_paths):
            if missing[n]:
                raise missing_predictions_error(p, missing[n], len(with_ref))

    # the CT crops: read by the image post-processing modes and drawn in the gallery
    ct_dir = Path(images_dir) if images_dir is not None else Path(ref_dir).resolve().parent / "imagesTs"
    records: list[dict] = []
    for row in with_ref:
        window = windows[row.case]
        ref = refs[row.case]
        spacing = (row.spacing_x, row.spacing_y)
        for n, p, mode in entries:
            path = p / f"{row.case}{file_ending}"
            if not path.is_file():
                records.append(_record(n, row, "missing", None, mode, ref_source=sources[row.case]))
                continue
            crop, pp_status = predicted_label(path, row, mode, ct_dir, file_ending, rule)
            pred = to_slice(crop, row, interpolation)[window]
            m = lesion_metrics(pred, ref, spacing, row.long_mm, row.short_mm, recist_convention=recist_convention)
            records.append(_record(n, row, "ok", m, mode, pp_status, sources[row.case]))

    out_dir.mkdir(parents=True, exist_ok=True)
    stats = aggregate(records, names)
    table = format_table(stats)
    table += "\n" + reference.summary_line() + "; metrics in key-slice geometry"
    if without_ref:
        table += f"\n{len(without_ref)} case(s) of split {split!r} have no reference in {ref_dir} and were skipped"
    pp_summary = postprocess_summary(records, entries)
    table += "\n" + format_postprocess(pp_summary)
    summary = {
        "settings": {"pred_dirs": {n: str(p) for n, p in zip(folder_names, pred_paths)}, "ref_dir": str(ref_dir),
                     "recist_convention": recist_convention,
                     "sidecar": str(sidecar), "split": split, "interpolation": interpolation,
                     "file_ending": file_ending, "allow_missing": allow_missing, "postprocess": modes,
                     "ref_format": ref_format, "lesion_label": lesion_label, "threshold": threshold,
                     "labels": rule.describe()},
        "reference": reference.describe(),
        "geometry": SCORING_GEOMETRY if reference.geometry == "slice" else
        SCORING_GEOMETRY + "; this run: crop-geometry reference, slice -> crop -> slice (lossy)",
        "definitions": {**DEFINITIONS, "labels": f"predictions: {rule.describe()}; references: label 1 (crop) "
                        "or value > 0 (slice geometry)"},
        "n_cases_in_split": len(rows),
        "n_evaluated_cases": len(with_ref),
        "n_without_reference": len(without_ref),
        "cases_without_reference": without_ref,
        "without_reference_reasons": {c: reasons[c] for c in without_ref},
        "missing_predictions": missing,
        "per_prediction": stats,
        "postprocess": pp_summary,
    }
    files = {"metrics": out_dir / "metrics.csv", "summary": out_dir / "summary.json",
             "table": out_dir / "summary.txt"}
    write_metrics_csv(files["metrics"], records)
    with open(files["summary"], "w", encoding="utf-8") as f:
        json.dump(jsonable(summary), f, indent=2, allow_nan=False)
        f.write("\n")
    files["table"].write_text(table + "\n", encoding="utf-8")
    if plots:
        files.update(_plots(records, entries, ref_dir, with_ref, refs, out_dir, images_dir, file_ending,
                            interpolation, windows, rule))
    return EvaluationResult(out_dir, records, summary, table, files)


def read_references(reference: Reference, rows: Sequence[LesionRow]
                    ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str], dict[str, tuple[slice, slice]]]:
    """Each row's reference, cut to its scoring window (:func:`slice_window` with the reference's own extent).

    Returns ``(masks, sources, reasons, windows)`` keyed by case: the windowed bool masks,
    their sources and windows for the rows that have a reference, the reasons for those
    that do not.  Only the window is kept, so thousands of 512 x 512 key slices are never
    held at once; the window covers the crop box and every reference pixel.
    """
    masks, sources, reasons, windows = {}, {}, {}, {}
    for row in rows:
        got = reference.get(row)
        if got.mask is None:
            reasons[row.case] = got.reason
        else:
            windows[row.case] = slice_window(row, mask=got.mask)
            masks[row.case], sources[row.case] = got.mask[windows[row.case]], got.source
    return masks, sources, reasons, windows


def postprocess_summary(records: Sequence[dict], entries: Sequence[tuple[str, Path, str]]) -> dict:
    """Per prediction name: its mode, the count of each post-processing status, and the fallback cases."""
    from nnunet_ulseg.postprocess import describe_mode

    out = {}
    for name, _, mode in entries:
        statuses = [r["postprocess_status"] for r in records if r["pred_name"] == name and r["status"] == "ok"]
        out[name] = {"mode": mode, "description": describe_mode(mode),
                     "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
                     "fallback_cases": [r["case"] for r in records if r["pred_name"] == name
                                        and str(r["postprocess_status"]).startswith("fallback_")]}
    return out


def format_postprocess(pp_summary: dict) -> str:
    """The lines saying which post-processing each prediction had (end of the printed table)."""
    modes = {v["mode"] for v in pp_summary.values()}
    if modes == {"none"}:
        return "post-processing: none (predictions as they are; --postprocess mark or mark-ellipse to clean them)"
    lines = ["post-processing (crop geometry, RECIST mark of lesions.csv):"]
    for name, v in pp_summary.items():
        counts = ", ".join(f"{k} {n}" for k, n in v["status_counts"].items())
        lines.append(f"  {name}: {v['description']}" + (f" [{counts}]" if v["mode"] != "none" and counts else ""))
    return "\n".join(lines)


def _read_ct(images_dir: Path | None, row: LesionRow, file_ending: str,
             window: tuple[slice, slice] | None = None) -> np.ndarray | None:
    """The CT crop of ``row`` pasted back into its key-slice window (HU; -1024 outside the crop), or None."""
    if images_dir is None:
        return None
    path = images_dir / image_filename(row.case, file_ending)
    if not path.is_file():
        return None
    ct = read_crop_mask(path)
    if ct.shape != (row.crop_size, row.crop_size):
        return None
    return paste_back_image(ct, row.box, (row.image_height, row.image_width))[window or slice_window(row)]


def _window(row: LesionRow) -> tuple[float, float]:
    """The row's DICOM window; DeepLesion's soft-tissue window (-175, 275) when it is not a valid range."""
    lo, hi = row.window_min, row.window_max
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else (-175.0, 275.0)


def _plots(records, entries, ref_dir, rows, refs, out_dir, images_dir, file_ending,
           interpolation="linear", windows=None, rule: LabelRule = DEFAULT_RULE) -> dict[str, Path]:
    """The Dice cumulative histogram and the gallery, drawn in the key-slice window where Dice is computed.

    The gallery shows the same lesions in every row (:func:`~.plots.shared_cases`).
    """
    from nnunet_ulseg.evaluation.plots import GalleryPanel, plot_dice_cumulative, plot_gallery, shared_cases

    names = [n for n, _, _ in entries]
    files = {}
    ok = [r for r in records if r["status"] == "ok"]
    dice = {n: [r["dice"] for r in ok if r["pred_name"] == n] for n in names}
    if any(dice.values()):
        files["dice_cumulative"] = plot_dice_cumulative({n: d for n, d in dice.items() if d},
                                                        out_dir / "dice_cumulative.png")
    images = Path(images_dir) if images_dir is not None else ref_dir.resolve().parent / "imagesTs"
    if not images.is_dir():
        logger.warning("no CT crops in %s: gallery drawn without CT", images)
        images = None
    by_case = {r.case: r for r in rows}
    by_name = {n: {r["case"]: r for r in ok if r["pred_name"] == n} for n in names}
    picked = shared_cases({n: list(v.values()) for n, v in by_name.items()})
    windows = windows or {}
    window_of = {case: windows.get(case) or slice_window(by_case[case]) for _, case in picked}
    cts = {case: _read_ct(images, by_case[case], file_ending, window_of[case]) for _, case in picked}
    gallery = {}
    for n, p, mode in entries:
        panels = []
        for kind, case in picked:
            rec, row = by_name[n].get(case), by_case[case]
            if rec is None:  # missing prediction for this folder: no panel
                continue
            window = window_of[case]
            origin = np.array([window[1].start, window[0].start], dtype=np.float64)
            pred = to_slice(predicted_label(p / f"{case}{file_ending}", row, mode, images, file_ending, rule)[0], row,
                            interpolation)
            panels.append(GalleryPanel(
                title=f"{kind}: {row.case} ({rec['lesion_type_name']})", pred=pred[window], ref=refs[case],
                dice=float(rec["dice"]), ct=cts[case], window=_window(row),
                recist=row.recist_slice_points - origin, spacing=row.spacing_x))
        gallery[n] = panels
    if any(gallery.values()):
        files["gallery"] = plot_gallery(gallery, out_dir / "gallery.png")
    return files
