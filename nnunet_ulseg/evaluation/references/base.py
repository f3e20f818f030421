"""The reference protocol: one lesion's reference mask in key-slice geometry, whatever the files look like.

Every kind of reference folder (:mod:`.detect` lists them) is an object with the same
three parts, so ``ulseg evaluate`` and ``ulseg refine --truth`` score every kind the same
way, in the lesion's key slice (``image_height x image_width`` of its ``lesions.csv``
row), where the prediction is pasted back once:

* :meth:`Reference.get` ``(row)`` -> :class:`RefMask`: the lesion's boolean mask in
  key-slice geometry, the file (and slice / instance) it came from, or, when the folder
  holds nothing for the lesion, ``mask=None`` and the reason (no file; or a shared slice
  mask in which the lesion's RECIST mark crosses no lesion);
* :attr:`Reference.kind` (``png``, ``volume``, ``uls23``, ``crop``, ``sample``) and
  :attr:`Reference.geometry` (``slice``, or ``crop`` for the crop-geometry files that are
  pasted back, the lossy path);
* :meth:`Reference.describe`: kind, geometry, folder and how a lesion's mask is taken,
  for ``summary.json`` and the printed table.

:func:`lesion_in_slice` is the rule for a mask file shared by the lesions of one key
slice (DeepLesion has several rows per slice), used by the PNG and volume kinds.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_ulseg.conversion.sidecar import LesionRow
from nnunet_ulseg.evaluation.label_io import foreground
from nnunet_ulseg.recist import Recist, axis_pixels

#: How a lesion is taken from a slice mask (:func:`lesion_in_slice`).
SLICE_RULES = ("auto", "binary", "instance", "whole")
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class RefMask:
    """One lesion's reference: ``mask`` (bool, key-slice shape) or ``None`` with ``reason``; ``source`` says where."""

    mask: np.ndarray | None
    source: str
    reason: str = ""


class Reference(ABC):
    """Base of the reference kinds (module docstring); subclasses set ``kind``/``geometry`` and implement ``get``."""

    kind = ""
    geometry = "slice"
    rule_text = ""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @abstractmethod
    def get(self, row: LesionRow) -> RefMask:
        """The lesion's mask in key-slice geometry and its source, or no mask and the reason."""

    def describe(self) -> dict:
        """``kind``, ``geometry``, ``folder`` and ``rule`` (how one lesion's mask is found and taken)."""
        return {"kind": self.kind, "geometry": self.geometry, "folder": str(self.folder), "rule": self.rule_text}

    def summary_line(self) -> str:
        """One line for the printed table."""
        where = ("key-slice geometry, read directly" if self.geometry == "slice" else
                 "crop geometry, pasted back into the key slice (lossy: prefer a slice-geometry reference)")
        return f"reference: {self.kind} ({where}) from {self.folder}"


def check_slice_shape(array: np.ndarray, row: LesionRow, path: Path | str, what: str = "reference") -> None:
    """``ValueError`` naming ``path`` and the case when a 2D slice is not ``image_height x image_width``."""
    if array.shape != (row.image_height, row.image_width):
        raise ValueError(f"{path}: {what} slice of shape {array.shape} (rows, columns) does not match case "
                         f"{row.case}'s key slice {row.image_height} x {row.image_width} in lesions.csv")


def mark_pixels(row: LesionRow, shape: tuple[int, int]) -> np.ndarray:
    """Pixels under ``row``'s RECIST long and short axes in the key slice (:func:`nnunet_ulseg.recist.axis_pixels`)."""
    return axis_pixels(Recist.from_points(row.recist_slice_points), shape)


def looks_like_instance_map(array: np.ndarray, fg: np.ndarray | None = None) -> bool:
    """Whether an integer slice mask reads as instance ids rather than as a binary mask.

    Several non-zero values alone are not enough: a 0/255 mask that was resized or
    anti-aliased has edge values 1..254, and reading it as instances would keep only the
    value under most of the mark.  Instance ids are few and small next to their count
    (1..n, or a sparse set of small numbers), so: at least two distinct non-zero values,
    at most 64 of them, and the largest at most 4 x their number.  A 0/255 mask with
    any edge values fails the last test (255 > 4 x fewer than 64).
    """
    if np.issubdtype(array.dtype, np.floating):
        return False
    values = np.unique(array[foreground(array) if fg is None else fg])
    return 2 <= values.size <= 64 and int(values.max()) <= 4 * values.size


def lesion_in_slice(array: np.ndarray, row: LesionRow, source: str, rule: str = "auto") -> RefMask:
    """``row``'s lesion in a 2D key-slice mask ``array`` (already checked against the slice shape).

    ``rule``:

    * ``whole``: the file holds this lesion only; every foreground pixel
      (:func:`~nnunet_ulseg.evaluation.label_io.foreground`) is the lesion.
    * ``instance``: an instance map (0 = background, one value per lesion): the lesion is
      the instance under its RECIST mark; when the mark covers several, the one under
      most mark pixels (ties: the smaller value).
    * ``binary``: lesion/background only (0/1, 0/255, ...; any value > 0 is lesion): the
      lesion is the union of the 8-connected foreground components its RECIST axes
      cross, so two marked lesions on one slice get their own components (two lesions
      that touch share one component: the mask cannot separate them).
    * ``auto``: ``instance`` when the slice's values look like instance ids
      (:func:`looks_like_instance_map`: a few small ids, not a 0/255 mask with
      anti-aliased edges), else ``binary``.  A float slice is always ``binary``.

    No instance or component under the mark gives ``mask=None`` with the reason: the
    lesion is counted as having no reference, not scored against an empty mask (the
    mask may annotate other lesions of the slice only).
    """
    if rule not in SLICE_RULES:
        raise ValueError(f"slice rule must be one of {SLICE_RULES}, got {rule!r}")
    fg = foreground(array)
    if rule == "whole":
        return RefMask(fg, source)
    if rule == "auto":
        rule = "instance" if looks_like_instance_map(array, fg) else "binary"
    under = mark_pixels(row, fg.shape) & fg
    if rule == "instance":
        values, counts = np.unique(array[under], return_counts=True)
        if values.size == 0:
            return RefMask(None, source, f"case {row.case}: its RECIST mark crosses no instance of {source}")
        value = values[np.argmax(counts)]  # np.unique sorts: argmax takes the smaller value on ties
        return RefMask(array == value, f"{source} (instance {value.item()})")
    labels, _ = ndimage.label(fg, structure=EIGHT)
    hit = np.unique(labels[under])
    hit = hit[hit > 0]
    if hit.size == 0:
        return RefMask(None, source, f"case {row.case}: its RECIST mark crosses no lesion of the binary mask {source}")
    return RefMask(np.isin(labels, hit), f"{source} (component{'s' if hit.size > 1 else ''} under the mark)")
