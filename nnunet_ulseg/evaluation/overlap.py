"""Overlap metrics between binary masks (AHRNet Table 1 reports precision, recall, Dice)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Overlap:
    """Pixel counts of a prediction against a reference."""

    tp: int
    fp: int
    fn: int

    @classmethod
    def of(cls, pred: np.ndarray, ref: np.ndarray) -> "Overlap":
        pred = np.asarray(pred, dtype=bool)
        ref = np.asarray(ref, dtype=bool)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
        tp = int(np.count_nonzero(pred & ref))
        return cls(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp)

    @classmethod
    def outside(cls, pred: np.ndarray, ref: np.ndarray, ignore: np.ndarray) -> "Overlap":
        """Counts over the pixels *not* in ``ignore`` only: how right a label map with an ignore label is.

        A refined pseudo mask (AHRNet Sec. 2.3) commits to lesion and background and leaves
        ``ignore`` out of the loss; these counts score exactly what it teaches.  With an
        empty ``ignore`` they equal :meth:`of`.
        """
        keep = ~np.asarray(ignore, dtype=bool)
        return cls.of(np.asarray(pred, dtype=bool) & keep, np.asarray(ref, dtype=bool) & keep)

    @property
    def dice(self) -> float:
        """``2TP / (2TP + FP + FN)``; 1.0 when both masks are empty (nothing to find, nothing found)."""
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2 * self.tp / denom

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``; NaN for an empty prediction (undefined, never silently 0 or 1)."""
        denom = self.tp + self.fp
        return float("nan") if denom == 0 else self.tp / denom

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)``; NaN for an empty reference."""
        denom = self.tp + self.fn
        return float("nan") if denom == 0 else self.tp / denom


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two binary masks (see :attr:`Overlap.dice`)."""
    return Overlap.of(pred, ref).dice


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """Mean, std, median, worst (min) and count of finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "median": float("nan"), "min": float("nan")}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min())}
