"""Post-processing of a lesion predicted slice by slice, with its RECIST mark and the 3D RECIST estimate.

A 2D model applied to the slices around a lesion's key slice does not know where the
lesion ends: on a slice past its end it still paints whatever looks like a lesion near the
crop centre (the next lesion, a vessel, partial volume).  WSSS (Sec. 3.3, Algorithm 1)
never trusts such a slice alone: the mark of every off-key slice is the 3D RECIST
estimate ``R̂`` (:func:`~nnunet_ulseg.pseudo_masks.recist3d.estimate_recist`, the key
mark shrunk by Pythagoras at the slice's mm distance), propagation goes outwards one slice
at a time, and it ends where ``R̂`` vanishes.  This module is that rule for inference and
evaluation, owned once:

* :func:`walk_outwards`: from the key slice, up and down, one slice per step; at each step
  the estimate ``R̂`` is computed and the caller's ``keep_at(offset, R̂)`` gives the slice's
  kept mask (or ``None``: no slice there).  A direction **stops** at the first step where
  ``max_steps`` is exceeded (``"max_slices"``), ``R̂`` vanishes
  (``"recist_estimate_vanished"``, beyond the lesion's reach as the mark tells it), there is
  no slice (``"no_slice"``: the volume ends, or the folder predicted no further) or the kept
  mask is empty (``"empty_prediction"``: the model no longer sees a lesion under ``R̂``).
  Nothing beyond a stop is kept, even if the model paints lesion there again: a lesion is
  one connected run of slices through its key slice.
* :func:`keep_off_key`: one off-key slice: the components ``R̂``'s axes cross, with **no**
  fallback (an estimate guarantees nothing: an empty result ends the walk); for
  ``mark-grabcut`` the non-empty result is then refined by the 2D ``mark-grabcut`` mode with
  ``R̂`` and the slice's CT (WSSS's CNN-GC on every propagated slice, Sec. 3.3).
* :func:`keep_marked_slices`: the walk over masks that were already predicted
  (``{offset: mask}``, e.g. ``ulseg propagate``'s test predictions): the key slice gets the
  2D mode of :mod:`nnunet_ulseg.postprocess` with the drawn mark (with its ellipse
  fallback, since a drawn mark guarantees a lesion there), every off-key slice
  :func:`keep_off_key`.  Used by ``ulseg evaluate --3d --postprocess``.

``ulseg segment --propagate`` (:mod:`nnunet_ulseg.segment.lesion`) walks with the same
functions, predicting each slice as it goes.

Choices where the paper is silent:

* Checks in the order max_steps, ``R̂``, slice, prediction: the estimate costs nothing and
  decides before any prediction is made, so a volume that ends on the step where ``R̂`` also
  vanishes reports ``recist_estimate_vanished``.
* The component rule is the 2D one (components crossed by the rasterised axes of ``R̂``,
  holes filled; ``mark-ellipse`` also clips to ``R̂``'s ellipse x 1.5): ``R̂``'s axes are
  chords of the lesion on that slice as much as the drawn ones are on the key slice.
* ``mark-grabcut`` off the key slice: the 2D mode's own axis test then compares the mask
  with ``R̂``'s axes; where it fails and GrabCut from ``R̂``'s ellipse fails too, the slice
  keeps ``R̂``'s ellipse (the 2D mode's ``fallback_ellipse_axes``): the model did see a
  lesion under ``R̂`` (the marked step was not empty), so the walk goes on.
* No overlap test between consecutive slices: ``R̂`` stays centred on the key mark's
  crossing point, so the kept components of consecutive slices all cross the same axis
  line; an overlap test would add a threshold to tune.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from nnunet_ulseg.postprocess import (
    ELLIPSE_FACTOR,
    IMAGE_MODES,
    as_recist,
    check_mode,
    keep_marked_info,
    lesion_mask,
    postprocess_mask,
)
from nnunet_ulseg.pseudo_masks.recist3d import estimate_recist, slice_distance_mm
from nnunet_ulseg.recist import Recist

#: 2D modes of :data:`nnunet_ulseg.postprocess.MODES` that the slice-by-slice walk applies
MODES_3D = ("none", "mark", "mark-ellipse", "mark-grabcut")
#: why a direction of the walk ended (module docstring)
STOPS = ("max_slices", "recist_estimate_vanished", "no_slice", "empty_prediction")
SIDES = ((1, "up"), (-1, "down"))


def walk_outwards(keep_at: Callable[[int, Recist], np.ndarray | None], recist: Recist | Sequence[float],
                  spacing_xy: Sequence[float], spacing_z: float, max_steps: int | None = None,
                  estimate_mode: str = "ratio") -> tuple[dict[int, np.ndarray], dict[str, str]]:
    """Visit offsets ±1, ±2, ... until each side's stop rule (module docstring); the kept masks and the stops.

    ``recist``: the key slice's mark in the pixel grid of spacing ``spacing_xy`` (mm);
    ``spacing_z``: the slice interval (mm).  ``keep_at(offset, R̂)`` returns the kept bool mask
    of the slice ``offset`` slices from the key slice, or ``None`` where there is no slice.
    Returns ``({offset: mask}`` of the kept non-empty off-key slices, ``{"up"|"down": stop})``.
    """
    if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 0):
        raise ValueError(f"max_steps must be a whole number >= 0 or None, got {max_steps!r}")
    mark = as_recist(recist)
    masks: dict[int, np.ndarray] = {}
    stopped: dict[str, str] = {}
    for sign, side in SIDES:
        step = 0
        while True:
            step += 1
            if max_steps is not None and step > max_steps:
                stopped[side] = "max_slices"
                break
            hat = estimate_recist(mark, slice_distance_mm(step, spacing_z), spacing_xy, estimate_mode)
            if hat is None:
                stopped[side] = "recist_estimate_vanished"
                break
            mask = keep_at(sign * step, hat)
            if mask is None:
                stopped[side] = "no_slice"
                break
            mask = np.asarray(mask, dtype=bool)
            if not mask.any():
                stopped[side] = "empty_prediction"
                break
            masks[sign * step] = mask
    return masks, stopped


@dataclass
class KeptSlices:
    """Result of :func:`keep_marked_slices`: a bool mask for every offset given, the key's status, the stops."""

    masks: dict[int, np.ndarray]
    key_status: str
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def kept_offsets(self) -> list[int]:
        return sorted(o for o, m in self.masks.items() if m.any())


