"""Issue 12, cases 1, 2, 3 and 8: the converters' output folder never loses data nor writes the input.

Each test reproduces one reported fault on a small corpus generated here:

1. a user's own file in ``--out`` (``lesions.csv``, ``conversion_report.csv``,
   ``splits_final.json``) was replaced without ``--overwrite``; a symlink planted in
   ``--out`` was followed on write (``lesions.csv -> DL_info.csv`` overwrote the input,
   ``imagesTr -> <input>/...`` put crops into the input);
2. ``--overwrite`` deleted ``dataset.json``/``imagesTr``/``labelsTr`` of a dataset another
   tool made, and files in the case folders that no run of the converter wrote;
3. a different ``$nnUNet_preprocessed/<dataset>/splits_final.json`` must be kept (with a
   warning) unless ``--overwrite``;
8. a conversion that converted nothing exited 0.

Also kept: an interrupted conversion is never taken as complete, and the same rules hold
for the ULS23 converter.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dl_fixtures import dl_row, ramp, recist_text, write_dl_info, write_png
from uls23_fixtures import Lesion, uls23_sample
from nnunet_ulseg.conversion import deeplesion
from nnunet_ulseg.conversion.cli import main as convert_main
from nnunet_ulseg.conversion.deeplesion import build_tasks, convert_deeplesion
from nnunet_ulseg.conversion.dl_info import read_dl_info
from nnunet_ulseg.conversion.output import MANIFEST, read_manifest
from nnunet_ulseg.conversion.splits import resolve_patient_splits
from nnunet_ulseg.conversion.uls23 import convert_uls23
from nnunet_ulseg.conversion.uls23_cli import main as uls23_main
from nnunet_ulseg.conversion.worker import convert_series

NAME = "Dataset591_Faults"
ULS_NAME = "Dataset592_FaultsULS"
USER_SPLIT = [{"train": ["mine_a"], "val": ["mine_b"]}]


def tree_hash(root: Path) -> dict:
    """Every entry under ``root``: file -> sha256, link -> its target, folder -> 'dir' (nothing is followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def dl(tmp_path_factory) -> Path:
    """Three good lesions (train, val, test; three patients) on 96 x 80 ramps."""
    root = tmp_path_factory.mktemp("faults_out") / "DeepLesion"
    for patient, key in ((1, 5), (2, 6), (3, 7)):
        write_png(root, patient, 1, 1, key, ramp())
    write_dl_info(root, [dl_row(1, 1, 1, 5, recist_text(40, 40, 12, 6), 1),
                         dl_row(2, 1, 1, 6, recist_text(45, 35, 14, 7), 2),
                         dl_row(3, 1, 1, 7, recist_text(50, 30, 10, 5), 3)])
    return root


@pytest.fixture(autouse=True)
def _preprocessed(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))


def convert(dl: Path, out: Path, **kw):
    return convert_deeplesion(dl, out, num_processes=1, progress=False, **kw)


# ---- case 1: files in --out that the converter did not create ------------------------------------------------

