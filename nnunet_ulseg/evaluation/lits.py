"""LiTS protocol metrics: Dice per case, global Dice, tumour burden RMSE (E²Net Sec. 3, "Evaluation Criteria").

The paper follows the LiTS challenge: for the liver (labels 1 and 2: the liver includes
its tumours) and for the tumour (label 2),

* **Dice per case**: the Dice of each volume, averaged over the volumes;
* **Dice global**: one Dice over all volumes pooled, ``2 sum TP / sum (2 TP + FP + FN)``,
  counted in voxels (as "combining all CT scans into one"), so a large liver weighs more
  than a small one and small tumours hardly count (the paper's Sec. 3 discussion of why its
  per-case tumour Dice trails its global one);
* **tumour burden**: tumour volume / liver volume of a case (both in mm³, so the ratio
  does not depend on the spacing; the liver volume includes the tumours), and the RMSE of
  prediction minus reference over the cases.

Open choices, and why:

* **Cases without tumour** in the reference.  Their tumour Dice is 0/0.  ``empty="one"``
  (default) scores 1 when the prediction has no tumour either and 0 when it has any: a
  correct "no tumour" is a perfect answer, and it is the value ``medpy.metric.dc`` (the
  metric LiTS-style evaluation scripts call; medpy >= 0.5 returns 1 for two empty masks)
  gives.  ``"zero"`` scores such a case 0 whatever the prediction (older medpy's value);
  ``"skip"`` leaves those cases out of the tumour's per-case mean (their false positives
  still count in the global Dice).  The same rule applies to an empty liver (never the
  case in LiTS).
* **Burden of an empty liver** is 0 (the tumour is a subset of the liver region, so an
  empty liver has no tumour either).
* Label values other than 0, 1, 2 in either file are an error naming the file, never
  read as background.

:func:`evaluate_lits_folder` matches prediction and reference files by case (same file
stem; else the same case number, e.g. ``LiTS_0012.mha`` with ``segmentation-12.nii``),
checks that each pair shares its voxel grid (size, spacing, origin, direction) and
raises ``ValueError`` naming the file otherwise; it writes ``lits_metrics.csv`` (one row per
case) and ``lits_summary.json``.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .label_io import IMAGE_ENDINGS

LIVER_LABELS = (1, 2)
TUMOUR_LABEL = 2
EMPTY_RULES = ("one", "zero", "skip")
METRICS_CSV = "lits_metrics.csv"
SUMMARY_JSON = "lits_summary.json"


@dataclass(frozen=True)
class Overlap:
    """Voxel counts of one structure in one case: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def empty(self) -> bool:
        """Neither prediction nor reference has the structure."""
        return self.tp + self.fp + self.fn == 0

    @property
    def reference_empty(self) -> bool:
        return self.tp + self.fn == 0


def overlap(pred: np.ndarray, ref: np.ndarray) -> Overlap:
    """TP/FP/FN of two boolean masks of the same shape."""
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    return Overlap(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp)


def case_dice(o: Overlap, empty: str = "one") -> float:
    """Dice of one case; a case with an empty reference follows ``empty`` (module docstring); nan = skipped."""
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}")
    if o.reference_empty:
        if empty == "skip":
            return math.nan
        if empty == "zero":
            return 0.0
        return 1.0 if o.fp == 0 else 0.0
    return 2.0 * o.tp / (2 * o.tp + o.fp + o.fn)


def global_dice(overlaps: Iterable[Overlap]) -> float:
    """Dice of all cases pooled; nan when no case has the structure in prediction or reference."""
    tp = fp = fn = 0
    for o in overlaps:
        tp, fp, fn = tp + o.tp, fp + o.fp, fn + o.fn
    return 2.0 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan


def burden(tumour_voxels: int, liver_voxels: int) -> float:
    """Tumour volume / liver volume (the spacing cancels); 0 for an empty liver."""
    return tumour_voxels / liver_voxels if liver_voxels else 0.0


def rmse(pred: Sequence[float], ref: Sequence[float]) -> float:
    """Root mean square of ``pred - ref``; nan for no cases."""
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predictions vs {len(ref)} references")
    if not len(pred):
        return math.nan
    d = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


