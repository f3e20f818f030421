"""Tests of the LiTS protocol metrics (``nnunet_ulseg.evaluation.lits``, E²Net Sec. 3 "Evaluation Criteria").

Three hand-made cases whose Dice per case, global Dice and tumour burdens are computed by
hand below, under each rule for a case without reference tumour; then the folder
evaluation (matching by case number, grid check, missing predictions, label values) and
the ``ulseg evaluate-lits`` command.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ulseg.evaluation.lits import (
    METRICS_CSV,
    SUMMARY_JSON,
    Overlap,
    burden,
    case_dice,
    evaluate_lits_folder,
    global_dice,
    match_cases,
    overlap,
    rmse,
    score_case,
    summarise,
)

SPACING = (0.5, 0.5, 2.0)  # 0.5 mm³ per voxel

# case A: liver ref {00,01,02,03,10,11}, pred {00,01,02,10,11,12}: TP 5, FP 1, FN 1 -> 10/12
#         tumour ref {02,03}, pred {01,02}: TP 1, FP 1, FN 1 -> 2/4; burdens 2/6 and 2/6
REF_A = np.array([[[1, 1, 2, 2, 0], [1, 1, 0, 0, 0]]], np.uint8)
PRED_A = np.array([[[1, 2, 2, 0, 0], [1, 1, 1, 0, 0]]], np.uint8)
# case B: liver exact (4 voxels); no reference tumour, one predicted tumour voxel; burdens 0 and 1/4
REF_B = np.array([[[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]], np.uint8)
PRED_B = np.array([[[1, 1, 0, 0, 0], [1, 2, 0, 0, 0]]], np.uint8)
# case C: liver exact (2 voxels), no tumour anywhere
REF_C = np.array([[[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]], np.uint8)
PRED_C = REF_C.copy()
CASES = (("A", PRED_A, REF_A), ("B", PRED_B, REF_B), ("C", PRED_C, REF_C))


def _scores(empty="one"):
    return [score_case(p, r, SPACING, case=c, empty=empty) for c, p, r in CASES]


def test_case_values_by_hand():
    a, b, c = _scores()
    assert a.liver == Overlap(5, 1, 1) and a.tumour == Overlap(1, 1, 1)
    assert a.liver_dice == pytest.approx(10 / 12) and a.tumour_dice == pytest.approx(0.5)
    assert a.burden_ref == pytest.approx(2 / 6) and a.burden_pred == pytest.approx(2 / 6)
    assert a.liver_ref_ml == pytest.approx(6 * 0.5 / 1000) and a.tumour_pred_ml == pytest.approx(2 * 0.5 / 1000)
    assert b.liver_dice == 1.0 and b.tumour_dice == 0.0 and b.tumour_free_reference
    assert b.burden_ref == 0.0 and b.burden_pred == pytest.approx(0.25)
    assert c.liver_dice == 1.0 and c.tumour_dice == 1.0 and c.tumour_free_reference


@pytest.mark.parametrize("empty,per_case", [("one", (0.5 + 0 + 1) / 3), ("zero", 0.5 / 3), ("skip", 0.5)])
def test_summary_by_hand(empty, per_case):
    s = summarise(_scores(empty), empty)
    assert s["n_cases"] == 3 and s["tumour"]["cases_without_reference_tumour"] == 2
    assert s["liver"]["dice_per_case"] == pytest.approx((10 / 12 + 1 + 1) / 3)
    assert s["liver"]["dice_global"] == pytest.approx(2 * 11 / (2 * 11 + 1 + 1))  # pooled: TP 11, FP 1, FN 1
    assert s["tumour"]["dice_per_case"] == pytest.approx(per_case)
    assert s["tumour"]["dice_global"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # the rule never changes it
    assert s["tumour_burden_rmse"] == pytest.approx(math.sqrt((0 + 0.25 ** 2 + 0) / 3))


def test_building_blocks():
    assert overlap(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == Overlap(1, 1, 1)
    with pytest.raises(ValueError, match="shape"):
        overlap(np.zeros(3, bool), np.zeros(4, bool))
    assert case_dice(Overlap(0, 0, 0), "one") == 1.0 and case_dice(Overlap(0, 3, 0), "one") == 0.0
    assert case_dice(Overlap(0, 0, 0), "zero") == 0.0 and math.isnan(case_dice(Overlap(0, 0, 0), "skip"))
    assert case_dice(Overlap(0, 0, 5), "one") == 0.0  # a missed tumour is 0 whatever the rule
    with pytest.raises(ValueError, match="empty"):
        case_dice(Overlap(1, 0, 0), "nan")
    assert math.isnan(global_dice([Overlap(0, 0, 0)]))
    assert burden(0, 0) == 0.0 and burden(1, 4) == 0.25
    assert rmse([0.1, 0.3], [0.1, 0.0]) == pytest.approx(math.sqrt(0.09 / 2)) and math.isnan(rmse([], []))


def test_dice_is_symmetric_and_shift_invariant():
    rng = np.random.default_rng(0)
    pred, ref = rng.integers(0, 3, (4, 6, 6)).astype(np.uint8), rng.integers(0, 3, (4, 6, 6)).astype(np.uint8)
    s1, s2 = score_case(pred, ref), score_case(ref, pred)
    assert s1.liver_dice == pytest.approx(s2.liver_dice) and s1.tumour_dice == pytest.approx(s2.tumour_dice)
    s3 = score_case(np.roll(pred, 2, axis=2), np.roll(ref, 2, axis=2))
    assert s3.liver_dice == pytest.approx(s1.liver_dice)


def _write(path, array, spacing=SPACING, origin=(-10.0, 5.0, 100.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for n, (_, p, r) in enumerate(CASES):
        _write(ref / f"segmentation-{n}.nii", r)
        _write(pred / f"LiTS_{n:04d}.mha", p)  # matched to the reference by its case number
    return pred, ref


def test_folder_matches_by_number_and_writes(folders, tmp_path):
    pred, ref = folders
    pairs, unmatched = match_cases(pred, ref)
    assert [(c, p.name) for c, p, _ in pairs] == [(f"segmentation-{n}", f"LiTS_{n:04d}.mha") for n in range(3)]
    assert unmatched == []
    scores, summary = evaluate_lits_folder(pred, ref, tmp_path / "out", progress=False)
    assert summary["liver"]["dice_global"] == pytest.approx(22 / 24)
    assert summary["tumour"]["dice_per_case"] == pytest.approx(0.5)
    with open(tmp_path / "out" / METRICS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["tumour_dice"]) for r in rows] == pytest.approx([0.5, 0.0, 1.0])
    saved = json.loads((tmp_path / "out" / SUMMARY_JSON).read_text())
    assert saved["tumour_burden_rmse"] == pytest.approx(summary["tumour_burden_rmse"])
    evaluate_lits_folder(pred, ref, tmp_path / "out2", empty="skip", progress=False)
    assert json.loads((tmp_path / "out2" / SUMMARY_JSON).read_text())["empty_reference_rule"] == "skip"


def test_folder_errors_name_the_file(folders, tmp_path):
    pred, ref = folders
    _write(pred / "LiTS_0001.mha", PRED_B, spacing=(0.5, 0.5, 3.0))
    with pytest.raises(ValueError, match="LiTS_0001.mha.*spacing"):
        evaluate_lits_folder(pred, ref, tmp_path / "o", progress=False)
    _write(pred / "LiTS_0001.mha", PRED_B, origin=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="LiTS_0001.mha.*origin"):
        evaluate_lits_folder(pred, ref, tmp_path / "o", progress=False)
    _write(pred / "LiTS_0001.mha", PRED_B * 2)  # a 4 in it
    with pytest.raises(ValueError, match="LiTS_0001.mha: label values"):
        evaluate_lits_folder(pred, ref, tmp_path / "o", progress=False)
    (pred / "LiTS_0001.mha").unlink()
    with pytest.raises(FileNotFoundError, match="segmentation-1.nii"):
        evaluate_lits_folder(pred, ref, tmp_path / "o", progress=False)
    scores, summary = evaluate_lits_folder(pred, ref, tmp_path / "o", allow_missing=True, progress=False)
    assert summary["missing_predictions"] == 1
    b = scores[1]
    assert b.liver_dice == 0.0 and b.tumour_dice == 1.0 and b.liver == Overlap(0, 0, 4)  # scored as empty


def test_command(folders, tmp_path, capsys):
    from nnunet_ulseg.cli import main

    pred, ref = folders
    assert main(["evaluate-lits", "-i", str(pred), "-r", str(ref), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "91.67" in out and "tumour burden RMSE: 0.1443" in out
    assert (tmp_path / "o" / METRICS_CSV).is_file()
    assert main(["evaluate-lits", "-i", str(tmp_path / "nothing"), "-r", str(ref), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
