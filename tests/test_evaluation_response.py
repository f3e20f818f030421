"""RECIST 1.1 target-lesion response (evaluation.response) on hand-made cases at each boundary."""
import csv

import pytest

from nnunet_ulseg.cli import main
from nnunet_ulseg.evaluation.response import Lesion, categorise, response_table, sum_of_diameters


def L(i, long_mm, short_mm=5.0, node=False):
    return Lesion(i, long_mm, short_mm, node)


def cat(baseline, *follow_ups, new=None):
    return [t.category for t in categorise(baseline, [(f"t{k}", f) for k, f in enumerate(follow_ups, 1)], new)]


def test_sum_uses_short_axis_of_nodes():
    assert sum_of_diameters([L("a", 30.0, 12.0), L("n", 25.0, 15.0, node=True)]) == 45.0
    assert sum_of_diameters([L("a", None)]) is None


def test_exactly_30_percent_decrease_is_pr_and_just_under_is_sd():
    base = [L("a", 60.0), L("b", 40.0)]
    assert cat(base, [L("a", 42.0), L("b", 28.0)]) == ["PR"]          # 70 / 100: exactly -30 %
    assert cat(base, [L("a", 42.1), L("b", 28.0)]) == ["SD"]          # -29.9 %


def test_pd_needs_20_percent_and_5_mm_over_the_nadir():
    assert cat([L("a", 25.0)], [L("a", 30.0)]) == ["PD"]              # +20 % and +5 mm exactly
    assert cat([L("a", 25.0)], [L("a", 29.9)]) == ["SD"]              # +19.6 %
    assert cat([L("a", 20.0)], [L("a", 24.0)]) == ["SD"]              # +20 % but only +4 mm
    assert cat([L("a", 100.0)], [L("a", 119.0)]) == ["SD"]            # +19 mm but +19 %


def test_nadir_rule_progression_after_a_response():
    # baseline 100, then 50 (PR), then 60: -40 % from baseline but +20 % and +10 mm over the nadir 50
    points = categorise([L("a", 100.0)], [("t1", [L("a", 50.0)]), ("t2", [L("a", 60.0)]), ("t3", [L("a", 58.0)])])
    assert [t.category for t in points] == ["PR", "PD", "PR"]
    assert points[1].nadir_mm == 50.0 and points[1].change_from_nadir_mm == 10.0
    assert points[2].nadir_mm == 50.0  # the nadir is the smallest sum before, not the PD sum


def test_complete_response_with_small_nodes_and_not_with_a_10mm_node():
    base = [L("a", 30.0), L("n", 20.0, 18.0, node=True)]
    assert cat(base, [L("a", 0.0, 0.0), L("n", 12.0, 9.9)]) == ["CR"]
    assert cat(base, [L("a", 0.0, 0.0), L("n", 12.0, 10.0)]) == ["PR"]  # sum 10 vs 48: -79 %, node not < 10 mm


def test_missing_measurement_is_ne_and_new_lesion_is_pd():
    base = [L("a", 30.0), L("b", 20.0)]
    assert cat(base, [L("a", 20.0)]) == ["NE"]
    assert cat(base, [L("a", 10.0), L("b", 5.0)], new={"t1": True}) == ["PD"]
    with pytest.raises(ValueError, match="not a baseline target lesion"):
        cat(base, [L("a", 1.0), L("b", 1.0), L("c", 3.0)])


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["lesion_id", "recist_long_mm", "recist_short_mm", "long_mm", "short_mm",
                                          "lymph_node"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_cli_reports_marks_and_masks_side_by_side(tmp_path):
    base = _write(tmp_path / "base.csv", [
        {"lesion_id": "1", "recist_long_mm": 50, "recist_short_mm": 30, "long_mm": 52, "short_mm": 31, "lymph_node": 0},
        {"lesion_id": "2", "recist_long_mm": 20, "recist_short_mm": 16, "long_mm": 22, "short_mm": 15, "lymph_node": 1}])
    fu = _write(tmp_path / "fu.csv", [
        {"lesion_id": "2", "recist_long_mm": 18, "recist_short_mm": 12, "long_mm": 21, "short_mm": 14, "lymph_node": 1},
        {"lesion_id": "1", "recist_long_mm": 35, "recist_short_mm": 20, "long_mm": 45, "short_mm": 28, "lymph_node": 0}])
    # marks: 66 -> 47 (-28.8 %, SD); masks: 67 -> 59 (SD).  Change marks lesion 1 to 34: 46 / 66 = -30.3 % PR
    assert main(["response", str(base), str(fu), "-o", str(tmp_path / "r.csv")]) == 0
    out = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [(r["source"], r["category"], r["sum_mm"]) for r in out] == [("marks", "SD", "47.00"), ("masks", "SD", "59.00")]
    _write(fu, [{"lesion_id": "1", "recist_long_mm": 34, "recist_short_mm": 20, "long_mm": 45, "short_mm": 28},
                {"lesion_id": "2", "recist_long_mm": 18, "recist_short_mm": 12, "long_mm": 21, "short_mm": 14}])
    table = response_table([base, fu])
    assert [t.category for t in table["marks"]] == ["PR"] and [t.category for t in table["masks"]] == ["SD"]


def test_bad_files_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("lesion_id,recist_long_mm,recist_short_mm\n1,12,x\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2"):
        response_table([bad, bad], sources=["marks"])
    with pytest.raises(ValueError, match="missing columns"):
        response_table([bad, bad], sources=["masks"])
    assert main(["response", str(bad), str(tmp_path / "none.csv"), "--source", "marks"]) == 2
