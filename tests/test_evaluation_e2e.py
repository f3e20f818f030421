"""End to end: generated sample -> conversion -> reference crops -> ``evaluate`` / ``measure`` (library and CLI).

The pseudo-label folder (RECIST ellipses) is scored against crop-geometry true masks, next
to a "broken" folder with one empty prediction, one missing file and one prediction with
an extra stray blob, which exercises every edge case of the report.
"""
import argparse
import csv
import json
import math

import numpy as np
import pytest

from nnunet_ulseg.conversion.io import write_mha
from nnunet_ulseg.conversion.sidecar import LesionRow, paste_back, read_sidecar, write_sidecar
from nnunet_ulseg.evaluation.cli import add_evaluate_parser, add_measure_parser
from nnunet_ulseg.evaluation.evaluate import (
    METRICS_COLUMNS,
    crop_label,
    evaluate_folders,
    format_cell,
    jsonable,
    missing_predictions_error,
    resolve_names,
    select_rows,
    slice_window,
    to_slice,
)
from nnunet_ulseg.evaluation.measure import MEASURE_COLUMNS, measure_folder, recist_ellipse_area
from nnunet_ulseg.evaluation.metrics import lesion_metrics
from nnunet_ulseg.evaluation.overlap import Overlap
from nnunet_ulseg.evaluation.references import slice_mask_to_crop, write_reference_crops
from nnunet_ulseg.recist import Recist, ellipse_params
from nnunet_ulseg.workflow.slice_scores import TrueMasks, read_crop_mask


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    root = tmp_path_factory.mktemp("evaluation")
    sample = make_sample(root / "sample", n_lesions=12, seed=0, progress=False)
    raw = root / "raw" / "Dataset990_EvalTest"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("nnUNet_preprocessed", raising=False)
        convert_deeplesion(sample, raw, num_processes=1, progress=False)
    sidecar = raw / "lesions.csv"
    refs = write_reference_crops(sample, sidecar, raw / "referencesTs")
    rows = [r for r in read_sidecar(sidecar) if r.split == "test"]
    assert len(rows) >= 3
    # broken predictions: first case empty, second missing, third with a stray 3x3 blob in a corner
    broken = root / "broken"
    broken.mkdir()
    for i, r in enumerate(rows):
        crop = read_crop_mask(raw / "pseudolabelsTs" / f"{r.case}.mha").astype(np.uint8)
        if i == 0:
            crop[:] = 0
        elif i == 1:
            continue
        elif i == 2:
            crop[1:4, 1:4] = 1
        write_mha(str(broken / f"{r.case}.mha"), crop, (1.0, 1.0))
    return {"root": root, "sample": sample, "raw": raw, "sidecar": sidecar, "refs": refs, "rows": rows,
            "broken": broken}


def row_fixture(**kw) -> LesionRow:
    base = dict(case="c", split="test", dl_row=2, File_name="f.png", patient=1, study=1, series=1, key_slice=1,
                crop_x0=9.5, crop_y0=19.5, crop_side=8.0, crop_size=8, scale=1.0, spacing_x=0.5, spacing_y=0.5,
                spacing_z=5.0, recist_slice=(0.0,) * 8, recist_crop=(0.0,) * 8, long_mm=5.0, short_mm=3.0,
                lesion_type=4, possibly_noisy=0, window_min=-175.0, window_max=275.0, image_width=40,
                image_height=40, context_slices=(1,))
    base.update(kw)
    return LesionRow(**base)


def test_slice_mask_to_crop_and_back_by_hand(tmp_path):
    row = row_fixture()  # scale 1, edge origin (9.5, 19.5): crop pixel (0, 0) is slice pixel (20, 10)
    mask = np.zeros((40, 40), np.uint8)
    mask[22:25, 12:16] = 1
    crop = slice_mask_to_crop(mask, row)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:5, 2:6] = 1
    np.testing.assert_array_equal(crop, expected)
    back = to_slice(crop.astype(bool), row)
    np.testing.assert_array_equal(back, mask.astype(bool))
    write_mha(str(tmp_path / "c.mha"), np.where(crop > 0, 1, 2).astype(np.uint8), (1.0, 1.0))
    np.testing.assert_array_equal(crop_label(tmp_path / "c.mha", row), crop.astype(bool))  # 2 = background
    with pytest.raises(ValueError, match="c.mha.*crop size 9"):
        crop_label(tmp_path / "c.mha", row_fixture(crop_size=9, crop_side=9.0))