@dataclass
class CaseScore:
    """One case's LiTS metrics (volumes in ml) and voxel counts."""

    case: str
    prediction: str
    reference: str
    liver_dice: float
    tumour_dice: float
    liver_tp: int
    liver_fp: int
    liver_fn: int
    tumour_tp: int
    tumour_fp: int
    tumour_fn: int
    liver_ref_ml: float
    liver_pred_ml: float
    tumour_ref_ml: float
    tumour_pred_ml: float
    burden_ref: float
    burden_pred: float
    tumour_free_reference: bool

    @property
    def liver(self) -> Overlap:
        return Overlap(self.liver_tp, self.liver_fp, self.liver_fn)

    @property
    def tumour(self) -> Overlap:
        return Overlap(self.tumour_tp, self.tumour_fp, self.tumour_fn)


def score_case(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), case: str = "",
               prediction: str = "", reference: str = "", empty: str = "one") -> CaseScore:
    """LiTS metrics of one case from two 0/1/2 label arrays of the same shape (``spacing`` in mm, any order)."""
    liver = overlap(np.isin(pred, LIVER_LABELS), np.isin(ref, LIVER_LABELS))
    tumour = overlap(pred == TUMOUR_LABEL, ref == TUMOUR_LABEL)
    ml = float(np.prod(spacing)) / 1000.0
    liver_ref, liver_pred = liver.tp + liver.fn, liver.tp + liver.fp
    tumour_ref, tumour_pred = tumour.tp + tumour.fn, tumour.tp + tumour.fp
    return CaseScore(case, prediction, reference, case_dice(liver, empty), case_dice(tumour, empty),
                     liver.tp, liver.fp, liver.fn, tumour.tp, tumour.fp, tumour.fn,
                     liver_ref * ml, liver_pred * ml, tumour_ref * ml, tumour_pred * ml,
                     burden(tumour_ref, liver_ref), burden(tumour_pred, liver_pred), tumour.reference_empty)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def summarise(scores: Sequence[CaseScore], empty: str = "one") -> dict:
    """The LiTS table of ``scores``: Dice per case and global for liver and tumour, burden RMSE, counts."""
    return {
        "n_cases": len(scores),
        "liver": {"dice_per_case": _nanmean([s.liver_dice for s in scores]),
                  "dice_global": global_dice(s.liver for s in scores)},
        "tumour": {"dice_per_case": _nanmean([s.tumour_dice for s in scores]),
                   "dice_global": global_dice(s.tumour for s in scores),
                   "cases_without_reference_tumour": sum(s.tumour_free_reference for s in scores)},
        "tumour_burden_rmse": rmse([s.burden_pred for s in scores], [s.burden_ref for s in scores]),
        "empty_reference_rule": empty,
    }


def format_table(summary: dict) -> str:
    """The summary as a small text table (the layout of the paper's Table 1)."""
    def f(v: float) -> str:
        return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"

    lines = [f"{'':8s} {'Dice per case (%)':>18s} {'Dice global (%)':>16s}"]
    for k in ("liver", "tumour"):
        lines.append(f"{k:8s} {f(summary[k]['dice_per_case']):>18s} {f(summary[k]['dice_global']):>16s}")
    b = summary["tumour_burden_rmse"]
    lines.append(f"tumour burden RMSE: {'n/a' if math.isnan(b) else f'{b:.4f}'}  ({summary['n_cases']} cases, "
                 f"{summary['tumour']['cases_without_reference_tumour']} without reference tumour, rule "
                 f"'{summary['empty_reference_rule']}')")
    return "\n".join(lines)


# -- folders ---------------------------------------------------------------------------------------------------------
def _stem(name: str) -> str | None:
    low = name.lower()
    for ending in IMAGE_ENDINGS:
        if low.endswith(ending):
            return name[: -len(ending)]
    return None


def _number(stem: str) -> int | None:
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    out = {}
    for p in sorted(folder.iterdir()):
        s = _stem(p.name)
        if s is not None and p.is_file():
            if s in out:
                raise ValueError(f"{folder}: two files for case {s!r} ({out[s].name}, {p.name})")
            out[s] = p
    return out


def match_cases(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[str, Path | None, Path]], list[Path]]:
    """``[(case, prediction or None, reference)]`` for every reference, and the predictions left unmatched.

    Same stem first; then the same trailing case number, when that number names one file
    on each side.
    """
    preds, refs = _images(pred_dir), _images(ref_dir)
    if not refs:
        raise FileNotFoundError(f"{ref_dir} holds no reference label files ({', '.join(IMAGE_ENDINGS)})")
    pairs, used = [], set()
    by_number: dict[int, list[str]] = {}
    for s in preds:
        n = _number(s)
        if n is not None:
            by_number.setdefault(n, []).append(s)
    ref_numbers: dict[int, int] = {}
    for s in refs:
        n = _number(s)
        if n is not None:
            ref_numbers[n] = ref_numbers.get(n, 0) + 1
    for s, ref in refs.items():
        if s in preds:
            match = s
        else:
            n = _number(s)
            cands = [c for c in by_number.get(n, []) if c not in refs] if n is not None else []
            match = cands[0] if len(cands) == 1 and ref_numbers.get(n) == 1 else None
        if match is not None:
            used.add(match)
        pairs.append((s, preds[match] if match is not None else None, ref))
    return pairs, [p for s, p in preds.items() if s not in used]