@pytest.mark.parametrize("name", ["lesions.csv", "conversion_report.csv", "splits_final.json", MANIFEST])
def test_a_users_file_in_out_is_never_replaced_without_overwrite(dl, tmp_path, name):
    out = tmp_path / NAME
    out.mkdir()
    (out / name).write_text("mine\n")
    with pytest.raises(FileExistsError, match=name):
        convert(dl, out)
    assert (out / name).read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == [name]  # refused before anything was written
    # --overwrite does not make it ours either: no run of the converter recorded it
    with pytest.raises(FileExistsError, match="not written by"):
        convert(dl, out, overwrite=True)
    assert (out / name).read_text() == "mine\n"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlinked_sidecar_never_overwrites_dl_info(dl, tmp_path, overwrite):
    before = tree_hash(dl)
    out = tmp_path / NAME
    out.mkdir()
    (out / "lesions.csv").symlink_to(dl / "DL_info.csv")
    with pytest.raises(FileExistsError, match="symbolic link"):
        convert(dl, out, overwrite=overwrite)
    assert tree_hash(dl) == before
    assert (out / "lesions.csv").is_symlink()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlinked_case_folder_never_puts_crops_into_the_input(dl, tmp_path, overwrite):
    spare = dl / "spare"  # an empty folder of the input: nothing there says "busy"
    spare.mkdir(exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = tree_hash(dl)
    for target, case_dir in ((spare, "imagesTr"), (elsewhere, "labelsTr")):
        out = tmp_path / f"{NAME}_{case_dir}"
        out.mkdir()
        (out / case_dir).symlink_to(target, target_is_directory=True)
        with pytest.raises(FileExistsError, match="symbolic link"):
            convert(dl, out, overwrite=overwrite)
    assert tree_hash(dl) == before and not any(spare.iterdir()) and not any(elsewhere.iterdir())


def test_the_worker_never_replaces_a_file_it_did_not_create(dl, tmp_path):
    """Defence in depth under the folder checks: workers open case files with O_EXCL and remove only their own."""
    info = read_dl_info(dl / "DL_info.csv")
    assigned, _ = resolve_patient_splits(info.patient_splits)
    out = tmp_path / "o"
    tasks, _ = build_tasks(info.records[:1], assigned, dl / "Images_png", out)
    for d in ("imagesTr", "labelsTr"):
        (out / d).mkdir(parents=True)
    case = info.records[0].case_id
    label = out / "labelsTr" / f"{case}.mha"
    label.write_text("mine")
    (result,) = convert_series(tasks[0])
    assert result.issue is not None and "exists" in result.issue.detail
    assert label.read_text() == "mine"
    assert not (out / "imagesTr" / f"{case}_0000.mha").exists()  # its own half-written image is removed


# ---- case 2: --overwrite removes only what a previous run of this converter recorded --------------------------

@pytest.mark.parametrize("dataset_json", [{"converted_by": "someone else's converter"}, {"name": "no converted_by"}])
def test_overwrite_refuses_a_dataset_another_tool_made(dl, tmp_path, dataset_json):
    out = tmp_path / NAME
    for d in ("imagesTr", "labelsTr"):
        (out / d).mkdir(parents=True)
    (out / "imagesTr" / "BraTS_001_0000.nii.gz").write_bytes(b"image")
    (out / "labelsTr" / "BraTS_001.nii.gz").write_bytes(b"label")
    (out / "dataset.json").write_text(json.dumps(dataset_json))
    before = tree_hash(out)
    with pytest.raises(FileExistsError, match="another tool|not written by"):
        convert(dl, out, overwrite=True)
    assert tree_hash(out) == before


def test_overwrite_removes_only_what_the_previous_run_recorded(dl, tmp_path):
    out = tmp_path / NAME
    convert(dl, out)
    (out / "notes.txt").write_text("mine")
    extra = out / "imagesTr" / "MINE_001_0000.mha"  # not written by the converter: kept, and the run refused
    extra.write_text("mine")
    with pytest.raises(FileExistsError, match="MINE_001_0000.mha"):
        convert(dl, out, overwrite=True)
    assert extra.read_text() == "mine" and (out / "dataset.json").is_file()
    extra.unlink()
    manifest = read_manifest(out)
    assert manifest["converted_by"] == "nnunet_ulseg convert-deeplesion" and manifest["state"] == "complete"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MANIFEST, "notes.txt"}
    assert set(manifest["files"]) == written  # the record is exactly what the run wrote
    # a recorded file replaced by a link is not ours any more either
    (out / "lesions.csv").unlink()
    (out / "lesions.csv").symlink_to(dl / "DL_info.csv")
    with pytest.raises(FileExistsError, match="symbolic link"):
        convert(dl, out, overwrite=True)
    (out / "lesions.csv").unlink()
    result = convert(dl, out, overwrite=True)
    assert result.converted == {"train": 1, "val": 1, "test": 1}
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_manifest_of_another_converter(dl, tmp_path):
    out = tmp_path / NAME
    convert(dl, out)
    record = read_manifest(out)
    record["converted_by"] = "nnunet_ulseg convert-uls23"
    (out / MANIFEST).write_text(json.dumps(record))
    (out / "dataset.json").write_text(json.dumps({"converted_by": "nnunet_ulseg convert-uls23"}))
    with pytest.raises(FileExistsError, match="convert-uls23"):
        convert(dl, out, overwrite=True)
    assert (out / "lesions.csv").is_file()


def test_an_interrupted_conversion_is_never_taken_as_complete(dl, tmp_path, monkeypatch):
    out = tmp_path / NAME

    def killed(folder, *args, **kwargs):  # killed half-way through writing dataset.json
        (Path(folder) / "dataset.json").write_text('{"channel_names": ')
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(deeplesion, "_write_dataset_json", killed)
        with pytest.raises(KeyboardInterrupt):
            convert(dl, out)
    assert not (out / "dataset.json").exists()  # no half-written completion marker
    assert read_manifest(out)["state"] == "converting"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(FileExistsError, match="interrupted"):
        convert(dl, out)
    result = convert(dl, out, overwrite=True)
    assert result.converted == {"train": 1, "val": 1, "test": 1} and (out / "dataset.json").is_file()


# ---- case 3: splits_final.json -------------------------------------------------------------------------------

