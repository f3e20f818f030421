"""Shared set-up for benchmarks: a generated sample, converted and planned by nnU-Net."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def planned_sample(root: Path, lesions: int, seed: int, dataset_id: int, preprocess: bool,
                   num_processes: int = 2) -> tuple[dict, dict, "object"]:
    """Make a sample, convert it, run nnU-Net's planner (and preprocessing if asked).

    Returns ``(plans, dataset_json, paths)``; the nnU-Net variables are exported into this
    process' environment (trainers read them at import time).
    """
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample
    from nnunet_ulseg.nnunet_layout import EXT_TRAINER_VARIABLE, NNUNET_VARIABLES, dataset_folder_name
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths, console_script

    paths = NNUNetPaths.under(root).create()
    env = paths.environ(num_processes=num_processes)
    os.environ.update({k: env[k] for k in (*NNUNET_VARIABLES, EXT_TRAINER_VARIABLE)})
    name = dataset_folder_name(dataset_id, "Bench")
    raw = paths.raw / name
    sample = make_sample(root / "deeplesion", n_lesions=lesions, seed=seed, progress=False)
    convert_deeplesion(sample, raw, num_processes=num_processes, progress=False)
    paths.install_splits(name, overwrite=True)  # the benchmark's own folders, just converted
    cmd = [console_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "2d",
           "-np", str(num_processes)]
    if not preprocess:
        cmd.append("--no_pp")
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    plans = json.loads((paths.preprocessed / name / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((raw / "dataset.json").read_text())
    return plans, dataset_json, paths


def temp_root(keep: str | None) -> Path:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return Path(tempfile.mkdtemp(prefix="ulseg_bench_"))
