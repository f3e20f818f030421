"""Predicting a round's training cases on several machines (``nnUNetv2_predict -num_parts/-part_id``).

nnU-Net splits a prediction job by giving process ``i`` of ``N`` every ``N``-th case of
the sorted case list (``cases[i::N]``, ``predict_from_raw_data.py``).  ``ulseg refine
--num-parts N --part-id I`` builds on that; the paper (single-machine) is silent, the
protocol is ours:

* every machine sees the same ``nnUNet_raw`` and ``nnUNet_results`` (a shared file
  system): the checkpoints, the manifest and the predictions all live there;
* part ``i`` writes its predictions of a job (one round, one fold) into
  ``<job>/part<i>of<N>/`` and, when ``nnUNetv2_predict`` has exited cleanly and every
  case of its share exists, a marker ``DONE.json`` listing its cases and the checkpoint
  it used (path below ``nnUNet_results``, size and modification time), so a marker left
  by an older model is never mistaken for a current one;
* part 0 is the coordinator: it alone writes the manifest, trains, builds datasets; after
  its own share it polls until all ``N`` markers of the current model exist (or a
  timeout passes), collects the ``N`` folders and goes on;
* parts ``1..N-1`` only read the manifest: they take the first round whose predictions
  still need them, wait (same timeout) until its model is trained, predict their share,
  write their marker and exit; run the same command again for the next round, or pass
  ``--follow`` to keep serving rounds until the last one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nnunet_ulseg.refine.manifest import now, read_json, write_json_atomic

MARKER = "DONE.json"


class WaitTimeout(TimeoutError):
    """Waiting for other parts (or for the model) took longer than allowed; re-running continues."""


def part_folder(job_dir: str | os.PathLike, part_id: int, num_parts: int) -> Path:
    """Where part ``part_id`` of ``num_parts`` writes its predictions of one job."""
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part id {part_id} is not in 0..{num_parts - 1}")
    return Path(job_dir) / f"part{part_id}of{num_parts}"


def part_cases(cases: Iterable[str], part_id: int, num_parts: int) -> list[str]:
    """The cases nnU-Net gives part ``part_id`` of ``num_parts``: ``sorted(cases)[part_id::num_parts]``."""
    return sorted(cases)[part_id::num_parts]


def model_fingerprint(checkpoints: Sequence[str | os.PathLike], results_root: str | os.PathLike) -> list[dict]:
    """Identity of the checkpoint files a prediction used: path below ``results_root``, size, mtime."""
    out = []
    for ckpt in checkpoints:
        st = os.stat(ckpt)
        out.append({"path": Path(os.path.relpath(ckpt, results_root)).as_posix(), "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns})
    return out


def mark_part_done(folder: str | os.PathLike, part_id: int, num_parts: int, cases: Sequence[str],
                   model: list[dict]) -> None:
    """Write the ``DONE.json`` marker of a finished part."""
    write_json_atomic(Path(folder) / MARKER, {"part_id": part_id, "num_parts": num_parts, "cases": list(cases),
                                              "model": model, "finished": now()})


def part_done(folder: str | os.PathLike, model: list[dict]) -> bool:
    """True if ``folder`` has a marker written for ``model``."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("model") == model
    except ValueError:
        return False


def missing_parts(job_dir: str | os.PathLike, num_parts: int, model: list[dict]) -> list[int]:
    """Part ids of ``num_parts`` without a current marker in ``job_dir``."""
    return [i for i in range(num_parts) if not part_done(part_folder(job_dir, i, num_parts), model)]


def collect_predictions(job_dir: str | os.PathLike, num_parts: int, cases: Sequence[str],
                        file_ending: str) -> dict[str, Path]:
    """Case -> prediction file over the ``num_parts`` part folders of a job; every case exactly once."""
    found: dict[str, Path] = {}
    duplicates = []
    for i in range(num_parts):
        folder = part_folder(job_dir, i, num_parts)
        for case in cases:
            path = folder / f"{case}{file_ending}"
            if path.exists():
                if case in found:
                    duplicates.append(case)
                found[case] = path
    missing = [c for c in cases if c not in found]
    if missing or duplicates:
        raise ValueError(f"predictions in {job_dir} are incomplete: missing {missing[:5]} ({len(missing)}), "
                         f"predicted twice {duplicates[:5]} ({len(duplicates)})")
    return found


def wait_until(condition: Callable[[], bool], timeout: float, poll: float, what: str,
               say: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> float:
    """Poll ``condition`` every ``poll`` seconds until it holds; return the seconds waited.

    Raises :class:`WaitTimeout` naming ``what`` after ``timeout`` seconds.
    """
    start = clock()
    announced = False
    while not condition():
        waited = clock() - start
        if waited >= timeout:
            raise WaitTimeout(f"gave up after {waited:.0f} s waiting for {what}; run the same command "
                              "again to keep waiting (finished work is kept)")
        if say is not None and not announced:
            say(f"  waiting for {what} (polling every {poll:g} s, timeout {timeout:g} s)")
            announced = True
        sleep(min(poll, max(timeout - waited, 0.0)))
    return clock() - start
