"""nnU-Net's command-line dialect in every ``ulseg`` command (nnunet_ulseg.cli_args, issue 11 item 5).

Parse-level tests through the real ``ulseg`` parser (``build_parser``), the refine handler
with ``refine`` replaced by a recorder (its orchestration has its own tests), ``-f all``
through the refinement with the fake nnU-Net backend, and ``ulseg measure -o`` end to end
on a small converted sample.
"""
from __future__ import annotations

import argparse
import csv
import re
import shlex
from pathlib import Path

import pytest

from nnunet_ulseg import cli_args
from nnunet_ulseg.cli import build_parser, main
from nnunet_ulseg.refine import rounds as rounds_module
from nnunet_ulseg.refine.cli import refine_folds

REFINE = ["refine", "-d", "501", "-tr", "T"]
README = Path(__file__).resolve().parents[1] / "README.md"


def parse(argv):
    return build_parser().parse_args(argv)


def parse_error(argv, capsys) -> str:
    """The stderr of a parse that must fail with argparse's usage error (status 2)."""
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def recorded_refine(monkeypatch):
    """Replace ``refine`` (the handler imports it at call time) by a recorder of its arguments."""
    seen = {}

    def fake_refine(dataset, trainer, **options):
        seen.update(options, dataset=dataset, trainer=trainer)

    monkeypatch.setattr(rounds_module, "refine", fake_refine)
    return seen


# -- the trap: a single-dash word is never a short option plus an attached value ----------
def test_stock_argparse_reads_device_equals_cpu_as_the_dataset():
    """Why the parser class exists: this is what plain argparse does with refine's -d."""
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("-d", dest="dataset")
    p.add_argument("-tr", dest="trainer")
    assert p.parse_args(["-tr", "T", "-device=cpu"]).dataset == "evice=cpu"


@pytest.mark.parametrize("device", [["-device", "cpu"], ["-device=cpu"], ["--device", "cpu"], ["--device=cpu"]])
def test_refine_device_spellings(device):
    args = parse(["refine", "-tr", "T", *device, "-d", "501"])
    assert (args.device, args.dataset, args.trainer) == ("cpu", "501", "T")


def test_refine_device_equals_cpu_reaches_refine(recorded_refine):
    assert main(["refine", "-tr", "T", "-device=cpu", "-d", "501"]) == 0
    assert (recorded_refine["device"], recorded_refine["dataset"], recorded_refine["trainer"]) == ("cpu", "501", "T")


@pytest.mark.parametrize("argv, word", [
    (["refine", "-tr", "T", "-dcpu"], "-dcpu"),               # short option with an attached value
    ([*REFINE, "-dev", "cpu"], "-dev"),                        # prefix of -device
    ([*REFINE, "-num", "2"], "-num"),                          # prefix of -num_parts / -num_gpus
    ([*REFINE, "-n", "2"], "-n"),                              # two-character prefix of -np
    ([*REFINE, "-hx"], "-hx"),                                 # -h plus a value, seen by the root parser
    (["measure", "--pred", "p", "--sidecar", "s", "-o", "o", "-device=cpu"], "-device=cpu"),  # no -device here
])
def test_unknown_single_dash_words_are_errors(argv, word, capsys):
    err = parse_error(argv, capsys)
    assert f"unrecognized option {word} " in err and "-device cpu" in err


def test_the_error_comes_from_the_command_that_owns_the_near_option(capsys):
    err = parse_error(["refine", "-tr", "T", "-dcpu"], capsys)  # not "the following arguments are required: -d"
    assert "ulseg refine: error: unrecognized option -dcpu" in err and "required" not in err


def test_no_prefix_matching_of_long_options(capsys):
    assert "unrecognized option --init" in parse_error([*REFINE, "--init"], capsys)
    assert "unrecognized option --disable" in parse_error([*REFINE, "--disable"], capsys)


def test_every_subparser_uses_the_dialect_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"refine", "demo", "evaluate", "measure", "convert-deeplesion", "make-sample",
                                "postprocess"}
    for name, p in sub.choices.items():
        assert isinstance(p, cli_args.ArgumentParser) and not p.allow_abbrev, name


def test_negative_numbers_stay_values(capsys):
    assert parse([*REFINE, "--wait-timeout", "-1"]).wait_timeout == -1.0
    assert "fold must be >= 0" in parse_error([*REFINE, "-f", "-1"], capsys)


# -- folds ---------------------------------------------------------------------------------
def test_fold_spellings_parse_like_nnunet(capsys):
    assert parse(REFINE).folds is None
    assert parse([*REFINE, "-f", "0", "1", "2", "3", "4"]).folds == [0, 1, 2, 3, 4]
    assert parse([*REFINE, "-f", "all"]).folds == ["all"]
    assert parse([*REFINE, "-f", "2"]).folds == [2]
    assert "fold must be a number or 'all'" in parse_error([*REFINE, "-f", "x"], capsys)


