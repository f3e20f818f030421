"""bench_weak's saved rows: a row saved under another axis convention is re-scored, never mixed in."""
import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_bench():
    sys.path.insert(0, str(BENCH))  # bench_weak imports its sibling _nnunet_setup
    try:
        spec = importlib.util.spec_from_file_location("bench_weak_under_test", BENCH / "bench_weak.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def scores(dice):
    lesions = [{"dice": d} for d in dice]
    return {"summary": {"n": len(dice), "mean": sum(dice) / len(dice), "std": 0.0, "median": dice[0], "min": min(dice)},
            "per_lesion": lesions, "long_err": {"mean": 0.1}, "short_err": {"mean": 0.2}}


def test_rows_of_another_axis_convention_are_rescored(tmp_path, capsys):
    bench = load_bench()
    path, settings = tmp_path / "bench_weak.json", {"seed": 7}
    old = {**scores([0.5])["summary"], "long_err": 0.9, "short_err": 0.9}  # an edge-convention row, no "axes"
    path.write_text(json.dumps({"settings": settings, "rows": {"old": old, "kept": {**old, "axes": bench.AXES}},
                                "seconds": {"old": 12.0, "kept": 3.0}}))
    results = bench.Results(path, settings)
    calls = []
    results.add("old", lambda: calls.append("old") or scores([0.8, 0.6]))
    results.add("kept", lambda: calls.append("kept") or scores([0.1]))
    assert calls == ["old"]  # only the row of the other convention is scored again
    saved = json.loads(path.read_text())
    assert saved["rows"]["old"]["axes"] == bench.AXES and saved["rows"]["old"]["long_err"] == 0.1
    assert saved["rows"]["old"]["mean"] == 0.7 and saved["rows"]["kept"]["long_err"] == 0.9
    assert saved["seconds"]["old"] == 12.0  # the training time of the saved row is kept


# ---------------------------------------------------------------------------------------- co-segmentation rows
def test_trainer_list_and_embedding_model():
    bench = load_bench()
    assert bench.trainer_list(None, False) == bench.DEFAULT_TRAINERS
    # --table3 alone: nnU-Net's U-Net (embedding model and baseline), then the paper's five variants
    assert bench.trainer_list(None, True) == [bench.FALLBACK_EMBEDDING, *bench.TABLE3_TRAINERS]
    given = ["nnUNetTrainerCoSeg_10epochs", "nnUNetTrainerAHRNetRLS_10epochs"]
    assert bench.trainer_list(given, True) == [*given, *bench.TABLE3_TRAINERS[1:]]  # no duplicate, order kept
    assert all(bench.is_coseg(t) for t in bench.TABLE3_TRAINERS) and not bench.is_coseg("nnUNetTrainerULSeg")
    # the first non-CoSeg trainer, wherever it stands; none -> nnU-Net's U-Net
    assert bench.default_embedding(given) == "nnUNetTrainerAHRNetRLS_10epochs"
    assert bench.default_embedding(bench.TABLE3_TRAINERS) == bench.FALLBACK_EMBEDDING
    assert bench.coseg_row_name("nnUNetTrainerCoSeg_10epochs", 1) == "nnUNetTrainerCoSeg_10epochs, 1 partner"
    assert bench.coseg_row_name("nnUNetTrainerCoSeg_10epochs", 3) == "nnUNetTrainerCoSeg_10epochs, 3 partners"


def test_table3_variants_are_the_papers_columns(monkeypatch):
    """Each Table 3 trainer's CoSegNet attention (read from the class nnU-Net finds) maps to the paper's row."""
    from nnunet_ulseg.nnunet_layout import trainers_dir

    monkeypatch.setenv("nnUNet_extTrainer", str(trainers_dir()))
    bench = load_bench()
    want = [("SE", "MSA", ""), ("SE", "ASPP", ""), ("ECA", "MSA", ""), ("ECA", "ASPP", ""), ("", "", "DANet")]
    assert [bench.TABLE3_COLUMNS[bench.trainer_attention(t)] for t in bench.TABLE3_TRAINERS] == want
    assert bench.trainer_attention("nnUNetTrainerULSeg_10epochs") is None


def test_table3_block_and_its_saved_values(tmp_path):
    bench = load_bench()
    stats = {"metrics": {m: {"mean": 0.5 + i / 10, "std": i / 100, "n": 3}
                         for i, m in enumerate(["recall", "precision", "dice", "avd_mm", "vs", "hd95_mm"])}}
    row = bench.table3_row(stats)
    assert row == {"recall": (0.5, 0.0), "precision": (0.6, 0.01), "dice": (0.7, 0.02), "avd_mm": (0.8, 0.03),
                   "vs": (0.9, 0.04)}
    text = bench.format_table3([("nnUNetTrainerCoSegECA_10epochs, 1 partner", "eca", row), ("nnU-Net", None, row)])
    head, eca, plain = text.splitlines()
    assert head.split()[:4] == ["model", "CA", "SA", "CSA"] and head.split()[4:] == list(bench.TABLE3_METRICS)
    assert eca.split()[3:6] == ["ECA", "MSA", "0.500±0.000"]
    assert eca.split()[-1] == "0.900±0.040" and plain.split()[1:] == eca.split()[5:]  # blank attention columns
    # the block's numbers are saved with the rows and read back on resume
    path, settings = tmp_path / "bench_weak.json", {"seed": 1}
    results = bench.Results(path, settings)
    results.add("m", lambda: scores([0.5, 0.7]))
    results.table3["m"] = row
    results.save()
    again = bench.Results(path, settings)
    assert again.table3 == {"m": {k: list(v) for k, v in row.items()}} and again.rows["m"]["mean"] == 0.6
