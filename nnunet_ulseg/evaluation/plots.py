"""Evaluation figures: the Dice cumulative histogram (AHRNet Fig. 4) and a case gallery (AHRNet Fig. 5).

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, not
through ``pyplot``, so nothing changes matplotlib's global backend or state and no
display is needed.

* **Dice cumulative histogram**: one curve per prediction folder, ``x`` = Dice threshold
  ``t``, ``y`` = fraction of lesions with ``Dice >= t`` (the complementary cumulative
  form: AHRNet reads "about 99% ... lesions having Dice >= 0.8" directly off it).  The
  curve starts at 1 and falls; higher and further right is better.  Like AHRNet's
  figure the x axis is truncated: it starts at the lowest Dice rounded down to 0.1,
  or at 0.75 if that is lower, so no lesion is ever cut off and both marks are in
  view.  Dashed lines mark 0.8 and 0.85.
* **Gallery**: one row per prediction folder, the **same lesions in every row**
  (:func:`shared_cases`: best, median and worst by the mean Dice over the folders, so
  methods are compared on one lesion; median = the ``(n-1)//2``-th in ascending order;
  ties keep the sidecar order).  Each panel shows the CT in the row's DICOM window, the
  reference contour and the prediction contour, the Dice and the RECIST mark in thin
  white lines (as WSSS Fig. 2), and a scale bar in mm when the spacing is given.  The
  evaluation draws panels in the key-slice window where Dice is computed
  (:func:`~nnunet_ulseg.evaluation.evaluate.slice_window`), the CT crop pasted back
  under it.  Choice: AHRNet Fig. 5's green/red pair is unreadable for red-green colour
  blindness, so contours use the Okabe–Ito palette's sky blue (reference) and orange
  (prediction), told apart under every common colour-vision deficiency, drawn with
  different line styles as well (solid reference, dashed prediction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_ulseg.evaluation.aggregate import DICE_THRESHOLDS
from nnunet_ulseg.recist import boundary_polygons

#: Okabe–Ito sky blue and orange (module docstring).
REF_COLOUR = "#56B4E9"
PRED_COLOUR = "#E69F00"
#: Scale bar lengths tried, in mm (the longest that fits a quarter of the panel).
SCALE_BAR_MM = (1, 2, 5, 10, 20, 50, 100, 200)


def dice_survival(dice: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of lesions with ``Dice >= t`` for each threshold ``t`` (NaN Dice values are dropped)."""
    d = np.asarray(dice, dtype=np.float64)
    d = d[np.isfinite(d)]
    t = np.asarray(thresholds, dtype=np.float64)
    if d.size == 0:
        return np.full(t.shape, np.nan)
    return (d[None, :] >= t[:, None]).mean(axis=1)


