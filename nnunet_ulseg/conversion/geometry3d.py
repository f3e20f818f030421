"""A lesion's 2D slice masks as one 3D mask in the series' own geometry, and back (WSSS Sec. 3.3).

WSSS segments a lesion slice by slice, outwards from its RECIST key slice (Sec. 3.3,
Algorithm 1), and scores and measures the result as a volume (Sec. 4, Table 5, Fig. 4).
This module is the one place where per-slice masks become that volume:

* Input: masks in **slice geometry** (each ``[y, x]`` of the whole axial slice,
  ``image_height x image_width`` of the ``lesions.csv`` row; a crop-geometry prediction is
  pasted back first, :func:`nnunet_ulseg.conversion.sidecar.paste_back`), keyed by their
  **slice index** in the series (DeepLesion's PNG number, the index of ``key_slice`` and
  ``Slice_range``).  In-plane geometry is the same on every slice of a series, so pixel
  ``[r, c]`` of one slice lies above pixel ``[r, c]`` of the next.
* Output: :class:`Stack3D`, a ``[z, y, x]`` bool array, ``z = 0`` being slice index
  ``first_slice`` and ``z`` growing with the slice index, with spacing ``(x, y, z)`` in mm
  (CONVENTIONS "Geometry"), ``z`` = the row's slice interval ``spacing_z``
  (DeepLesion's ``Spacing_mm_px_`` z, DESIGN "DeepLesion on disk").  A slice's position
  is ``(index - key_slice) * spacing_z`` mm from the key slice.

Choices where the spec is silent:

* Slices are equally spaced by ``spacing_z``: DeepLesion gives one slice interval per
  series and no per-slice positions, so nothing better is known.
* **Non-contiguous slices** (DeepLesion folders may hold several sub-volumes with gaps;
  a propagation that has not reached a slice yet): ``gaps="error"`` (the default) raises a
  ``ValueError`` naming the missing indices, because a volume over a gap would silently
  count missing slices as background; ``gaps="empty"`` fills them with background and
  records them in :attr:`Stack3D.filled`, so a caller that knows a slice is outside the
  lesion (or wants a lower bound) can say so explicitly.  :func:`unstack` never returns a
  filled slice, so a round trip gives back exactly the slices that were given.
* Masks are read as ``value > 0`` (bool); label maps with an ignore value are turned into
  lesion masks by the caller (:class:`nnunet_ulseg.evaluation.label_io.LabelRule`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

GAP_MODES = ("error", "empty")


@dataclass(frozen=True)
class Stack3D:
    """A lesion's 3D mask ``[z, y, x]`` over consecutive slice indices (module docstring).

    ``mask[k]`` is slice index ``first_slice + k``; ``spacing`` is ``(x, y, z)`` mm;
    ``key_slice`` the RECIST key slice's index (it need not lie inside the stack);
    ``filled`` the indices that were gaps filled with background (``gaps="empty"``).
    """

    mask: np.ndarray
    spacing: tuple[float, float, float]
    first_slice: int
    key_slice: int
    filled: tuple[int, ...] = ()

    def __post_init__(self):
        if self.mask.ndim != 3:
            raise ValueError(f"Stack3D: mask must be [z, y, x], got shape {self.mask.shape}")
        check_spacing3d(self.spacing)

    @property
    def slice_indices(self) -> tuple[int, ...]:
        """Slice index of every z, in z order."""
        return tuple(range(self.first_slice, self.first_slice + self.mask.shape[0]))

    @property
    def offsets(self) -> np.ndarray:
        """Signed slice distance of every z from the key slice (``index - key_slice``)."""
        return np.arange(self.mask.shape[0]) + (self.first_slice - self.key_slice)

    @property
    def offsets_mm(self) -> np.ndarray:
        """Signed distance in mm of every z from the key slice (``offset * spacing_z``)."""
        return self.offsets * float(self.spacing[2])

    @property
    def voxel_mm3(self) -> float:
        """Volume of one voxel, ``sx * sy * sz`` mm³."""
        sx, sy, sz = self.spacing
        return float(sx) * float(sy) * float(sz)

    def z_of(self, slice_index: int) -> int:
        """The z of ``slice_index``; ``ValueError`` when the stack does not hold it."""
        z = int(slice_index) - self.first_slice
        if not 0 <= z < self.mask.shape[0]:
            raise ValueError(f"slice {slice_index} is outside the stack (slices {self.first_slice}.."
                             f"{self.first_slice + self.mask.shape[0] - 1})")
        return z


def check_spacing3d(spacing: Sequence[float]) -> tuple[float, float, float]:
    """``(x, y, z)`` spacing as three positive finite floats; ``ValueError`` otherwise."""
    s = tuple(float(v) for v in spacing)
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, got {tuple(spacing)}")
    return s  # type: ignore[return-value]


def stack_slices(masks: Mapping[int, np.ndarray], spacing: Sequence[float], key_slice: int,
                 gaps: str = "error", what: str = "lesion") -> Stack3D:
    """Stack slice-geometry masks keyed by slice index into a :class:`Stack3D` (module docstring).

    ``spacing``: ``(x, y, z)`` mm, z the slice interval (a sidecar row's ``spacing_x,
    spacing_y, spacing_z``, :func:`row_spacing`).  Every mask must be 2D and of one shape.
    ``what`` names the lesion in error messages.  ``gaps``: ``"error"`` or ``"empty"``.
    """
    if gaps not in GAP_MODES:
        raise ValueError(f"gaps must be one of {GAP_MODES}, got {gaps!r}")
    spacing = check_spacing3d(spacing)
    if not masks:
        raise ValueError(f"{what}: no slice masks to stack")
    indices = sorted(int(i) for i in masks)
    if len(set(indices)) != len(indices):
        raise ValueError(f"{what}: slice indices repeated: {indices}")
    shapes = {np.shape(masks[i]) for i in masks}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{what}: slice masks must be 2D and of one shape (the series' slice geometry), "
                         f"got shapes {sorted(shapes)}")
    first, last = indices[0], indices[-1]
    missing = tuple(sorted(set(range(first, last + 1)) - set(indices)))
    if missing and gaps == "error":
        raise ValueError(f"{what}: slices {first}..{last} are not contiguous, missing {list(missing)} "
                         "(gaps='empty' fills them with background)")
    volume = np.zeros((last - first + 1,) + next(iter(shapes)), dtype=bool)
    for i, m in masks.items():
        volume[int(i) - first] = np.asarray(m) > 0
    return Stack3D(volume, spacing, first, int(key_slice), missing)


def unstack(stack: Stack3D) -> dict[int, np.ndarray]:
    """The inverse of :func:`stack_slices`: ``{slice index: [y, x] bool mask}``, filled gaps left out."""
    filled = set(stack.filled)
    return {i: stack.mask[k].copy() for k, i in enumerate(stack.slice_indices) if i not in filled}


def align_stacks(a: Stack3D, b: Stack3D) -> tuple[np.ndarray, np.ndarray, int]:
    """Both masks over the union of their slice ranges (background where a stack has no slice), and its first index.

    The two must have one in-plane shape, one spacing and one key slice (same lesion,
    same series); ``ValueError`` otherwise.  This is how a prediction covering other slices
    than its reference is scored: a slice a prediction does not cover is empty there.
    """
    if a.mask.shape[1:] != b.mask.shape[1:]:
        raise ValueError(f"stacks differ in slice shape: {a.mask.shape[1:]} vs {b.mask.shape[1:]}")
    if not np.allclose(a.spacing, b.spacing, rtol=1e-6, atol=0):
        raise ValueError(f"stacks differ in spacing: {a.spacing} vs {b.spacing}")
    if a.key_slice != b.key_slice:
        raise ValueError(f"stacks differ in key slice: {a.key_slice} vs {b.key_slice}")
    first = min(a.first_slice, b.first_slice)
    last = max(a.first_slice + a.mask.shape[0], b.first_slice + b.mask.shape[0])
    out = []
    for s in (a, b):
        m = np.zeros((last - first,) + s.mask.shape[1:], dtype=bool)
        m[s.first_slice - first:s.first_slice - first + s.mask.shape[0]] = s.mask
        out.append(m)
    return out[0], out[1], first


def row_spacing(row) -> tuple[float, float, float]:
    """``(spacing_x, spacing_y, spacing_z)`` of a :class:`~nnunet_ulseg.conversion.sidecar.LesionRow`."""
    return check_spacing3d((row.spacing_x, row.spacing_y, row.spacing_z))
