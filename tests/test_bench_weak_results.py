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