def check_mode_3d(mode: str) -> str:
    """``mode`` if the slice-by-slice walk supports it (:data:`MODES_3D`), else ``ValueError``."""
    check_mode(mode)
    if mode not in MODES_3D:
        raise ValueError(f"post-processing mode {mode!r} is not available slice by slice; choose one of "
                         f"{', '.join(MODES_3D)}")
    return mode


def keep_off_key(mask: np.ndarray, hat: Recist, mode: str, lesion_label: int = 1, image: np.ndarray | None = None,
                 window: tuple[float, float] | None = None) -> np.ndarray:
    """One off-key slice's kept bool mask under the estimate ``hat`` (module docstring); empty ends a walk.

    ``image`` (HU, ``mask``'s grid) and ``window`` are needed by ``mark-grabcut`` only.
    """
    if check_mode_3d(mode) == "none":
        return lesion_mask(mask, lesion_label)
    within = ELLIPSE_FACTOR if mode == "mark-ellipse" else None
    marked = keep_marked_info(mask, hat, fill_holes=True, within=within, fallback="empty",
                              lesion_label=lesion_label).mask
    if mode not in IMAGE_MODES or not marked.any():
        return marked
    return np.asarray(postprocess_mask(marked, hat, mode, image=image, window=window).mask, dtype=bool)


def keep_marked_slices(masks: Mapping[int, np.ndarray], recist: Recist | Sequence[float],
                       spacing_xy: Sequence[float], spacing_z: float, mode: str = "mark", lesion_label: int = 1,
                       estimate_mode: str = "ratio", images: Mapping[int, np.ndarray] | None = None,
                       window: tuple[float, float] | None = None) -> KeptSlices:
    """Post-process already predicted slices ``{offset: mask}`` of one lesion (module docstring).

    ``masks``: bool masks or label maps (lesion ``== lesion_label``) of one grid, offset 0 the
    key slice, which must be present; ``recist`` the key mark in that grid.  Mode ``none``
    only binarises.  ``mark-grabcut`` needs ``images`` (``{offset: HU image}``, every offset
    of ``masks``) and the DICOM ``window``.  Every given offset is in the result (empty
    where the walk dropped it).
    """
    check_mode_3d(mode)
    if 0 not in masks:
        raise ValueError(f"the key slice (offset 0) is not among the predicted offsets {sorted(masks)}")
    if mode == "none":
        return KeptSlices({o: lesion_mask(m, lesion_label) for o, m in masks.items()}, "unchanged")
    if mode in IMAGE_MODES:
        lacking = sorted(set(masks) - set(images or {}))
        if lacking or window is None:
            raise ValueError(f"post-processing mode {mode!r} needs the CT image of every slice and the DICOM window"
                             + (f" (no image for offsets {lacking})" if lacking else " (no window)"))
    images = images or {}
    key = postprocess_mask(masks[0], recist, mode, lesion_label=lesion_label, image=images.get(0), window=window)

    def keep_at(offset: int, hat: Recist) -> np.ndarray | None:
        if offset not in masks:
            return None
        return keep_off_key(masks[offset], hat, mode, lesion_label, images.get(offset), window)

    kept, stopped = walk_outwards(keep_at, recist, spacing_xy, spacing_z, estimate_mode=estimate_mode)
    shape = key.mask.shape
    out = {o: kept.get(o, np.zeros(shape, dtype=bool)) for o in masks}
    out[0] = key.mask
    return KeptSlices(out, key.status, stopped)
