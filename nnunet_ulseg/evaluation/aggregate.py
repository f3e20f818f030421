"""Aggregate per-lesion metrics per prediction folder and per lesion type; the printed tables.

Layout follows the papers: AHRNet Table 1 (mean ± std of precision, recall and Dice, in
%, one row per method) and WSSS Table 4 (Dice mean ± std per coarse lesion type Bone ..
Pelvis, then Total).  AHRNet Sec. 3 also quotes the share of lesions with Dice >= 0.8;
we report >= 0.8 and >= 0.85.

Choices where the papers are silent:

* std is the population standard deviation (``ddof=0``), as :func:`~.overlap.summarize`.
* NaN values (precision of an empty prediction, distances/axes when a mask is empty)
  are left out of mean/std/median/worst and counted as ``n_nan``; Dice is never NaN,
  so the Dice statistics and shares always cover every evaluated lesion.
* "worst" is the minimum for higher-is-better metrics (Dice, VS, precision, recall) and
  the maximum for distances and errors; none for raw axis lengths.
* Lesions whose prediction file is missing (``--allow-missing``) are not evaluated:
  they are counted (``n_missing``) and excluded from every statistic.
* A metric absent from a record (a ``metrics.csv`` written before that metric existed)
  counts as NaN for that record.
* The printed table names each distance and axis error by its definition
  (:data:`TABLE_NOTES`, see :mod:`~.distances` and :mod:`~.metrics`): the HD95 and AVD
  variants of the literature differ by up to a few tenths of a mm on small lesions, and
  the two axis conventions by a pixel.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from nnunet_ulseg.evaluation.metrics import LESION_TYPES, SUMMARY_METRICS, UNKNOWN_TYPE
from nnunet_ulseg.evaluation.overlap import summarize

#: Dice thresholds whose share of lesions is reported (AHRNet Sec. 3 quotes 0.8).
DICE_THRESHOLDS = (0.8, 0.85)
#: Order of the per-type columns (WSSS Table 4), then unknown.
TYPE_ORDER = tuple(LESION_TYPES.values()) + (UNKNOWN_TYPE,)
#: Definitions printed under the first table, one per distance/error column.
TABLE_NOTES = (
    "AvgHD: mean of the two directed mean surface distances",
    "HD95: 95th percentile (nearest rank) of both directions' surface distances pooled",
    "HD95max: max of the two directed 95th percentiles, linear (MONAI compute_hausdorff_distance)",
    "AVD: Taha & Hanbury, max of the two directed mean distances over all pixels",
    "long/short err: |p - r| / (|p| + |r|), ULS23 axes between boundary pixel centres",
)


def describe(values: Iterable[float], higher_is_better: bool | None) -> dict:
    """n (finite values), n_nan, mean, std, median and worst of ``values``."""
    v = np.asarray(list(values), dtype=np.float64)
    s = summarize(v)
    finite = v[np.isfinite(v)]
    if higher_is_better is None or finite.size == 0:
        worst = float("nan")
    else:
        worst = float(finite.min() if higher_is_better else finite.max())
    return {"n": s["n"], "n_nan": int(v.size - finite.size), "mean": s["mean"], "std": s["std"],
            "median": s["median"], "worst": worst}


def dice_shares(dice: Sequence[float], thresholds: Sequence[float] = DICE_THRESHOLDS) -> dict[str, float]:
    """Fraction of lesions with Dice >= each threshold (keys ``"0.8"``...); NaN for no lesions."""
    d = np.asarray(dice, dtype=np.float64)
    return {f"{t:g}": (float(np.mean(d >= t)) if d.size else float("nan")) for t in thresholds}


def group_summary(records: Sequence[dict]) -> dict:
    """Statistics of a group of evaluated lesions (records as in ``metrics.csv``, status ``ok``)."""
    def col(name):
        return [float(r.get(name, math.nan)) for r in records]

    return {
        "n_lesions": len(records),
        "n_empty_pred": sum(bool(r["pred_empty"]) for r in records),
        "n_empty_ref": sum(bool(r["ref_empty"]) for r in records),
        "n_distance_nan": sum(not math.isfinite(float(r["avg_hd_mm"])) for r in records),
        "n_axes_nan": sum(not (math.isfinite(float(r["long_err"])) and math.isfinite(float(r["short_err"])))
                          for r in records),
        "n_multi_component_pred": sum(int(r["pred_components"]) > 1 for r in records),
        "dice_at_least": dice_shares(col("dice")),
        "metrics": {m: describe(col(m), hib) for m, hib in SUMMARY_METRICS.items()},
    }


def aggregate(records: Sequence[dict], names: Sequence[str] | None = None) -> dict:
    """Per prediction folder (``pred_name``): overall and per-lesion-type statistics.

    ``records`` are ``metrics.csv`` rows (dicts with ``pred_name``, ``status``,
    ``lesion_type_name`` and the :class:`~.metrics.LesionMetrics` fields).  ``names`` fixes
    the order (default: first appearance).  Types appear in WSSS Table 4 order, only
    when they have lesions.
    """
    if names is None:
        names = list(dict.fromkeys(r["pred_name"] for r in records))
    out = {}
    for name in names:
        rows = [r for r in records if r["pred_name"] == name]
        ok = [r for r in rows if r["status"] == "ok"]
        summary = {"n_cases": len(rows), "n_missing": sum(r["status"] == "missing" for r in rows)}
        summary.update(group_summary(ok))
        summary["by_type"] = {t: group_summary(g) for t in TYPE_ORDER
                              if (g := [r for r in ok if r["lesion_type_name"] == t])}
        out[name] = summary
    return out


def _pm(stats: dict, scale: float = 1.0, digits: int = 1) -> str:
    if stats["n"] == 0:
        return "-"
    return f"{stats['mean'] * scale:.{digits}f}±{stats['std'] * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def format_table(summary: dict) -> str:
    """The printed summary: an AHRNet Table 1 style block, a WSSS Table 4 style block and counts."""
    head = ["prediction", "n", "Precision %", "Recall %", "Dice %", "VS %", "AvgHD mm", "HD95 mm",
            "HD95max mm", "AVD mm", "Dice>=0.8", "Dice>=0.85", "long err", "short err"]
    rows = []
    for name, s in summary.items():
        m = s["metrics"]
        share = s["dice_at_least"]
        rows.append([name, str(s["n_lesions"]), _pm(m["precision"], 100), _pm(m["recall"], 100),
                     _pm(m["dice"], 100), _pm(m["vs"], 100), _pm(m["avg_hd_mm"], 1, 2), _pm(m["hd95_mm"], 1, 2),
                     _pm(m["hd95_max_directed_mm"], 1, 2), _pm(m["avd_mm"], 1, 2), _share(share.get("0.8")), _share(share.get("0.85")), _pm(m["long_err"], 1, 3),
                     _pm(m["short_err"], 1, 3)])
    part1 = _table(head, rows) + "\n" + "\n".join(f"  {note}" for note in TABLE_NOTES)

    present = [t for t in TYPE_ORDER if t != UNKNOWN_TYPE or any(UNKNOWN_TYPE in s["by_type"] for s in summary.values())]
    head2 = ["Dice by type"] + [t.title() for t in present] + ["Total"]
    rows2 = []
    for name, s in summary.items():
        cells = [_pm(s["by_type"][t]["metrics"]["dice"], 1, 2) + f" ({s['by_type'][t]['n_lesions']})"
                 if t in s["by_type"] else "-" for t in present]
        rows2.append([name] + cells + [_pm(s["metrics"]["dice"], 1, 2) + f" ({s['n_lesions']})"])
    part2 = _table(head2, rows2)

    notes = []
    for name, s in summary.items():
        counts = {"missing": s["n_missing"], "empty prediction": s["n_empty_pred"],
                  "empty reference": s["n_empty_ref"], "distances NaN": s["n_distance_nan"],
                  "axes NaN": s["n_axes_nan"], "prediction with >1 component": s["n_multi_component_pred"]}
        text = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        notes.append(f"{name}: {text or 'no empty, missing or multi-component cases'}")
    return "\n\n".join([part1, part2 + "\n(mean±std of Dice, number of lesions in brackets)", "\n".join(notes)])


def _share(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"