def test_refine_folds_map_onto_one_fold_or_cross_validation():
    assert refine_folds(None, False) == (None, False)
    assert refine_folds(None, True) == (None, True)
    assert refine_folds([3], False) == (3, False)
    assert refine_folds(["all"], False) == ("all", False)
    assert refine_folds([4, 3, 2, 1, 0], False) == (None, True)
    assert refine_folds([0, 1, 2, 3, 4], True) == (None, True)
    with pytest.raises(ValueError, match="trains one fold .* or the 5-fold cross-validation"):
        refine_folds([0, 1], False)
    with pytest.raises(ValueError, match="given twice"):
        refine_folds([0, 0], False)
    with pytest.raises(ValueError, match="with --cross-val"):
        refine_folds([2], True)


@pytest.mark.parametrize("folds, fold, cross_val", [(["0", "1", "2", "3", "4"], None, True), (["all"], "all", False),
                                                    (["1"], 1, False), ([], None, False)])
def test_refine_handler_passes_folds(recorded_refine, folds, fold, cross_val):
    assert main([*REFINE, *(["-f", *folds] if folds else [])]) == 0
    assert (recorded_refine["fold"], recorded_refine["cross_val"]) == (fold, cross_val)


def test_refine_handler_refuses_a_partial_fold_set(recorded_refine, capsys):
    assert main([*REFINE, "-f", "0", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ulseg refine: error: -f 0 1:") and "Traceback" not in err
    assert not recorded_refine


def test_refine_fold_all_trains_and_predicts_nnunets_fold_all(tmp_path):
    from refine_support import FakeBackend, write_tiny_dataset

    from nnunet_ulseg.refine.rounds import RefineConfig, refine, work_dir_name
    from nnunet_ulseg.workflow.nnunet import NNUNetPaths

    assert RefineConfig(501, "T", fold="all").folds == ["all"]
    with pytest.raises(ValueError, match="fold must be >= 0"):
        RefineConfig(501, "T", fold=-1).validate()
    paths = NNUNetPaths.under(tmp_path).create()
    write_tiny_dataset(paths.raw)
    backend = FakeBackend(paths, "nnUNetTrainerFake")
    result = refine(501, "nnUNetTrainerFake", paths=paths, backend=backend, echo=None, device="cpu", rounds=2,
                    fold="all")
    assert result.work_dir.name == work_dir_name("nnUNetTrainerFake", "nnUNetPlans", "2d", "all", False)
    assert [c[2] for c in backend.calls if c[0] == "train"] == ["all", "all"]
    assert [c[2] for c in backend.calls if c[0] == "predict"] == [("all",)]
    assert (backend.fold_dir("Dataset501_Tiny", "all") / "checkpoint_final.pth").is_file()


# -- parts, TTA ----------------------------------------------------------------------------
def test_parts_spellings():
    new = parse([*REFINE, "-num_parts", "2", "-part_id", "1"])
    old = parse([*REFINE, "--num-parts", "2", "--part-id", "1"])
    assert (new.num_parts, new.part_id) == (2, 1) and vars(new) == vars(old)
    assert (parse(REFINE).num_parts, parse(REFINE).part_id) == (1, 0)


@pytest.mark.parametrize("command", [REFINE, ["demo"]])
def test_tta_is_on_by_default_and_disable_tta_turns_it_off(command, capsys):
    assert parse(command).tta is True
    assert parse([*command, "--disable_tta"]).tta is False
    assert parse([*command, "--disable-tta"]).tta is False
    assert parse([*command, "--tta"]).tta is True
    assert "not allowed with" in parse_error([*command, "--tta", "--disable_tta"], capsys)


def test_refine_handler_passes_tta(recorded_refine):
    assert main(REFINE) == 0 and recorded_refine["tta"] is True
    assert main([*REFINE, "--disable_tta"]) == 0 and recorded_refine["tta"] is False


# -- old spellings are aliases: the same namespace --------------------------------------------
@pytest.mark.parametrize("old, new", [
    (["refine", "-d", "501", "-tr", "T", "--device", "cpu", "--num-parts", "2", "--part-id", "1", "--disable-tta",
      "--np", "3", "-f", "2", "-num_gpus", "1"],
     ["refine", "-d", "501", "-tr", "T", "-device", "cpu", "-num_parts", "2", "-part_id", "1", "--disable_tta",
      "-np", "3", "-f", "2", "--num-gpus", "1"]),
    (["demo", "--out", "x", "--trainer", "T", "--device", "cpu", "--np", "1", "--disable-tta"],
     ["demo", "-o", "x", "-tr", "T", "-device", "cpu", "-np", "1", "--disable_tta"]),
    (["evaluate", "--pred", "p", "q", "--ref", "r", "--sidecar", "s.csv", "--out", "o", "--allow-missing"],
     ["evaluate", "--pred", "p", "q", "--ref", "r", "--sidecar", "s.csv", "-o", "o", "--chill"]),
    (["measure", "--pred", "p", "--sidecar", "s.csv", "--out", "o", "--allow-missing"],
     ["measure", "--pred", "p", "--sidecar", "s.csv", "-o", "o", "--chill"]),
    (["convert-deeplesion", "--deeplesion", "a", "--out", "b", "--np", "2"],
     ["convert-deeplesion", "-i", "a", "-o", "b", "-np", "2"]),
    (["make-sample", "--out", "x", "--lesions", "3"], ["make-sample", "-o", "x", "--lesions", "3"]),
    (["postprocess", "-i", "p", "--out", "o", "--sidecar", "s.csv"], ["postprocess", "-i", "p", "-o", "o",
                                                                       "--sidecar", "s.csv"]),
])
def test_old_spellings_parse_to_the_same_namespace(old, new):
    assert vars(parse(old)) == vars(parse(new))


def test_defaults_of_the_aliased_options():
    demo = parse(["demo"])
    assert (demo.out, demo.device, demo.num_processes, demo.tta) == (Path("ulseg_demo"), None, 2, True)
    convert = parse(["convert-deeplesion", "-i", "a", "-d", "777"])
    assert (convert.out, convert.dataset_id, convert.num_processes) == (None, 777, None)
    assert parse(["measure", "--pred", "p", "--sidecar", "s", "-o", "o"]).allow_missing is False


# -- -o is a folder in every command ---------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["evaluate", "--pred", "p", "--ref", "r", "--sidecar", "s", "-o", "o"],
    ["measure", "--pred", "p", "--sidecar", "s", "-o", "o"],
    ["demo", "-o", "o"], ["make-sample", "-o", "o"], ["convert-deeplesion", "-i", "a", "-o", "o"],
    ["postprocess", "-i", "p", "-o", "o", "--sidecar", "s"],
])
def test_o_is_a_folder_path_everywhere(argv):
    args = parse(argv)
    assert (args.output if argv[0] == "postprocess" else args.out) == Path("o")