def test_slice_window_covers_the_crop_box_and_clips_to_the_image():
    rows, cols = slice_window(row_fixture())  # box x in [9.5, 17.5), y in [19.5, 27.5), margin 2
    assert (cols.start, cols.stop, rows.start, rows.stop) == (7, 20, 17, 30)
    rows, cols = slice_window(row_fixture(crop_x0=-2.5, crop_y0=35.5))  # past the left and bottom edges
    assert (cols.start, cols.stop, rows.start, rows.stop) == (0, 8, 33, 40)


def test_prediction_filling_a_crop_that_leaves_the_image(tmp_path):
    # crop box x, y in [-2.5, 5.5) at scale 1: crop pixel (u, v) is slice pixel (u - 2, v - 2), so a full
    # crop pastes back as the 6x6 block [0:6, 0:6] at the image corner (touching the image border)
    row = row_fixture(case="edge", crop_x0=-2.5, crop_y0=-2.5, image_width=20, image_height=20)
    write_sidecar(tmp_path / "lesions.csv", [row])
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
    ref = np.zeros((8, 8), np.uint8)
    ref[4:6, 4:6] = 1  # slice pixels [2:4, 2:4]
    write_mha(str(tmp_path / "ref" / "edge.mha"), ref, (1.0, 1.0))
    write_mha(str(tmp_path / "pred" / "edge.mha"), np.ones((8, 8), np.uint8), (1.0, 1.0))
    r = evaluate_folders([tmp_path / "pred"], tmp_path / "ref", tmp_path / "lesions.csv", tmp_path / "out")
    m = r.records[0]
    assert (m["tp"], m["fp"], m["fn"]) == (4, 32, 0)
    assert m["dice"] == pytest.approx(8 / 40)
    # farthest prediction surface pixels (corners of the block) are 2 px + 2 px from the reference:
    # 2 * sqrt(2) px at 0.5 mm
    assert m["hd_mm"] == pytest.approx(math.sqrt(2))
    assert m["pred_area_mm2"] == pytest.approx(36 * 0.25) and m["pred_components"] == 1
    assert r.files["gallery"].is_file()


def test_small_helpers():
    rows = [row_fixture(case="a", split="test"), row_fixture(case="b", split="train")]
    assert [r.case for r in select_rows(rows, "train")] == ["b"]
    assert len(select_rows(rows, "all")) == len(select_rows(rows, None)) == 2
    assert resolve_names(["x/pred", "y/other"]) == ["pred", "other"]
    assert resolve_names(["x/pred", "y/pred"]) == ["x/pred", "y/pred"]
    assert resolve_names(["x/pred", "y/pred"], ["A", "B"]) == ["A", "B"]
    with pytest.raises(ValueError, match="2 prediction folders"):
        resolve_names(["x/pred", "y/pred"], ["A"])
    with pytest.raises(ValueError, match="not unique"):
        resolve_names(["a/x/pred", "b/x/pred"])
    assert jsonable({"a": float("nan"), "b": [np.float32(1.5), np.int64(2)], "c": np.bool_(True)}) == \
        {"a": None, "b": [1.5, 2], "c": True}
    assert [format_cell(v) for v in (True, 0.1, float("nan"), 3, "x")] == ["1", "0.1", "nan", "3", "x"]
    err = missing_predictions_error("preds", [f"c{i}" for i in range(7)], 10)
    assert isinstance(err, FileNotFoundError)
    assert "preds: no prediction for case c0, c1, c2, c3, c4 and 2 more (7 of 10 cases missing" in str(err)


