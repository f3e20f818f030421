"""Running nnU-Net's own commands from our workflows.

Everything we orchestrate (``ulseg demo``, later ``ulseg refine``) calls the real
``nnUNetv2_*`` console scripts as subprocesses, exactly as a user would, with the
environment variables nnU-Net reads.  Their full output goes to a log file; lines that
tell a person where training stands are echoed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

#: nnU-Net output lines worth echoing while a command runs.
PROGRESS_PATTERN = re.compile(r"(Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|Mean Validation Dice|Training done)")


def trainers_dir() -> Path:
    """The ``trainers/`` folder to put in ``nnUNet_extTrainer``.

    It lives at the top of the source tree (DESIGN.md layout), next to the package, so
    this requires an editable/source install; ``ULSEG_TRAINERS_DIR`` overrides it.
    """
    override = os.environ.get("ULSEG_TRAINERS_DIR")
    candidate = Path(override) if override else Path(__file__).resolve().parents[2] / "trainers"
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"trainers folder not found at {candidate}; install nnunet-ulseg from its source tree "
            "(pip install -e .) or set ULSEG_TRAINERS_DIR"
        )
    return candidate


@dataclass(frozen=True)
class NNUNetPaths:
    """The three folders nnU-Net works in."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: str | os.PathLike) -> "NNUNetPaths":
        root = Path(root)
        return cls(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")

    def create(self) -> "NNUNetPaths":
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def environ(self, base: dict[str, str] | None = None, num_processes: int | None = None) -> dict[str, str]:
        """``base`` (default: this process' environment) plus nnU-Net's variables.

        ``nnUNet_extTrainer`` gets our trainers folder prepended to whatever the user
        already has there.  With ``num_processes``, nnU-Net's worker pools are bounded by
        it unless the user set them: ``nnUNet_n_proc_DA`` (data-augmentation workers per
        training; nnU-Net's default is sized for its own GPU servers) and
        ``nnUNet_def_n_proc`` (8 processes export every training's final validation).
        On a 2-core machine their defaults cost minutes per training.
        """
        env = dict(os.environ if base is None else base)
        if num_processes is not None:
            env.setdefault("nnUNet_n_proc_DA", str(num_processes))
            env.setdefault("nnUNet_def_n_proc", str(num_processes))
        env["nnUNet_raw"] = str(self.raw)
        env["nnUNet_preprocessed"] = str(self.preprocessed)
        env["nnUNet_results"] = str(self.results)
        extra = [str(trainers_dir())]
        if env.get("nnUNet_extTrainer"):
            extra += [p for p in env["nnUNet_extTrainer"].split(os.pathsep) if p and p not in extra]
        env["nnUNet_extTrainer"] = os.pathsep.join(extra)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


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