def _read(path: Path, what: str):
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{what} {path}: cannot be read ({str(e).strip().splitlines()[-1][:200]})") from None
    array = sitk.GetArrayFromImage(image)
    values = np.unique(array)
    if not set(values.tolist()) <= {0, 1, 2}:
        shown = ", ".join(f"{v:g}" for v in values[:8])
        raise ValueError(f"{what} {path}: label values {shown}; LiTS labels are 0 background, 1 liver, 2 tumour")
    return image, array.astype(np.uint8)


def _check_grid(pred, ref, pred_path: Path, ref_path: Path) -> None:
    problems = []
    if pred.GetSize() != ref.GetSize():
        problems.append(f"size {pred.GetSize()} vs {ref.GetSize()}")
    elif not np.allclose(pred.GetSpacing(), ref.GetSpacing(), rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {pred.GetSpacing()} vs {ref.GetSpacing()}")
    elif not np.allclose(pred.GetOrigin(), ref.GetOrigin(), rtol=0, atol=0.01 * min(ref.GetSpacing())):
        problems.append(f"origin {pred.GetOrigin()} vs {ref.GetOrigin()}")
    elif not np.allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-4):
        problems.append("direction differs")
    if problems:
        raise ValueError(f"prediction {pred_path} is not on the voxel grid of its reference {ref_path}: "
                         f"{problems[0]} (predict in the input's geometry, e.g. paste stage-2 crops back)")


def evaluate_lits_folder(pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path | None = None,
                         empty: str = "one", allow_missing: bool = False, progress: bool = True
                         ) -> tuple[list[CaseScore], dict]:
    """Score every reference in ``ref_dir`` against its prediction in ``pred_dir``; write CSV + JSON to ``out_dir``.

    ``out_dir`` defaults to ``pred_dir``.  A reference without a prediction is an error
    naming it, unless ``allow_missing``: then it is scored as an empty prediction (LiTS
    scores a missing volume that way) and counted in the summary.
    """
    from tqdm import tqdm

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    pairs, unmatched = match_cases(pred_dir, ref_dir)
    missing = [ref for _, p, ref in pairs if p is None]
    if missing and not allow_missing:
        raise FileNotFoundError(f"no prediction in {pred_dir} for {len(missing)} reference(s), e.g. {missing[0]} "
                                "(use --chill to score them as empty predictions)")
    scores = []
    for case, pred_path, ref_path in tqdm(pairs, desc="evaluate LiTS", unit="case", disable=not progress):
        ref_image, ref = _read(ref_path, "reference")
        if pred_path is None:
            pred = np.zeros_like(ref)
        else:
            pred_image, pred = _read(pred_path, "prediction")
            _check_grid(pred_image, ref_image, pred_path, ref_path)
        scores.append(score_case(pred, ref, ref_image.GetSpacing(), case, str(pred_path or ""), str(ref_path),
                                 empty))
    summary = summarise(scores, empty)
    summary.update(missing_predictions=len(missing), unmatched_predictions=[str(p) for p in unmatched],
                   prediction_dir=str(pred_dir), reference_dir=str(ref_dir))
    out = Path(out_dir) if out_dir is not None else pred_dir
    out.mkdir(parents=True, exist_ok=True)
    with open(out / METRICS_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        columns = list(asdict(scores[0]).keys()) if scores else ["case"]
        w.writerow(columns)
        for s in scores:
            w.writerow([repr(v) if isinstance(v, float) else v for v in asdict(s).values()])
    (out / SUMMARY_JSON).write_text(json.dumps(_json_safe(summary), indent=1), encoding="utf-8")
    return scores, summary


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


__all__ = ["Overlap", "overlap", "case_dice", "global_dice", "burden", "rmse", "CaseScore", "score_case",
           "summarise", "format_table", "match_cases", "evaluate_lits_folder", "EMPTY_RULES"]