def test_reference_crops_are_the_true_masks(data):
    rows, truth = data["rows"], TrueMasks(data["sample"])
    assert [p.name for p in data["refs"]] == [f"{r.case}.mha" for r in rows]
    for r, path in zip(rows, data["refs"]):
        crop = read_crop_mask(path)
        assert crop.shape == (r.crop_size, r.crop_size) and set(np.unique(crop)) <= {0, 1}
        true = truth.mask(r.dl_row, r.File_name)
        assert Overlap.of(paste_back(crop, r), true).dice > 0.9


def test_missing_prediction_is_an_error_naming_the_case(data, tmp_path):
    missing_case = data["rows"][1].case
    with pytest.raises(FileNotFoundError, match=missing_case):
        evaluate_folders([data["broken"]], data["raw"] / "referencesTs", data["sidecar"], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no reference"):
        evaluate_folders([data["broken"]], tmp_path, data["sidecar"], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate_folders([tmp_path / "nope"], data["raw"] / "referencesTs", data["sidecar"], tmp_path / "o")
    with pytest.raises(ValueError, match="no cases of split 'holdout'"):
        evaluate_folders([data["broken"]], data["raw"] / "referencesTs", data["sidecar"], tmp_path / "o",
                         split="holdout")


@pytest.fixture(scope="module")
def evaluated(data):
    out = data["root"] / "eval"
    result = evaluate_folders([data["raw"] / "pseudolabelsTs", data["broken"]], data["raw"] / "referencesTs",
                              data["sidecar"], out, names=["ellipse", "broken"], allow_missing=True)
    return result


def test_metrics_csv_rows_and_values(data, evaluated):
    rows = data["rows"]
    with open(evaluated.files["metrics"], newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == METRICS_COLUMNS
    assert len(table) == 2 * len(rows)
    by = {(t["pred_name"], t["case"]): t for t in table}
    # each ellipse row equals the metrics recomputed here from the two pasted-back crops
    for r in rows:
        t = by["ellipse", r.case]
        pred = paste_back(read_crop_mask(data["raw"] / "pseudolabelsTs" / f"{r.case}.mha") == 1, r)
        ref = paste_back(read_crop_mask(data["raw"] / "referencesTs" / f"{r.case}.mha") == 1, r)
        m = lesion_metrics(pred, ref, (r.spacing_x, r.spacing_y), r.long_mm, r.short_mm)
        assert t["status"] == "ok" and float(t["dice"]) == m.dice
        assert float(t["hd95_mm"]) == pytest.approx(m.hd95_mm, rel=1e-12)  # same up to float rounding
        assert float(t["pred_long_err_recist"]) == pytest.approx(m.pred_long_err_recist)
        assert 0.5 < m.dice <= 1.0
        assert m.pred_long_err_recist < 0.1  # the ellipse is drawn from the RECIST mark
        assert t["lesion_type_name"] != "unknown"  # test lesions have their type
    empty, missing, blob = (by["broken", r.case] for r in rows[:3])
    assert empty["status"] == "ok" and empty["pred_empty"] == "1" and float(empty["dice"]) == 0.0
    assert empty["avg_hd_mm"] == "nan" and empty["pred_long_mm"] == "nan"
    assert missing["status"] == "missing" and missing["dice"] == "nan"
    assert blob["pred_components"] == "2"
    assert float(blob["pred_long_mm"]) == pytest.approx(float(by["ellipse", rows[2].case]["pred_long_mm"]))


def test_summary_json_counts_and_printed_table(data, evaluated, capsys):
    s = json.loads(evaluated.files["summary"].read_text())
    n = len(data["rows"])
    assert s["n_evaluated_cases"] == n and s["n_without_reference"] == 0
    ell, br = s["per_prediction"]["ellipse"], s["per_prediction"]["broken"]
    assert ell["n_lesions"] == n and ell["n_missing"] == 0 and ell["n_empty_pred"] == 0
    assert br["n_cases"] == n and br["n_missing"] == 1 and br["n_lesions"] == n - 1
    assert br["n_empty_pred"] == 1 and br["n_distance_nan"] == 1 and br["n_multi_component_pred"] == 1
    assert br["metrics"]["precision"]["n_nan"] == 1
    assert br["metrics"]["dice"]["worst"] == 0.0
    assert s["missing_predictions"]["broken"] == [data["rows"][1].case]
    with open(evaluated.files["metrics"], newline="") as f:
        dice = [float(t["dice"]) for t in csv.DictReader(f) if t["pred_name"] == "ellipse"]
    assert ell["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    assert ell["dice_at_least"]["0.8"] == pytest.approx(np.mean(np.array(dice) >= 0.8))
    assert sum(t["n_lesions"] for t in ell["by_type"].values()) == n
    assert "hd95_mm" in s["definitions"]
    assert evaluated.files["table"].read_text().strip() == evaluated.table.strip()
    print(evaluated.table)
    assert "ellipse" in capsys.readouterr().out


def test_pngs_exist_and_are_not_blank(evaluated):
    from matplotlib.image import imread

    images = {key: imread(str(evaluated.files[key]))[..., :3] for key in ("dice_cumulative", "gallery")}
    assert images["dice_cumulative"].shape[:2] == (450, 600)
    assert images["gallery"].shape[:2] == (650, 900)  # 2 folders x (best, median, worst)
    for img in images.values():
        rgb = np.round(img * 255).astype(np.int64)
        assert np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]).size > 10  # not blank


def test_gallery_without_ct_and_split_all(data, tmp_path):
    r = evaluate_folders([data["raw"] / "pseudolabelsTs"], data["raw"] / "referencesTs", data["sidecar"],
                         tmp_path / "o", split="all", images_dir=tmp_path / "no_images")
    assert r.summary["n_without_reference"] == len(read_sidecar(data["sidecar"])) - len(data["rows"])
    assert "have no reference" in r.table
    assert r.files["gallery"].is_file()


def cli(argv):
    parser = argparse.ArgumentParser(prog="ulseg")
    sub = parser.add_subparsers(dest="command", required=True)
    add_evaluate_parser(sub)
    add_measure_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_cli(data, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli(["evaluate", "--pred", str(data["raw"] / "pseudolabelsTs"), str(data["broken"]),
              "--ref", str(data["raw"] / "referencesTs"), "--sidecar", str(data["sidecar"]), "--out", str(out),
              "--allow-missing", "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0 and "pseudolabelsTs" in text and "broken: missing 1" in text
    assert (out / "metrics.csv").is_file() and not (out / "gallery.png").exists()
    with pytest.raises(FileNotFoundError, match=data["rows"][1].case):
        cli(["evaluate", "--pred", str(data["broken"]), "--ref", str(data["raw"] / "referencesTs"),
             "--sidecar", str(data["sidecar"]), "--out", str(out)])


def test_measure_library_and_cli(data, tmp_path, capsys):
    rows = data["rows"]
    assert cli(["measure", "--pred", str(data["raw"] / "pseudolabelsTs"), "--sidecar", str(data["sidecar"]),
                "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "m" / "measurements.csv"  # -o/--out is a folder; the table goes inside
    assert f"measured {len(rows)} lesion(s)" in capsys.readouterr().out
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == MEASURE_COLUMNS and [t["case"] for t in table] == [r.case for r in rows]
    for t, r in zip(table, rows):
        assert float(t["recist_ellipse_area_mm2"]) == pytest.approx(math.pi / 4 * r.long_mm * r.short_mm)
        # the pseudo label is the RECIST ellipse: its axes and area agree with the mark
        assert float(t["long_err_recist"]) < 0.1 and float(t["short_err_recist"]) < 0.15
        assert float(t["area_ratio"]) == pytest.approx(1.0, abs=0.2)
        assert t["components"] == "1" and len(t["long_axis_px"].split()) == 4
        x1, y1, x2, y2 = map(float, t["long_axis_px"].split())
        assert math.hypot((x2 - x1) * r.spacing_x, (y2 - y1) * r.spacing_y) == pytest.approx(float(t["long_mm"]))
        # endpoints are in key-slice pixels: the long axis of the ellipse is centred on the ellipse's centre
        e = ellipse_params(Recist.from_points(r.recist_slice_points))
        assert math.hypot((x1 + x2) / 2 - e.cx, (y1 + y2) / 2 - e.cy) < 1.5
    with pytest.raises(FileNotFoundError, match=rows[1].case):
        measure_folder(data["broken"], data["sidecar"])
    m = {t["case"]: t for t in measure_folder(data["broken"], data["sidecar"], allow_missing=True)}
    assert m[rows[0].case]["components"] == 0 and math.isnan(m[rows[0].case]["long_mm"])
    assert m[rows[0].case]["area_mm2"] == 0.0
    assert m[rows[1].case]["status"] == "missing"
    assert m[rows[2].case]["components"] == 2
    assert m[rows[2].case]["total_area_mm2"] > m[rows[2].case]["area_mm2"]
    assert recist_ellipse_area(4.0, 2.0) == pytest.approx(2 * math.pi)



def test_evaluate_with_postprocessing_modes(data, tmp_path, capsys):
    """--postprocess: the stray blob goes, the empty prediction becomes the RECIST ellipse, per mode in one table."""
    rows = data["rows"]
    r = evaluate_folders([data["broken"]], data["raw"] / "referencesTs", data["sidecar"], tmp_path / "o",
                         allow_missing=True, postprocess=["none", "mark", "mark-ellipse"], plots=False)
    names = ["broken [none]", "broken [mark]", "broken [mark-ellipse]"]
    assert list(r.summary["per_prediction"]) == names
    by = {(t["pred_name"], t["case"]): t for t in r.records}
    empty, missing, blob = rows[:3]
    ellipse = {t["case"]: t for t in evaluate_folders([data["raw"] / "pseudolabelsTs"], data["raw"] / "referencesTs",
                                                      data["sidecar"], tmp_path / "e", plots=False).records}
    assert by["broken [none]", empty.case]["dice"] == 0.0
    assert by["broken [mark]", empty.case]["postprocess_status"] == "fallback_ellipse"
    assert by["broken [mark]", empty.case]["dice"] == ellipse[empty.case]["dice"] > 0.5
    assert by["broken [none]", blob.case]["pred_components"] == 2
    assert by["broken [mark]", blob.case]["pred_components"] == 1
    assert by["broken [mark]", blob.case]["dice"] > by["broken [none]", blob.case]["dice"]
    assert by["broken [mark]", blob.case]["postprocess_status"] == "marked"
    assert by["broken [mark]", missing.case]["status"] == "missing"
    pp = r.summary["postprocess"]
    assert pp["broken [mark]"]["mode"] == "mark" and pp["broken [mark]"]["fallback_cases"] == [empty.case]
    assert pp["broken [none]"]["status_counts"] == {"unchanged": len(rows) - 1}
    assert r.summary["settings"]["postprocess"] == ["none", "mark", "mark-ellipse"]
    assert "broken [mark-ellipse]: mark-ellipse: as 'mark', after clipping" in r.table
    with open(tmp_path / "o" / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {t["postprocess"] for t in table} == {"none", "mark", "mark-ellipse"}
    # one mode keeps the folder names; the CLI says which mode was used
    rc = cli(["evaluate", "--pred", str(data["raw"] / "pseudolabelsTs"), "--ref", str(data["raw"] / "referencesTs"),
              "--sidecar", str(data["sidecar"]), "--out", str(tmp_path / "cli"), "--no-plots", "--postprocess", "mark"])
    text = capsys.readouterr().out
    assert rc == 0 and "pseudolabelsTs: mark: keep the 8-connected components" in text
    s = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert list(s["per_prediction"]) == ["pseudolabelsTs"] and s["settings"]["postprocess"] == ["mark"]
    assert "post-processing: none" in evaluate_folders([data["raw"] / "pseudolabelsTs"], data["raw"] / "referencesTs",
                                                       data["sidecar"], tmp_path / "n", plots=False).table
    with pytest.raises(ValueError, match="repeated"):
        evaluate_folders([data["broken"]], data["raw"] / "referencesTs", data["sidecar"], tmp_path / "x",
                         postprocess=["mark", "mark"])