def test_check_output_folder_refuses_files_and_csv_names(tmp_path):
    assert cli_args.check_output_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        cli_args.check_output_folder(tmp_path / "f.txt")
    with pytest.raises(ValueError, match="output folder now"):
        cli_args.check_output_folder(tmp_path / "measurements.csv")
    (tmp_path / "a.csv").mkdir()  # an existing folder is a folder, whatever its name
    assert cli_args.check_output_folder(tmp_path / "a.csv") == tmp_path / "a.csv"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 12-lesion generated sample converted to ellipse crops (as tests/test_evaluation_e2e.py's fixture)."""
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("dialect")
    sample = make_sample(root / "sample", n_lesions=12, seed=0, progress=False)
    raw = root / "raw" / "Dataset990_DialectTest"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("nnUNet_preprocessed", raising=False)
        convert_deeplesion(sample, raw, num_processes=1, progress=False)
    return raw


def test_measure_writes_its_csv_inside_the_o_folder(converted, tmp_path, capsys):
    from nnunet_ulseg.conversion.sidecar import read_sidecar
    from nnunet_ulseg.evaluation.measure import MEASURE_COLUMNS

    out = tmp_path / "measure_out"
    argv = ["measure", "--pred", str(converted / "pseudolabelsTs"), "--sidecar", str(converted / "lesions.csv")]
    assert main([*argv, "-o", str(out)]) == 0
    table_file = out / "measurements.csv"
    assert str(table_file) in capsys.readouterr().out
    with open(table_file, newline="") as f:
        table = list(csv.DictReader(f))
    test_cases = [r.case for r in read_sidecar(converted / "lesions.csv") if r.split == "test"]
    assert tuple(table[0]) == MEASURE_COLUMNS and [t["case"] for t in table] == test_cases
    assert all(t["status"] == "ok" for t in table)
    # the old file spelling is a clear error, not a folder named like a CSV file
    assert main([*argv, "--out", str(tmp_path / "m.csv")]) == 2
    assert "output folder now" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()


def readme_commands() -> list[list[str]]:
    """Every ``ulseg ...`` command line in README.md's bash blocks (continuations joined, comments cut)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("ulseg") and len(words) > 1:
            commands.append(words[1:])
    return commands


def test_readme_commands_parse_in_the_dialect():
    commands = readme_commands()
    assert {c[0] for c in commands} >= {"convert-deeplesion", "refine", "evaluate", "measure", "postprocess"}
    for argv in commands:
        parse(argv)  # a SystemExit here is a README command that no longer parses


def test_help_text_unwraps_rest_markup():
    from nnunet_ulseg.cli_args import help_text

    doc = "Run :func:`~nnunet_ulseg.refine.rounds.refine` with ``-f 0``;\n:class:`Foo` stays ``x``."
    assert help_text(doc) == "Run nnunet_ulseg.refine.rounds.refine with -f 0;\nFoo stays x."
    assert help_text(None) == ""


@pytest.mark.parametrize("script", ["dataset_conversion/Dataset501_DeepLesion.py", "dataset_conversion/Dataset502_ULS23.py",
                                    "benchmarks/bench_weak.py",
                                    "benchmarks/bench_convert.py", "benchmarks/bench_step.py"])
def test_script_help_has_no_rest_markup(script):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / script), "--help"], capture_output=True, text=True,
                         cwd=root, check=True).stdout
    assert out.strip() and "``" not in out and ":func:" not in out and ":class:" not in out
