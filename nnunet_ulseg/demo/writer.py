"""PNG writing in a background thread.

``cv2.imwrite`` releases the GIL while it compresses, so handing it to one worker
thread overlaps the ~10 ms per slice of PNG compression with rendering the next slice
on the second core.  Output bytes do not depend on the thread: each call writes a fixed
array to its own path.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def _imwrite(path: str, image: np.ndarray) -> bool:
    """``cv2.imwrite`` that reports failure as ``False`` whether OpenCV returns or raises it."""
    try:
        return bool(cv2.imwrite(path, image))
    except cv2.error:
        return False


class PngWriter:
    """Context manager: ``write(path, array)`` queues a PNG; leaving waits for all and
    raises ``OSError`` naming the first file OpenCV failed to write."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
        self._pending: list[tuple[Path, Future]] = []

    def write(self, path: Path, image: np.ndarray) -> None:
        """Queue ``image`` for ``path``; at most ~64 writes are kept pending (bounded memory)."""
        self._pending.append((Path(path), self._pool.submit(_imwrite, str(path), image)))
        if len(self._pending) > 64:
            self._drain(32)

    def _drain(self, keep: int = 0) -> None:
        """Wait for the oldest writes until ``keep`` remain; raise on the first failure."""
        while len(self._pending) > keep:
            path, fut = self._pending.pop(0)
            if not fut.result():
                raise OSError(f"{path}: could not write PNG")

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._drain()
        finally:
            self._pool.shutdown(wait=True)
