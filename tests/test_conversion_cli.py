"""``ulseg convert-deeplesion`` and ``dataset_conversion/Dataset501_DeepLesion.py`` front ends."""
import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from dl_fixtures import dl_row, fault_corpus, ramp, recist_text, write_dl_info, write_png
from nnunet_ulseg.conversion.cli import add_convert_parser, main

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_conversion" / "Dataset501_DeepLesion.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    dl = tmp_path_factory.mktemp("cli") / "dl"
    fault_corpus(dl)
    return dl


def test_main_converts_with_skips_and_exits_0(corpus, tmp_path, capsys):
    out = tmp_path / "Dataset501_DeepLesion"
    assert main(["--deeplesion", str(corpus), "--out", str(out), "--np", "1", "--context", "1"]) == 0
    captured = capsys.readouterr()
    assert "converted 7 lesions: train 2, val 2, test 3" in captured.out
    assert "missing_png" in captured.err  # per-lesion log lines
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "CT", "1": "CT", "2": "CT"}
    # a second run refuses to overwrite: clear error, no traceback, non-zero
    assert main(["--deeplesion", str(corpus), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--overwrite" in err and "Traceback" not in err
    assert main(["--deeplesion", str(corpus), "--out", str(out), "--quiet", "--overwrite",
                 "--scale-policy", "physical"]) == 0
    assert json.loads((out / "dataset.json").read_text())["scale_policy"] == "physical"


def test_strict_failure_exits_non_zero_with_message(corpus, tmp_path, capsys):
    assert main(["--deeplesion", str(corpus), "--out", str(tmp_path / "o"), "--strict", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "duplicate_row" in err and "line 9" in err and "Traceback" not in err


def test_missing_input_folder_is_a_clean_error(tmp_path, capsys):
    assert main(["--deeplesion", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "DL_info.csv" in capsys.readouterr().err


def test_add_convert_parser_registers_the_subcommand():
    parser = argparse.ArgumentParser(prog="ulseg")
    sub = parser.add_subparsers(dest="command")
    add_convert_parser(sub)
    args = parser.parse_args(["convert-deeplesion", "--deeplesion", "a", "--out", "b", "--np", "3", "--context", "2",
                              "--strict", "--scale-policy", "physical", "--overwrite"])
    assert (args.deeplesion, args.out, args.num_processes, args.context, args.strict, args.scale_policy,
            args.overwrite) == ("a", Path("b"), 3, 2, True, "physical", True)
    assert callable(args.func)
    # nnU-Net converters' spellings give the same namespace as the long ones
    short = parser.parse_args(["convert-deeplesion", "-i", "a", "-o", "b", "-np", "3", "--context", "2",
                               "--strict", "--scale-policy", "physical", "--overwrite"])
    assert vars(short) == vars(args)
    assert parser.parse_args(["convert-deeplesion", "-i", "a", "-d", "777"]).dataset_id == 777
    with pytest.raises(SystemExit):
        parser.parse_args(["convert-deeplesion", "--deeplesion", "a", "--out", "b", "--scale-policy", "big"])


def test_ulseg_convert_with_dataset_id_writes_into_nnunet_raw(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert main(["-i", str(corpus), "-d", "778", "-np", "1", "--quiet"]) == 0
    assert (tmp_path / "raw" / "Dataset778_DeepLesion" / "dataset.json").is_file()
    # neither -o nor -d: one clear error line, nothing written
    assert main(["-i", str(corpus), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "-o RAW_DATASET_DIR" in err and "-d ID" in err and "Traceback" not in err


def load_script():
    spec = importlib.util.spec_from_file_location("Dataset501_DeepLesion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dataset_conversion_script_uses_nnunet_raw_and_dataset_id(tmp_path, monkeypatch, capsys):
    dl = tmp_path / "dl"
    write_png(dl, 1, 1, 1, 5, ramp())
    write_png(dl, 2, 1, 1, 5, ramp())
    write_dl_info(dl, [dl_row(1, 1, 1, 5, recist_text(40, 40, 10, 5), 1),
                       dl_row(2, 1, 1, 5, recist_text(40, 40, 10, 5), 2)])
    script = load_script()
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert script.main(["--deeplesion", str(dl), "-d", "777", "--quiet"]) == 0
    assert (tmp_path / "raw" / "Dataset777_DeepLesion" / "dataset.json").is_file()
    assert (tmp_path / "pre" / "Dataset777_DeepLesion" / "splits_final.json").is_file()
    # -d defaults to 501 in the script; nnU-Net's spelling -i works too
    assert script.main(["-i", str(dl), "--quiet"]) == 0
    assert (tmp_path / "raw" / "Dataset501_DeepLesion" / "dataset.json").is_file()
    monkeypatch.delenv("nnUNet_raw")
    assert script.main(["--deeplesion", str(dl), "--quiet"]) == 2
    assert "nnUNet_raw is not set" in capsys.readouterr().err
