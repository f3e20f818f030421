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
* **Gallery**: for every prediction folder, its best, median and worst lesion by Dice
  (median = the ``(n-1)//2``-th in ascending order; ties keep the sidecar order).  Each
  panel shows the CT crop in the row's DICOM window, the reference contour in green,
  the prediction contour in red (AHRNet Fig. 5), the Dice in yellow and the RECIST
  mark in thin white lines (as WSSS Fig. 2).  Panels are drawn in crop geometry (the
  files as written), which is where the CT is; metrics are computed in the key slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_ulseg.evaluation.aggregate import DICE_THRESHOLDS
from nnunet_ulseg.recist import boundary_polygons

REF_COLOUR = "#00ff00"
PRED_COLOUR = "#ff2020"


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


@dataclass
class GalleryPanel:
    """One gallery panel: crop-geometry CT (or None), masks, window, title, Dice, RECIST crop points."""

    title: str
    pred: np.ndarray
    ref: np.ndarray
    dice: float
    ct: np.ndarray | None = None
    window: tuple[float, float] = (-175.0, 275.0)
    recist: np.ndarray | None = None


def _draw_contours(ax, mask: np.ndarray, colour: str, lw: float) -> None:
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return
    for poly in boundary_polygons(m):
        ax.plot(poly[:, 0], poly[:, 1], color=colour, lw=lw)


def plot_gallery(rows: Mapping[str, Sequence[GalleryPanel]], path: str | Path) -> Path:
    """Write the gallery PNG: one row of panels per prediction folder (named on the left; AHRNet Fig. 5 colours)."""
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
            _draw_contours(ax, p.ref, REF_COLOUR, 1.5)
            _draw_contours(ax, p.pred, PRED_COLOUR, 1.5)
            ax.text(0.04, 0.94, f"{p.dice:.3f}", color="yellow", fontsize=11, fontweight="bold",
                    transform=ax.transAxes, va="top")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(p.title, fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle("reference (green) vs prediction (red); Dice in yellow", fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path
