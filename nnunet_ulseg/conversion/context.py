"""Which slices become the channels of a ``--context K`` crop.

Channel order (chosen so single-channel code and the regional level set can always use
channel 0): channel 0 is the key slice, then ``key-K .. key-1`` in channels ``1..K``
(ascending slice index), then ``key+1 .. key+K`` in channels ``K+1..2K``.  So the
channels read ``[key, key-K, ..., key-1, key+1, ..., key+K]``.

With ``--context K`` alone, channel ``key+o`` is the slice ``o`` indices away.  With
``--context-mm MM`` beside it (issue 12: DeepLesion's slice intervals vary from 0.6 to
5 mm, so "one slice away" means very different distances), channel ``key+o`` targets
the position ``o * MM`` mm from the key and takes the slice index offset
``round(o * MM / z)``, ``z`` the row's slice interval (``Spacing_mm_px_`` z), rounded
half away from the key (see :func:`slice_offsets`).  Two channels can then name the same
slice (``MM`` under half a slice interval gives the key slice): the channel count stays
``2K + 1`` for every case, as nnU-Net needs.

A neighbour that is unavailable (outside ``Slice_range``, no PNG, or a PNG that does
not decode to the key slice's size) is replaced by the nearest available slice between
it and the key; the key slice itself is always available, so the walk ends there at the
latest.  The slices used are recorded per case (``context_slices`` in ``lesions.csv``).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable


def channel_offsets(context: int) -> list[int]:
    """Slice offsets from the key slice, one per channel: ``[0, -K, ..., -1, 1, ..., K]``."""
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    return [0, *range(-context, 0), *range(1, context + 1)]


def channel_names(context: int, context_mm: float | None = None) -> list[str]:
    """Human names of the channel slices, e.g. ``['key', 'key-1', 'key+1']`` for ``K = 1``.

    With ``context_mm`` the names give the target distance: ``['key', 'key-5mm', 'key+5mm']``.
    """
    if context_mm is None:
        return ["key" if o == 0 else f"key{o:+d}" for o in channel_offsets(context)]
    return ["key" if o == 0 else f"key{o * context_mm:+g}mm" for o in channel_offsets(context)]


def check_context_mm(context: int, context_mm: float | None) -> None:
    """``ValueError`` unless ``context_mm`` is None, or a positive finite distance with ``context >= 1``."""
    if context_mm is None:
        return
    if not (isinstance(context_mm, (int, float)) and math.isfinite(context_mm) and context_mm > 0):
        raise ValueError(f"context_mm must be a positive distance in mm, got {context_mm!r}")
    if context < 1:
        raise ValueError(f"context_mm ({context_mm} mm) spaces the --context K neighbours; it needs context >= 1, "
                         f"got {context}")


@lru_cache(maxsize=4096)
def slice_offsets(context: int, context_mm: float | None = None, slice_interval: float | None = None
                  ) -> tuple[int, ...]:
    """Slice index offset of each channel (order of :func:`channel_offsets`).

    Without ``context_mm``: ``channel_offsets(context)``.  With it: channel ``o`` targets
    ``o * context_mm`` mm and takes ``round(o * context_mm / slice_interval)`` slices,
    rounded half away from the key (``2.5 -> 3``, ``-2.5 -> -3``: a tie goes to the slice
    that is at least as far as asked; a 1e-9 tolerance keeps float noise such as
    ``2.4999999999`` from breaking the tie).  Cached: rows of equal arguments share one tuple.
    """
    offsets = channel_offsets(context)
    if context_mm is None:
        return tuple(offsets)
    check_context_mm(context, context_mm)
    if slice_interval is None or not (math.isfinite(slice_interval) and slice_interval > 0):
        raise ValueError(f"slice_interval must be a positive distance in mm, got {slice_interval!r}")
    return tuple(int(math.copysign(math.floor(abs(o * context_mm / slice_interval) + 0.5 + 1e-9), o))
                 for o in offsets)


def resolve_slice(key: int, offset: int, available: Callable[[int], bool]) -> int:
    """Slice used for ``key + offset``: that slice if available, else the nearest available toward the key."""
    step = -1 if offset > 0 else 1
    for o in range(offset, 0, step):
        if available(key + o):
            return key + o
    return key


def in_range(slice_range: tuple[int, int] | None, index: int) -> bool:
    """Whether ``index`` lies in the inclusive ``Slice_range`` (always true when the range is unknown)."""
    return slice_range is None or slice_range[0] <= index <= slice_range[1]
