"""``ulseg refine --postprocess``: predictions cleaned with the RECIST mark before the round update and the
test scores."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from nnunet_ulseg.conversion.sidecar import read_sidecar, write_sidecar
from nnunet_ulseg.refine import rounds as rounds_module
from nnunet_ulseg.refine.manifest import ManifestConflict
from nnunet_ulseg.refine.rounds import RefineConfig, RefineError, refine, work_dir_name
from nnunet_ulseg.workflow.nnunet import NNUNetPaths

from refine_support import SIZE, FakeBackend, disk, read_image, write_image, write_tiny_dataset

TRAINER = "nnUNetTrainerFake"
BASE = "Dataset501_Tiny"


class BlobBackend(FakeBackend):
    """The fake model of refine_support with a one-pixel hole at [8, 9] (inside every ellipse and every
    predicted block) and a stray 2 x 2 blob in the top-left corner of every prediction."""

    def predict(self, dataset, folds, input_dir, output_dir, num_parts=1, part_id=0):
        super().predict(dataset, folds, input_dir, output_dir, num_parts, part_id)
        for path in Path(output_dir).glob("*.mha"):
            p = read_image(path)
            p[0:2, 0:2] = 1
            p[8, 9] = 0
            write_image(path, p)


def setup(tmp_path, truth=False):
    """The tiny round-1 dataset with real RECIST marks in lesions.csv (its ellipses are the label disks)."""
    paths = NNUNetPaths.under(tmp_path).create()
    raw = write_tiny_dataset(paths.raw)
    rows = []
    for r in read_sidecar(raw / "lesions.csv"):
        cx = 8 + (int(r.case[-1]) if r.case.startswith("P") else 0)  # disk(8 + l, 8), r = 4; test cases disk()
        mark = (cx - 4.0, 8.0, cx + 4.0, 8.0, float(cx), 4.0, float(cx), 12.0)
        rows.append(dataclasses.replace(r, recist_crop=mark, recist_slice=mark, crop_x0=-0.5, crop_y0=-0.5))
    write_sidecar(raw / "lesions.csv", rows)
    sample = None
    if truth:
        sample = tmp_path / "sample"
        (sample / "Masks_png").mkdir(parents=True)
        cv2.imwrite(str(sample / "Masks_png" / "m.png"), disk())
        lines = ["File_name,lesion_instance,mask_path,true_type"]
        lines += [f"{r.File_name},1,Masks_png/m.png,4" for r in rows]
        (sample / "masks.csv").write_text("\n".join(lines) + "\n")
    return paths, BlobBackend(paths, TRAINER), sample


def run(paths, backend, **options):
    return refine(501, TRAINER, paths=paths, backend=backend, echo=None, device="cpu", **options)


def work(paths):
    return paths.results / BASE / work_dir_name(TRAINER, "nnUNetPlans", "2d", 0, False)


def test_round_update_uses_the_post_processed_predictions(tmp_path):
    paths, backend, _ = setup(tmp_path)
    run(paths, backend, rounds=2, postprocess="mark")
    w = work(paths)
    m = json.loads((w / "manifest.json").read_text())
    assert m["arguments"]["postprocess"] == "mark"
    # nnU-Net's outputs stay as they were; the cleaned copies sit beside them
    raw_pred = read_image(w / "round1" / "predictions" / "fold0" / "part0of1" / "P0L0.mha")
    clean = read_image(w / "round1" / "predictions_mark" / "P0L0.mha")
    assert raw_pred[0:2, 0:2].all() and not clean[0:2, 0:2].any()
    assert raw_pred[8, 9] == 0 and clean[8, 9] == 1  # the hole is filled
    block = np.zeros((SIZE, SIZE), bool)
    block[4:12, 6:14] = True  # fake_prediction of round 1, crossed by the mark
    np.testing.assert_array_equal(clean == 1, block)
    # P5L1: the model predicts only the blob, which misses the mark: the ellipse instead
    e = read_image(paths.raw / BASE / "labelsTr" / "P5L1.mha") == 1
    np.testing.assert_array_equal(read_image(w / "round1" / "predictions_mark" / "P5L1.mha") == 1, e)
    info = m["steps"]["build_2"]["postprocess"]
    assert info["mode"] == "mark" and info["folder"] == "round1/predictions_mark"
    assert info["status_counts"] == {"fallback_ellipse": 1, "marked": 11} and info["fallback_cases"] == 1
    # round 2's labels from the cleaned prediction: the filled hole is lesion (it would be ignore), the blob
    # background
    label = read_image(paths.raw / "Dataset601_Tiny_round2" / "labelsTr" / "P0L0.mha")
    assert label[8, 9] == 1
    e0 = read_image(paths.raw / BASE / "labelsTr" / "P0L0.mha") == 1
    np.testing.assert_array_equal(label == 1, block & e0)
    np.testing.assert_array_equal(label == 2, (block | e0) & ~(block & e0))
    assert (label[0:2, 0:2] == 0).all()
    assert json.loads((paths.raw / "Dataset601_Tiny_round2" / "dataset.json").read_text())[
        "ulseg_refine"]["predicted_by"]["postprocess"] == "mark"


def test_without_postprocessing_the_hole_becomes_ignore(tmp_path):
    paths, backend, _ = setup(tmp_path)
    run(paths, backend, rounds=2)
    label = read_image(paths.raw / "Dataset601_Tiny_round2" / "labelsTr" / "P0L0.mha")
    assert label[8, 9] == 2  # in e, not in p
    assert not (work(paths) / "round1" / "predictions_none").exists()
    assert "postprocess" not in json.loads((work(paths) / "manifest.json").read_text())["steps"]["build_2"]


def test_test_predictions_are_post_processed_and_scored(tmp_path):
    paths, backend, sample = setup(tmp_path, truth=True)
    plain_paths, plain_backend, _ = setup(tmp_path / "plain", truth=True)
    result = run(paths, backend, rounds=1, postprocess="mark-ellipse", truth=sample)
    plain = run(plain_paths, plain_backend, rounds=1, truth=tmp_path / "plain" / "sample")
    step = json.loads((work(paths) / "manifest.json").read_text())["steps"]["test_1"]
    assert step["predictions"] == "round1/test_predictions_mark-ellipse"
    assert step["unprocessed_predictions"] == "round1/test_predictions"
    assert step["postprocess"]["status_counts"] == {"marked": 2}
    for case in ("T0", "T1"):
        assert read_image(work(paths) / "round1" / "test_predictions" / f"{case}.mha")[0:2, 0:2].all()
        assert not read_image(work(paths) / step["predictions"] / f"{case}.mha")[0:2, 0:2].any()
    # the report scores the cleaned predictions: without the blob (4 false-positive px) the Dice is higher
    dice, plain_dice = (r.report["rounds"][0]["test_dice"]["mean"] for r in (result, plain))
    assert dice > plain_dice
    assert result.report["arguments"]["postprocess"] == "mark-ellipse"


def test_a_resumed_run_must_keep_its_mode(tmp_path):
    paths, backend, _ = setup(tmp_path)
    run(paths, backend, rounds=1, postprocess="mark")
    with pytest.raises(ManifestConflict, match="postprocess: manifest has 'mark', this command has 'none'"):
        run(paths, backend, rounds=1)
    with pytest.raises(ManifestConflict, match="postprocess"):
        run(paths, backend, rounds=2, postprocess="mark-ellipse")
    run(paths, backend, rounds=1, postprocess="mark")  # same mode: only the report
    # parts > 0 check it too
    with pytest.raises(ManifestConflict, match="postprocess"):
        run(paths, backend, rounds=2, num_parts=2, part_id=1, wait_timeout=0.1, poll_interval=0.01)
    # a manifest written before the option existed ran without post-processing
    manifest = work(paths) / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["arguments"]["postprocess"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ManifestConflict, match="manifest has 'none', this command has 'mark'"):
        run(paths, backend, rounds=1, postprocess="mark")


def test_postprocessing_needs_the_sidecar_and_a_known_mode(tmp_path):
    paths = NNUNetPaths.under(tmp_path).create()
    write_tiny_dataset(paths.raw, sidecar=False)
    with pytest.raises(RefineError, match="lesions.csv is missing"):
        run(paths, FakeBackend(paths, TRAINER), postprocess="mark")
    with pytest.raises(ValueError, match="unknown post-processing mode 'all'"):
        RefineConfig(dataset=1, trainer="T", postprocess="all").validate()


def test_cli_passes_the_mode(monkeypatch):
    from nnunet_ulseg.refine import cli

    parser = argparse.ArgumentParser()
    cli.add_refine_parser(parser.add_subparsers())
    seen = {}
    monkeypatch.setattr(rounds_module, "refine", lambda dataset, trainer, **options: seen.update(options))
    args = parser.parse_args(["refine", "-d", "501", "-tr", "T", "--postprocess", "mark-ellipse"])
    assert args.func(args) == 0 and seen["postprocess"] == "mark-ellipse"
    assert parser.parse_args(["refine", "-d", "501", "-tr", "T"]).postprocess == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["refine", "-d", "501", "-tr", "T", "--postprocess", "largest"])