def _figure(width: float, height: float, layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def plot_dice_cumulative(dice_by_name: Mapping[str, Sequence[float]], path: str | Path,
                         marks: Sequence[float] = DICE_THRESHOLDS) -> Path:
    """Write the Dice cumulative histogram PNG (module docstring) and return its path."""
    if not dice_by_name:
        raise ValueError("plot_dice_cumulative: no prediction folders to plot")
    all_d = np.concatenate([np.asarray(v, dtype=np.float64) for v in dice_by_name.values()] + [np.ones(1)])
    all_d = all_d[np.isfinite(all_d)]
    x_lo = math.floor(float(all_d.min()) * 10 + 1e-9) / 10
    x_lo = min(x_lo, min(marks) - 0.05) if marks else x_lo
    x_lo = max(0.0, x_lo)
    grid = np.linspace(x_lo, 1.0, 1001)
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, dice in dice_by_name.items():
        d = np.asarray(dice, dtype=np.float64)
        d = d[np.isfinite(d)]
        if d.size == 0:
            continue
        share = float(np.mean(d >= 0.8))
        ax.plot(grid, dice_survival(d, grid), lw=2, drawstyle="steps-post",
                label=f"{name} (n={d.size}, Dice>=0.8: {100 * share:.0f}%)")
    for m in marks:
        ax.axvline(m, color="0.5", ls="--", lw=1)
    ax.set_xlim(x_lo, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Dice threshold t")
    ax.set_ylabel("fraction of lesions with Dice >= t")
    ax.set_title("Dice cumulative histogram")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def window_image(ct: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """CT values mapped to ``[0, 1]`` with the display window ``(min, max)`` in HU (clipped)."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window max must exceed min, got {window}")
    return np.clip((np.asarray(ct, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def pick_cases(records: Sequence[dict], key: str = "dice") -> list[tuple[str, dict]]:
    """``[("best", r), ("median", r), ("worst", r)]`` by ``key`` among records with a finite value.

    Best is the highest, worst the lowest; median the ``(n-1)//2``-th in ascending
    order.  A stable sort keeps the input order on ties.  Fewer than 3 records give
    fewer distinct cases (the same record may appear twice); no records give ``[]``.
    """
    rs = [r for r in records if math.isfinite(float(r[key]))]
    if not rs:
        return []
    ordered = sorted(rs, key=lambda r: float(r[key]))
    best = max(rs, key=lambda r: float(r[key]))
    return [("best", best), ("median", ordered[(len(ordered) - 1) // 2]), ("worst", ordered[0])]


def shared_cases(records_by_name: Mapping[str, Sequence[dict]], key: str = "dice") -> list[tuple[str, str]]:
    """``[("best", case), ("median", case), ("worst", case)]`` shared by every gallery row.

    Lesions with a finite ``key`` in every folder's records are ranked by the mean over
    the folders (:func:`pick_cases` on those means, sidecar order kept on ties); when no
    lesion is scored by all folders, the lesions scored by any count.
    """
    values: dict[str, list[float]] = {}
    for recs in records_by_name.values():
        for r in recs:
            v = float(r[key])
            if math.isfinite(v):
                values.setdefault(r["case"], []).append(v)
    n = len(records_by_name)
    common = {c: v for c, v in values.items() if len(v) == n} or values
    means = [{"case": c, key: float(np.mean(v))} for c, v in common.items()]
    return [(kind, r["case"]) for kind, r in pick_cases(means, key)]


@dataclass
class GalleryPanel:
    """One gallery panel: CT (or None) and masks on one pixel grid, window, title, Dice, RECIST points.

    ``spacing``: mm per pixel of that grid along x (a scale bar is drawn when given).
    """

    title: str
    pred: np.ndarray
    ref: np.ndarray
    dice: float
    ct: np.ndarray | None = None
    window: tuple[float, float] = (-175.0, 275.0)
    recist: np.ndarray | None = None
    spacing: float | None = None


def _draw_contours(ax, mask: np.ndarray, colour: str, lw: float, ls: str = "-") -> None:
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return
    for poly in boundary_polygons(m):
        ax.plot(poly[:, 0], poly[:, 1], color=colour, lw=lw, ls=ls)


def scale_bar_mm(width_px: int, spacing: float) -> float | None:
    """The longest of :data:`SCALE_BAR_MM` no longer than a quarter of ``width_px`` pixels of ``spacing`` mm."""
    if not (spacing and spacing > 0 and math.isfinite(spacing)):
        return None
    fits = [mm for mm in SCALE_BAR_MM if mm / spacing <= width_px / 4]
    return float(fits[-1]) if fits else None


def _draw_scale_bar(ax, h: int, w: int, spacing: float) -> None:
    mm = scale_bar_mm(w, spacing)
    if mm is None:
        return
    length = mm / spacing
    x1, y = w - 0.5 - 0.05 * w, h - 0.5 - 0.06 * h
    ax.plot([x1 - length, x1], [y, y], color="white", lw=2.5, solid_capstyle="butt")
    ax.text(x1 - length / 2, y - 0.03 * h, f"{mm:g} mm", color="white", fontsize=7, ha="center", va="bottom")


def plot_gallery(rows: Mapping[str, Sequence[GalleryPanel]], path: str | Path) -> Path:
    """Write the gallery PNG: one row of panels per prediction folder (named on the left; module docstring)."""
    rows = {k: list(v) for k, v in rows.items() if v}
    if not rows:
        raise ValueError("plot_gallery: no cases to draw")
    n_cols = max(len(v) for v in rows.values())
    fig = _figure(3.0 * n_cols, 3.25 * len(rows), layout="constrained")
    for i, (name, panels) in enumerate(rows.items()):
        for j, p in enumerate(panels):
            ax = fig.add_subplot(len(rows), n_cols, i * n_cols + j + 1)
            h, w = p.ref.shape
            if p.ct is not None:
                ax.imshow(window_image(p.ct, p.window), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(np.full((h, w), 0.15), cmap="gray", vmin=0, vmax=1)
                ax.text(0.5, 0.04, "no CT found", color="white", fontsize=7, ha="center",
                        transform=ax.transAxes)
            if p.recist is not None:
                pts = np.asarray(p.recist, dtype=np.float64).reshape(4, 2)
                for a in (pts[:2], pts[2:]):
                    ax.plot(a[:, 0], a[:, 1], color="white", lw=0.8, alpha=0.8)
            _draw_contours(ax, p.ref, REF_COLOUR, 1.8)
            _draw_contours(ax, p.pred, PRED_COLOUR, 1.5, "--")
            if p.spacing is not None:
                _draw_scale_bar(ax, h, w, p.spacing)
            ax.text(0.04, 0.94, f"{p.dice:.3f}", color="white", fontsize=11, fontweight="bold",
                    transform=ax.transAxes, va="top",
                    bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5})
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(p.title, fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle("reference (sky blue, solid) vs prediction (orange, dashed); Dice top left", fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path
