"""Which slices become the channels of a ``--context K`` crop.

Channel order (chosen so single-channel code and the regional level set can always use
channel 0): channel 0 is the key slice, then ``key-K .. key-1`` in channels ``1..K``
(ascending slice index), then ``key+1 .. key+K`` in channels ``K+1..2K``.  So the
channels read ``[key, key-K, ..., key-1, key+1, ..., key+K]``.

A neighbour that is unavailable (outside ``Slice_range``, no PNG, or a PNG that does
not decode to the key slice's size) is replaced by the nearest available slice toward
the key; the key slice itself is always available, so the walk ends there at the latest.
"""
from __future__ import annotations

from typing import Callable


def channel_offsets(context: int) -> list[int]:
    """Slice offsets from the key slice, one per channel: ``[0, -K, ..., -1, 1, ..., K]``."""
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    return [0, *range(-context, 0), *range(1, context + 1)]


def channel_names(context: int) -> list[str]:
    """Human names of the channel slices, e.g. ``['key', 'key-1', 'key+1']`` for ``K = 1``."""
    return ["key" if o == 0 else f"key{o:+d}" for o in channel_offsets(context)]


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
