"""A non-editable install ships the trainers, and nnU-Net's own lookup finds them (issue 11, item 1).

The wheel is built from a copy of the build inputs (so nothing is written into the
working tree), installed with ``pip install --no-deps --target`` (not editable), and used
from a subprocess whose ``PYTHONPATH`` starts with that target, with neither
``nnUNet_extTrainer`` nor ``ULSEG_TRAINERS_DIR`` set: the ``nnunet_ulseg`` it imports must be
the installed copy, ``ulseg trainers-path`` must print the installed trainers folder, and
``recursive_find_python_class`` over that folder (exactly as
``nnunetv2.utilities.find_objects`` searches ``nnUNet_extTrainer``) must find
``nnUNetTrainerAHRNetRLS``, a subclass of ``nnUNetTrainer``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what setuptools needs to build the wheel (pyproject.toml, setup.py and what they name)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "nnunet_ulseg", "trainers", "dataset_conversion")

CHECK = r"""
import json, os, subprocess, sys
from pathlib import Path
site = Path(sys.argv[1]).resolve()
import nnunet_ulseg
out = {"package": nnunet_ulseg.__file__}
folder = subprocess.run([sys.executable, "-m", "nnunet_ulseg.cli", "trainers-path"], capture_output=True, text=True,
                        check=True).stdout.strip()
out["trainers_path"] = folder
script = site / "bin" / "ulseg"
if script.exists():
    out["script_trainers_path"] = subprocess.run([str(script), "trainers-path"], capture_output=True, text=True,
                                                 check=True).stdout.strip()
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
cls = recursive_find_python_class(folder, "nnUNetTrainerAHRNetRLS", None, base_folder=folder,
                                  cleanup_imports_from_base_folder=True)
out["found"] = cls is not None and cls.__name__
out["subclass"] = cls is not None and issubclass(cls, nnUNetTrainer)
out["use_rls"] = bool(getattr(cls, "use_rls", False))
out["library"] = sys.modules[cls.__mro__[2].__module__].__file__  # nnunet_ulseg.training.ahrnet
os.environ["nnUNet_extTrainer"] = folder
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
out["train_lookup"] = recursive_find_trainer_class_by_name("nnUNetTrainerAHRNetRLS_1epochs").__name__
print("RESULT " + json.dumps(out))
"""


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from the build inputs, installed (not editable) into a target folder."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src])
    wheels = list((tmp / "dist").glob("nnunet_ulseg-*.whl"))
    assert len(wheels) == 1
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheels[0]])
    return site


def _clean_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "ULSEG_TRAINERS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    return env


@pytest.mark.integration
def test_wheel_ships_trainers_converter_and_license(installed):
    shipped = installed / "nnunet_ulseg" / "trainers"
    ours = sorted(p.name for p in (REPO / "trainers").glob("*.py"))
    assert ours and sorted(p.name for p in shipped.glob("*.py")) == ours
    assert (installed / "nnunet_ulseg" / "dataset_conversion" / "Dataset501_DeepLesion.py").is_file()
    licenses = list(installed.glob("nnunet_ulseg-*.dist-info/licenses/LICENSE"))
    assert licenses and "Apache License" in licenses[0].read_text()
    assert not (installed / "trainers").exists()  # no generic top-level name in site-packages


@pytest.mark.integration
def test_installed_trainers_path_is_found_by_nnunets_lookup(installed, tmp_path):
    proc = _run([sys.executable, "-c", CHECK, installed], env=_clean_env(installed), cwd=tmp_path)
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    site = installed.resolve()
    assert Path(result["package"]).resolve().is_relative_to(site)  # not the editable source tree
    assert Path(result["trainers_path"]).resolve() == site / "nnunet_ulseg" / "trainers"
    if "script_trainers_path" in result:
        assert result["script_trainers_path"] == result["trainers_path"]
    assert result["found"] == "nnUNetTrainerAHRNetRLS" and result["subclass"] and result["use_rls"]
    assert Path(result["library"]).resolve().is_relative_to(site)
    assert result["train_lookup"] == "nnUNetTrainerAHRNetRLS_1epochs"


@pytest.mark.integration
def test_installed_converter_script_runs(installed, tmp_path):
    proc = _run([sys.executable, "-m", "nnunet_ulseg.dataset_conversion.Dataset501_DeepLesion", "--help"],
                env=_clean_env(installed), cwd=tmp_path)
    assert "--deeplesion" in proc.stdout
