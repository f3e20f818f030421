"""The nnU-Net folder layout module: names, paths, split installation, trainers folder.

Where nnU-Net itself computes the same thing (results folder, dataset name from an id,
case ids of a raw folder), the test asks nnunetv2 2.8 and compares.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_ulseg import nnunet_layout as layout
from nnunet_ulseg.nnunet_layout import (NNUNetEnvironmentError, NNUNetPaths, RawDataset, case_from_filename,
                                        dataset_folder_name, dataset_ids, find_dataset, fold_folder_name,
                                        parse_dataset_name, trainers_dir)

REPO_TRAINERS = Path(__file__).resolve().parents[1] / "trainers"


def _raw_dataset(root: Path, name: str = "Dataset501_Tiny", ending: str = ".nii.gz") -> RawDataset:
    ds = RawDataset(root / name)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (ds.path / folder).mkdir(parents=True)
    (ds.path / "dataset.json").write_text(json.dumps({"file_ending": ending, "channel_names": {"0": "CT", "1": "CT"}}))
    for case in ("a_b", "c"):
        for ch in (0, 1):
            (ds.path / "imagesTr" / f"{case}_{ch:04d}{ending}").write_bytes(b"")
        (ds.path / "labelsTr" / f"{case}{ending}").write_bytes(b"")
    (ds.path / "imagesTs" / f"t_0000{ending}").write_bytes(b"")
    (ds.path / "imagesTr" / "notes.txt").write_text("not an image")
    return ds


def test_dataset_names_round_trip_and_are_validated():
    assert dataset_folder_name(7, "Liver") == "Dataset007_Liver"
    assert parse_dataset_name("Dataset007_Liver") == (7, "Liver")
    assert parse_dataset_name("Dataset601_DeepLesion_round2") == (601, "DeepLesion_round2")
    for bad in ("DeepLesion", "Dataset7_X", "Dataset501_", "Dataset501"):
        with pytest.raises(ValueError, match="not an nnU-Net dataset name"):
            parse_dataset_name(bad)
    with pytest.raises(ValueError, match="1-999"):
        dataset_folder_name(1000, "X")
    with pytest.raises(ValueError, match="path separator"):
        dataset_folder_name(5, "a/b")


def test_find_dataset_by_id_or_name_in_several_roots(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    (raw / "Dataset501_A").mkdir(parents=True)
    (pre / "Dataset502_B").mkdir(parents=True)
    (raw / "notes").mkdir()
    assert find_dataset(raw, 501) == find_dataset([raw, pre], "501") == "Dataset501_A"
    assert find_dataset([raw, pre], 502) == "Dataset502_B"
    assert find_dataset(raw, "Dataset501_A") == "Dataset501_A"
    with pytest.raises(FileNotFoundError, match="id 503"):
        find_dataset([raw, pre], 503)
    with pytest.raises(FileNotFoundError, match="Dataset502_B not found"):
        find_dataset(raw, "Dataset502_B")
    (pre / "Dataset501_Other").mkdir()
    with pytest.raises(ValueError, match="several datasets with id 501"):
        find_dataset([raw, pre], 501)
    assert dataset_ids([raw, pre, tmp_path / "missing"]) == {501, 502}


def test_paths_agree_with_nnunets_own_results_folder(tmp_path, monkeypatch):
    paths = NNUNetPaths.under(tmp_path).create()
    (paths.raw / "Dataset042_X").mkdir()
    for name, value in zip(layout.NNUNET_VARIABLES, (paths.raw, paths.preprocessed, paths.results)):
        monkeypatch.setenv(name, str(value))
    # nnunetv2 2.8 reads its variables lazily (nnunetv2.paths._EnvPath), so the environment suffices
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    assert paths.dataset_name(42) == maybe_convert_to_dataset_name(42) == "Dataset042_X"
    for fold in (0, 3, "all"):
        ours = paths.fold_dir(42, "nnUNetTrainerAHRNetRLS", "nnUNetPlans", "2d", fold)
        assert str(ours) == get_output_folder(42, "nnUNetTrainerAHRNetRLS", "nnUNetPlans", "2d", fold)
    assert paths.model_dir("Dataset042_X", "T") == paths.results / "Dataset042_X" / "T__nnUNetPlans__2d"
    assert paths.splits_file(42) == paths.preprocessed / "Dataset042_X" / "splits_final.json"
    assert paths.raw_dataset(42).path == paths.raw / "Dataset042_X"
    assert fold_folder_name("2") == "fold_2"
    with pytest.raises(ValueError, match="fold"):
        fold_folder_name(-1)
    with pytest.raises(ValueError, match="trainer"):
        paths.model_dir(42, "a__b")


def test_from_environ_names_the_unset_variables(tmp_path):
    with pytest.raises(NNUNetEnvironmentError, match="set nnUNet_preprocessed, nnUNet_results"):
        NNUNetPaths.from_environ({"nnUNet_raw": str(tmp_path)})
    env = {v: str(tmp_path / v) for v in layout.NNUNET_VARIABLES}
    assert NNUNetPaths.from_environ(env) == NNUNetPaths.under(tmp_path)


def test_raw_dataset_paths_cases_and_file_ending(tmp_path):
    ds = _raw_dataset(tmp_path)
    assert ds.name == "Dataset501_Tiny" and ds.id == 501 and ds.file_ending == ".nii.gz"
    assert ds.image_path("c") == ds.path / "imagesTr" / "c_0000.nii.gz"
    assert ds.image_path("c", channel=1, test=True) == ds.path / "imagesTs" / "c_0001.nii.gz"
    assert ds.label_path("a_b") == ds.path / "labelsTr" / "a_b.nii.gz"
    assert ds.cases() == ["a_b", "c"] and ds.cases(test=True) == ["t"]
    assert ds.case_from_filename("a_b_0001.nii.gz") == "a_b"
    assert ds.case_from_filename("a_b.nii.gz", channel=False) == "a_b"
    with pytest.raises(ValueError, match="file ending"):
        ds.case_from_filename("a_b_0000.mha")
    with pytest.raises(ValueError, match="image name"):
        ds.case_from_filename("a_b.nii.gz")
    assert RawDataset(tmp_path / "anything", file_ending=".mha").image_path("x") == \
        tmp_path / "anything" / "imagesTr" / "x_0000.mha"
    with pytest.raises(ValueError, match="not an nnU-Net dataset name"):
        RawDataset(tmp_path / "anything").id
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        RawDataset(tmp_path / "Dataset502_Empty").file_ending
    (tmp_path / "Dataset503_NoEnding").mkdir()
    (tmp_path / "Dataset503_NoEnding" / "dataset.json").write_text("{}")
    with pytest.raises(ValueError, match="Dataset503_NoEnding.*file_ending"):
        RawDataset(tmp_path / "Dataset503_NoEnding").file_ending


def test_case_ids_match_nnunets_own_reader(tmp_path):
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    ds = _raw_dataset(tmp_path)
    ours = ds.cases()
    theirs = get_identifiers_from_splitted_dataset_folder(str(ds.images_dir()), ds.file_ending)
    assert ours == sorted(theirs)
    assert case_from_filename("x_1234.mha", ".mha") == "x"


def test_install_splits_never_silently_replaces_an_existing_split(tmp_path, caplog):
    paths = NNUNetPaths.under(tmp_path).create()
    ds = _raw_dataset(paths.raw)
    official = [{"train": ["a_b"], "val": ["c"]}]
    ds.splits_file.write_text(json.dumps(official))
    assert paths.install_splits(501) == "installed"
    target = paths.splits_file(501)
    assert json.loads(target.read_text()) == official
    assert paths.install_splits("Dataset501_Tiny") == "unchanged"
    mine = [{"train": ["c"], "val": ["a_b"]}]
    target.write_text(json.dumps(mine))
    with caplog.at_level(logging.WARNING, logger="nnunet_ulseg"):
        assert paths.install_splits(501) == "kept"
    assert json.loads(target.read_text()) == mine and "already holds a different split" in caplog.text
    assert paths.install_splits(501, overwrite=True) == "replaced"
    assert json.loads(target.read_text()) == official
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="other.json.*list of folds"):
        paths.install_splits(501, other, overwrite=True)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        paths.install_splits(501, tmp_path / "missing.json")


def test_trainers_dir_prefers_the_override_then_nnunet_ext_trainer_then_the_source_tree(tmp_path):
    assert trainers_dir({}) == REPO_TRAINERS
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / layout.TRAINERS_MARKER).write_text("")
    ext = os.pathsep.join([str(tmp_path / "user_trainers"), str(copy)])
    assert trainers_dir({"nnUNet_extTrainer": ext}) == copy
    assert trainers_dir({"nnUNet_extTrainer": str(tmp_path)}) == REPO_TRAINERS  # no trainers of ours there
    assert trainers_dir({"ULSEG_TRAINERS_DIR": str(REPO_TRAINERS), "nnUNet_extTrainer": ext}) == REPO_TRAINERS
    with pytest.raises(FileNotFoundError, match="ULSEG_TRAINERS_DIR"):
        trainers_dir({"ULSEG_TRAINERS_DIR": str(tmp_path / "missing")})
    env = NNUNetPaths.under(tmp_path).environ({"nnUNet_extTrainer": ext})
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(copy), str(tmp_path / "user_trainers")]


def test_trainers_dir_error_names_where_it_looked(tmp_path):
    """A copy of the module outside any tree, with no trainers beside it, fails clearly."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "nnunet_layout.py").write_text(Path(layout.__file__).read_text())
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import nnunet_layout as m\n"
            "try:\n m.trainers_dir({})\nexcept FileNotFoundError as e:\n print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pkg")], capture_output=True, text=True,
                         check=True).stdout
    assert "trainers folder not found" in out and "nnUNet_extTrainer" in out and str(tmp_path / "trainers") in out


def test_layout_module_imports_neither_torch_nor_nnunetv2():
    code = "import sys, nnunet_ulseg.nnunet_layout; print(sorted(m for m in ('torch', 'nnunetv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_converter_split_copy_keeps_a_different_installed_split_unless_overwrite(tmp_path, caplog):
    from nnunet_ulseg.conversion.splits import write_splits

    out = tmp_path / "raw" / "Dataset501_DeepLesion"
    out.mkdir(parents=True)
    installed = tmp_path / "pre" / "Dataset501_DeepLesion" / "splits_final.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps([{"train": ["mine"], "val": []}]))
    new = [{"train": ["a"], "val": ["b"]}]
    with caplog.at_level(logging.WARNING, logger="nnunet_ulseg"):
        assert write_splits(new, out, str(tmp_path / "pre")) == [out / "splits_final.json"]
    assert json.loads(installed.read_text()) == [{"train": ["mine"], "val": []}] and "kept" in caplog.text
    assert write_splits(new, out, str(tmp_path / "pre"), overwrite=True)[1] == installed
    assert json.loads(installed.read_text()) == new