def test_a_users_preprocessed_split_is_kept_unless_overwrite(dl, tmp_path, caplog):
    installed = tmp_path / "pre" / NAME / "splits_final.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps(USER_SPLIT))
    out = tmp_path / NAME
    with caplog.at_level(logging.WARNING, logger="nnunet_ulseg.conversion"):
        convert(dl, out)
    assert json.loads(installed.read_text()) == USER_SPLIT
    assert any("different split" in r.getMessage() and "kept" in r.getMessage() for r in caplog.records)
    ours = json.loads((out / "splits_final.json").read_text())
    assert ours != USER_SPLIT
    convert(dl, out, overwrite=True)
    assert json.loads(installed.read_text()) == ours


# ---- case 8: nothing converted ---------------------------------------------------------------------------------

def test_cli_exits_non_zero_when_nothing_was_converted(tmp_path, capsys):
    bad = tmp_path / "bad_dl"
    (bad / "Images_png").mkdir(parents=True)
    write_dl_info(bad, [dl_row(1, 1, 1, 5, recist_text(40, 40, 12, 6), 1),  # no PNG
                        dl_row(2, 1, 1, 6, "nan, 1, 2, 3, 4, 5, 6, 7", 2)])
    out = tmp_path / NAME
    code = convert_main(["-i", str(bad), "-o", str(out), "-np", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no lesion was converted" in err and "conversion_report.csv" in err and "Traceback" not in err
    assert (out / "conversion_report.csv").is_file()  # the reasons are still written


# ---- the same rules for the ULS23 converter ------------------------------------------------------------------

@pytest.fixture(scope="module")
def uls(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults_uls") / "ULS23"
    return uls23_sample(root, lesions=[Lesion("000003_01_01_040_lesion_01"),
                                       Lesion("000004_01_01_041_lesion_01", angle_deg=-35.0)],
                        faults=False, real_shape=False)


def convert_uls(sample: dict, out: Path, **kw):
    return convert_uls23(sample["images"], sample["labels"], out, num_processes=1, progress=False,
                         val_fraction=0.0, test_fraction=0.0, **kw)


@pytest.mark.parametrize("overwrite", [False, True])
def test_uls23_symlinked_outputs_never_write_the_input(uls, tmp_path, overwrite):
    before = tree_hash(uls["root"])
    label = sorted(uls["labels"].iterdir())[0]
    out = tmp_path / ULS_NAME
    out.mkdir()
    (out / "uls23_volumes.csv").symlink_to(label)
    with pytest.raises(FileExistsError, match="symbolic link"):
        convert_uls(uls, out, overwrite=overwrite)
    (out / "uls23_volumes.csv").unlink()
    (out / "referencesTs").symlink_to(uls["labels"], target_is_directory=True)
    with pytest.raises(FileExistsError, match="symbolic link"):
        convert_uls(uls, out, overwrite=overwrite)
    assert tree_hash(uls["root"]) == before


def test_uls23_user_files_and_foreign_datasets_are_kept(uls, tmp_path):
    out = tmp_path / ULS_NAME
    out.mkdir()
    (out / "uls23_volumes.csv").write_text("mine\n")
    with pytest.raises(FileExistsError, match="uls23_volumes.csv"):
        convert_uls(uls, out)
    (out / "uls23_volumes.csv").unlink()
    (out / "dataset.json").write_text(json.dumps({"converted_by": "nnunet_ulseg convert-deeplesion"}))
    (out / "imagesTr").mkdir()
    (out / "imagesTr" / "DL_000001_01_01_005_0_0000.mha").write_text("theirs")
    with pytest.raises(FileExistsError, match="not written by|another"):
        convert_uls(uls, out, overwrite=True)
    assert (out / "imagesTr" / "DL_000001_01_01_005_0_0000.mha").read_text() == "theirs"


def test_uls23_overwrite_of_its_own_run_and_the_preprocessed_split(uls, tmp_path, caplog):
    installed = tmp_path / "pre" / ULS_NAME / "splits_final.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps(USER_SPLIT))
    out = tmp_path / ULS_NAME
    with caplog.at_level(logging.WARNING, logger="nnunet_ulseg.conversion"):
        convert_uls(uls, out)
    assert json.loads(installed.read_text()) == USER_SPLIT
    assert any("different split" in r.getMessage() for r in caplog.records)
    manifest = read_manifest(out)
    assert manifest["converted_by"] == "nnunet_ulseg convert-uls23"
    assert set(manifest["files"]) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MANIFEST}
    (out / "notes.txt").write_text("mine")
    result = convert_uls(uls, out, overwrite=True)
    assert len(result.rows) == 2 and (out / "notes.txt").read_text() == "mine"
    assert json.loads(installed.read_text()) == json.loads((out / "splits_final.json").read_text())


def test_uls23_cli_exits_non_zero_when_nothing_was_converted(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(images / "bone_00001_lesion_01.nii.gz"))
    code = uls23_main(["-i", str(images), "-l", str(labels), "-o", str(tmp_path / ULS_NAME), "-np", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no VOI was converted" in err and "Traceback" not in err
