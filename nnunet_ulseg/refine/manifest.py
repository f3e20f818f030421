"""The resumable record of one ``ulseg refine`` run (one JSON file, rewritten atomically).

The paper trains, updates the pseudo masks and retrains, "three rounds" in all
(AHRNet Sec. 2.3, last paragraph); on real data each round is hours to days of
nnU-Net work, so every finished step is written down and a re-run of the same
command continues at the first unfinished one.  The paper says nothing about this;
the format below is ours.

Format (``format`` 1)::

    {
      "format": 1,
      "tool": "ulseg refine",
      "arguments": {"dataset": "Dataset501_X", "configuration": "2d", "trainer": "...",
                    "plans": "nnUNetPlans", "fold": 0, "cross_val": false,
                    "init_from_previous": false, "rounds": 3},
      "rounds": {"1": {"dataset_id": 501, "dataset_name": "Dataset501_X"},
                 "2": {"dataset_id": 601, "dataset_name": "Dataset601_X_round2"}},
      "steps": {"prepare_1": {"finished": "...", "seconds": 0.1, ...}, "train_1": {...}, ...},
      "in_progress": {"step": "build_2", "started": "...", "host": "...", "pid": 123} | null
    }

``steps`` keeps insertion order, which is the order in which the steps finished.  A step
is written to ``in_progress`` (with the manifest saved) before it starts and moved to
``steps`` when it ends, so after a kill the manifest names the step that was cut short;
its partial outputs are removed before it is redone.  Only the coordinating process
(``--part-id 0``) writes the manifest; the other parts only read it, and every write
is a temporary file plus :func:`os.replace`, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

FORMAT = 1

#: Arguments that must not change between runs that share a manifest: each one changes
#: what the finished steps mean.  ``rounds`` may grow (more rounds on top of finished
#: ones), never shrink.  Machine-specific options (device, processes, parts) may change.
FIXED_ARGUMENTS = ("dataset", "configuration", "trainer", "plans", "fold", "cross_val", "init_from_previous")

#: Per-step keys that differ between two otherwise identical runs.
VOLATILE_KEYS = ("finished", "seconds", "started", "host", "pid")


class ManifestConflict(ValueError):
    """The manifest on disk was written for different arguments."""


def now() -> str:
    """Local time as ISO 8601 with seconds, for humans reading the manifest."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and :func:`os.replace`.

    The temporary name is this process' and thread's own, so two writers of one file (two
    coordinators copying the same plans or split) never write into, or move, each other's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | os.PathLike):
    """Parse a JSON file; a broken file is a :class:`ValueError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


class Manifest:
    """``manifest.json`` of one refinement run; see the module docstring for the format."""

    def __init__(self, path: str | os.PathLike, data: dict):
        self.path = Path(path)
        self.data = data

    # -- creation and argument checks -------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, arguments: dict, tool: str = "ulseg refine") -> "Manifest":
        """Load the manifest at ``path`` (checking ``arguments`` against it) or start a new one.

        A larger ``rounds`` than recorded is accepted and recorded; anything else that
        differs in :data:`FIXED_ARGUMENTS`, or a smaller ``rounds``, raises
        :class:`ManifestConflict` with both values.
        """
        path = Path(path)
        if not path.exists():
            manifest = cls(path, {"format": FORMAT, "tool": tool, "arguments": dict(arguments),
                                  "rounds": {}, "steps": {}, "in_progress": None})
            manifest.save()
            return manifest
        manifest = cls.read(path)
        manifest.check_arguments(arguments)
        if arguments["rounds"] > manifest.arguments["rounds"]:
            manifest.data["arguments"]["rounds"] = arguments["rounds"]
            manifest.save()
        return manifest

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Manifest":
        """Load an existing manifest (no argument check)."""
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not an ulseg refine manifest of format {FORMAT}")
        return cls(path, data)

    def check_arguments(self, arguments: dict) -> None:
        """Raise :class:`ManifestConflict` if ``arguments`` cannot continue this manifest."""
        old = self.arguments
        problems = [f"{k}: manifest has {old.get(k)!r}, this command has {arguments.get(k)!r}"
                    for k in FIXED_ARGUMENTS if old.get(k) != arguments.get(k)]
        if arguments["rounds"] < old["rounds"]:
            problems.append(f"rounds: manifest has {old['rounds']}, this command asks for fewer "
                            f"({arguments['rounds']}); rounds can only grow")
        if problems:
            raise ManifestConflict(
                f"{self.path} belongs to a refinement run with other arguments:\n  " + "\n  ".join(problems)
                + "\nRe-run with the recorded arguments, or move that folder away to start over.")

    # -- state ---------------------------------------------------------------------------
    @property
    def arguments(self) -> dict:
        return self.data["arguments"]

    @property
    def steps(self) -> dict:
        return self.data["steps"]

    @property
    def in_progress(self) -> dict | None:
        return self.data.get("in_progress")

    def is_done(self, step: str) -> bool:
        return step in self.data["steps"]

    def round(self, r: int) -> dict | None:
        """The ``rounds`` entry of round ``r`` (dataset id and name), if assigned."""
        return self.data["rounds"].get(str(r))

    def set_round(self, r: int, **info) -> None:
        self.data["rounds"][str(r)] = dict(info)
        self.save()

    def start(self, step: str) -> None:
        """Record that ``step`` is running (saved before any of its work starts)."""
        self.data["in_progress"] = {"step": step, "started": now(), "host": socket.gethostname(),
                                    "pid": os.getpid()}
        self.save()

    def finish(self, step: str, seconds: float, info: dict | None = None) -> None:
        """Record ``step`` as finished with ``info`` and clear ``in_progress``."""
        self.data["steps"][step] = {**(info or {}), "finished": now(), "seconds": round(float(seconds), 3)}
        self.data["in_progress"] = None
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


def stable_view(data: dict) -> dict:
    """``data`` without the keys that differ between two equal runs (times, host, pid).

    Used to compare the manifest of a resumed run with that of an uninterrupted one.
    """
    if isinstance(data, dict):
        return {k: stable_view(v) for k, v in data.items() if k not in VOLATILE_KEYS}
    if isinstance(data, list):
        return [stable_view(v) for v in data]
    return data
