"""Statistics per prediction folder and lesion type, and the printed table (AHRNet Table 1 / WSSS Table 4)."""
import math

import pytest

from nnunet_ulseg.evaluation.aggregate import aggregate, describe, dice_shares, format_table, group_summary
from nnunet_ulseg.evaluation.metrics import SUMMARY_METRICS

NAN = float("nan")


def rec(name, dice, type_name="liver", status="ok", hd=1.0, long_err=0.1, pred_empty=False, components=1):
    r = {m: 0.5 for m in SUMMARY_METRICS}
    r.update(pred_name=name, status=status, lesion_type_name=type_name, dice=dice, avg_hd_mm=hd, hd95_mm=hd,
             hd_mm=hd, long_err=long_err, short_err=long_err, pred_empty=pred_empty, ref_empty=False,
             pred_components=components)
    return r


def test_describe_and_worst_direction():
    d = describe([1.0, 3.0, NAN], True)
    assert d == {"n": 2, "n_nan": 1, "mean": 2.0, "std": 1.0, "median": 2.0, "worst": 1.0}
    assert describe([1.0, 3.0], False)["worst"] == 3.0
    assert math.isnan(describe([1.0, 3.0], None)["worst"])
    e = describe([NAN], True)
    assert e["n"] == 0 and e["n_nan"] == 1 and math.isnan(e["mean"]) and math.isnan(e["worst"])


def test_dice_shares_are_inclusive():
    assert dice_shares([0.79, 0.8, 0.85, 0.9]) == {"0.8": 0.75, "0.85": 0.5}
    assert math.isnan(dice_shares([])["0.8"])


def test_group_summary_counts():
    rows = [rec("a", 0.0, hd=NAN, long_err=NAN, pred_empty=True, components=0), rec("a", 0.9, components=3)]
    s = group_summary(rows)
    assert s["n_lesions"] == 2 and s["n_empty_pred"] == 1 and s["n_distance_nan"] == 1 and s["n_axes_nan"] == 1
    assert s["n_multi_component_pred"] == 1
    assert s["metrics"]["dice"]["mean"] == pytest.approx(0.45) and s["metrics"]["dice"]["worst"] == 0.0
    assert s["metrics"]["avg_hd_mm"]["n"] == 1 and s["metrics"]["avg_hd_mm"]["n_nan"] == 1
    assert s["dice_at_least"] == {"0.8": 0.5, "0.85": 0.5}


def test_aggregate_per_folder_and_type_excludes_missing():
    records = [
        rec("m1", 0.9, "lung", hd=2.0), rec("m1", 0.7, "bone", hd=4.0), rec("m1", 0.8, "unknown"),
        rec("m2", 0.95, "lung"), rec("m2", NAN, "bone", status="missing"), rec("m2", 0.6, "unknown"),
    ]
    s = aggregate(records)
    assert list(s) == ["m1", "m2"]
    m1, m2 = s["m1"], s["m2"]
    assert m1["n_cases"] == 3 and m1["n_missing"] == 0 and m1["n_lesions"] == 3
    assert m1["metrics"]["dice"]["mean"] == pytest.approx(0.8)
    assert m1["metrics"]["dice"]["median"] == pytest.approx(0.8)
    assert m1["metrics"]["avg_hd_mm"]["worst"] == 4.0  # distances: worst is the largest
    assert m1["dice_at_least"] == {"0.8": pytest.approx(2 / 3), "0.85": pytest.approx(1 / 3)}
    assert list(m1["by_type"]) == ["bone", "lung", "unknown"]  # WSSS Table 4 order, unknown last
    assert m1["by_type"]["bone"]["metrics"]["dice"]["mean"] == 0.7
    assert m2["n_cases"] == 3 and m2["n_missing"] == 1 and m2["n_lesions"] == 2
    assert "bone" not in m2["by_type"]
    assert aggregate(records, names=["m2", "m1"]).keys() == {"m2", "m1"}
    assert list(aggregate(records, names=["m2", "m1"])) == ["m2", "m1"]


def test_format_table_layouts():
    records = [rec("ellipse", 0.9, "lung"), rec("ellipse", 0.7, "bone"), rec("model", 0.95, "lung"),
               rec("model", NAN, "bone", status="missing")]
    text = format_table(aggregate(records))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["prediction", "n", "Precision", "%"]
    row = next(line for line in lines if line.startswith("ellipse") and "%" in line)
    assert "80.0±10.0" in row  # Dice in % as AHRNet Table 1
    assert "50.0%" in row  # share with Dice >= 0.8
    head2 = next(line for line in lines if line.startswith("Dice by type"))
    assert head2.split()[3:] == ["Bone", "Abdomen", "Mediastinum", "Liver", "Lung", "Kidney", "Soft", "Tissue",
                                 "Pelvis", "Total"]
    assert "Unknown" not in head2  # only shown when some lesion has no type
    model_row = next(line for line in lines if line.startswith("model") and "±" in line and "%" not in line)
    assert "0.95±0.00 (1)" in model_row and " - " in model_row
    assert "model: missing 1" in text
    assert "Unknown" in format_table(aggregate([rec("x", 0.9, "unknown")]))


def test_table_shows_both_hd95s_and_avd_with_their_definitions():
    r = rec("m", 0.9, "lung")
    r.update(hd95_mm=1.0, hd95_max_directed_mm=1.5, avd_mm=0.25)
    text = format_table(aggregate([r]))
    lines = text.splitlines()
    head = lines[0]
    assert head.index("HD95 mm") < head.index("HD95max mm") < head.index("AVD mm")
    row = next(line for line in lines if line.startswith("m "))
    assert "1.00±0.00" in row and "1.50±0.00" in row and "0.25±0.00" in row
    assert "HD95max: max of the two directed 95th percentiles" in text and "AVD: Taha & Hanbury" in text
    assert "ULS23 axes between boundary pixel centres" in text


def test_records_without_the_newer_metrics_count_them_as_nan():
    r = rec("old", 0.9)
    for name in ("hd95_max_directed_mm", "avd_mm", "avd_mean_mm", "long_err_edge", "short_err_edge"):
        del r[name]
    s = aggregate([r])["old"]
    assert s["metrics"]["avd_mm"]["n"] == 0 and s["metrics"]["avd_mm"]["n_nan"] == 1
    assert s["metrics"]["dice"]["mean"] == 0.9
