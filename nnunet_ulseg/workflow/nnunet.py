"""Running nnU-Net's own commands from our workflows.

Everything we orchestrate (``ulseg demo``, ``ulseg refine``) calls the real
``nnUNetv2_*`` console scripts as subprocesses, exactly as a user would, with the
environment variables nnU-Net reads (:meth:`nnunet_ulseg.nnunet_layout.NNUNetPaths.environ`).
Their full output goes to a log file; lines that tell a person where training stands
are echoed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

# the folder layout and environment variables live in one floor-1 module; re-exported for callers
from nnunet_ulseg.nnunet_layout import NNUNetPaths, trainers_dir  # noqa: F401

#: nnU-Net output lines worth echoing while a command runs.
PROGRESS_PATTERN = re.compile(r"(Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|Mean Validation Dice|Training done)")


class NNUNetCommandError(RuntimeError):
    """An nnU-Net command exited non-zero; the message names the command and its log."""


def console_script(name: str) -> str:
    """Path of an nnU-Net console script, preferring the one next to this interpreter."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: is nnunetv2 installed in this environment?")
    return found


def run_command(
    args: Sequence[str],
    env: dict[str, str],
    log_file: str | os.PathLike,
    echo: Callable[[str], None] | None = print,
    pattern: re.Pattern = PROGRESS_PATTERN,
) -> float:
    """Run ``args``, append all output to ``log_file``, echo progress lines; return seconds.

    Raises :class:`NNUNetCommandError` with the last lines of output when it fails.
    """
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tail: list[str] = []
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(map(str, args))}\n")
        log.flush()
        proc = subprocess.Popen(
            [str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1,
        )
        assert proc.stdout is not None
        for line in _lines(proc.stdout):
            log.write(line)
            tail = (tail + [line.rstrip()])[-30:]
            if echo is not None and pattern.search(line):
                echo("    " + line.strip())
        code = proc.wait()
    if code != 0:
        raise NNUNetCommandError(
            f"{Path(str(args[0])).name} exited with status {code} (full log: {log_file}):\n" + "\n".join(tail)
        )
    return time.perf_counter() - start


def _lines(stream: Iterable[str]) -> Iterable[str]:
    # nnU-Net's tqdm bars use carriage returns; split on them so the log stays readable.
    for line in stream:
        for part in line.replace("\r", "\n").splitlines(keepends=True):
            if part.strip():
                yield part if part.endswith("\n") else part + "\n"


def default_device() -> str:
    """``cuda`` when a GPU is visible to torch, else ``cpu`` (nnU-Net's ``-device``)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
