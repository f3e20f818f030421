import os
import sys

import pytest

from nnunet_ulseg.workflow.nnunet import NNUNetCommandError, NNUNetPaths, run_command, trainers_dir


def test_trainers_dir_is_the_repo_folder_and_overridable(tmp_path, monkeypatch):
    assert (trainers_dir() / "nnUNetTrainerULSeg_Xepochs.py").exists()
    monkeypatch.setenv("ULSEG_TRAINERS_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="ULSEG_TRAINERS_DIR"):
        trainers_dir()


def test_trainers_path_command_prints_the_folder_ulseg_uses(tmp_path, monkeypatch, capsys):
    from nnunet_ulseg.cli import main

    monkeypatch.delenv("ULSEG_TRAINERS_DIR", raising=False)
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    assert main(["trainers-path"]) == 0
    assert capsys.readouterr().out.strip() == str(trainers_dir())
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "nnUNetTrainerAHRNet.py").write_text("")
    monkeypatch.setenv("nnUNet_extTrainer", str(copy))
    assert main(["trainers-path"]) == 0 and capsys.readouterr().out.strip() == str(copy)
    assert main(["trainers-path", "--installed"]) == 0 and capsys.readouterr().out.strip() == str(trainers_dir({}))


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


def test_experiment_runs_nnunet_commands_with_bounded_pools(tmp_path, monkeypatch):
    from pathlib import Path

    import nnunet_ulseg.refine.backend as backend
    from nnunet_ulseg.workflow.experiment import Experiment

    calls = []
    monkeypatch.setattr(backend, "run_command", lambda args, env, log, echo: calls.append((args, env)))
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    exp = Experiment(NNUNetPaths.under(tmp_path), 501, "Dataset501_X", tmp_path / "log", device="cpu",
                     num_processes=3)
    exp.plan_and_preprocess()
    exp.train("nnUNetTrainerRLS_1epochs", fold=0)
    exp.predict("nnUNetTrainerRLS_1epochs", Path("/in"), Path("/out"), tta=False)
    exp.predict("nnUNetTrainerRLS_1epochs", Path("/in"), Path("/out2"))
    names = [Path(args[0]).name for args, _ in calls]
    assert names == ["nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_predict"]
    plan, train, predict, predict_tta = (list(map(str, a)) for a, _ in calls)
    assert plan[1:] == ["-d", "501", "-c", "2d", "-np", "3", "-npfp", "3", "--verify_dataset_integrity"]
    assert train[1:5] == ["501", "2d", "0", "-tr"] and "cpu" in train
    assert "--disable_tta" in predict and "--disable_tta" not in predict_tta  # mirroring unless disabled
    assert all(env["nnUNet_n_proc_DA"] == "3" for _, env in calls)
