import os
import sys

import pytest

from nnunet_ulseg.workflow.nnunet import NNUNetCommandError, NNUNetPaths, run_command, trainers_dir


def test_trainers_dir_is_the_repo_folder_and_overridable(tmp_path, monkeypatch):
    assert (trainers_dir() / "nnUNetTrainerULSeg_Xepochs.py").exists()
    monkeypatch.setenv("ULSEG_TRAINERS_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="ULSEG_TRAINERS_DIR"):
        trainers_dir()


def test_environ_sets_nnunet_variables_and_keeps_user_trainers(tmp_path):
    paths = NNUNetPaths.under(tmp_path).create()
    env = paths.environ({"nnUNet_extTrainer": "/user/trainers", "PATH": "/bin"})
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(trainers_dir()), "/user/trainers"]
    assert all(p.is_dir() for p in (paths.raw, paths.preprocessed, paths.results))


def test_run_command_logs_echoes_and_reports_failure(tmp_path):
    log = tmp_path / "log.txt"
    seen = []
    code = "print('Epoch 3'); print('noise'); print('x\\rtrain_loss 0.5')"
    run_command([sys.executable, "-c", code], dict(os.environ), log, echo=seen.append)
    assert [s.strip() for s in seen] == ["Epoch 3", "train_loss 0.5"]
    assert "noise" in log.read_text()
    with pytest.raises(NNUNetCommandError, match="status 3.*\n.*boom"):
        run_command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], dict(os.environ), log,
                    echo=None)


def test_environ_bounds_nnunet_worker_pools_unless_user_set_them(tmp_path):
    paths = NNUNetPaths.under(tmp_path)
    env = paths.environ({"PATH": "/bin"}, num_processes=2)
    assert env["nnUNet_n_proc_DA"] == "2" and env["nnUNet_def_n_proc"] == "2"
    env = paths.environ({"nnUNet_n_proc_DA": "6"}, num_processes=2)
    assert env["nnUNet_n_proc_DA"] == "6"
    assert "nnUNet_n_proc_DA" not in paths.environ({"PATH": "/bin"})
