"""Integration: ``ulseg refine`` with the real nnUNetv2_* commands, two rounds on a tiny generated sample.

Kept cheap for CI on 2 CPU cores: 12 lesions, a 1-epoch trainer, no TTA, one process, and no
``truth`` (its test-split predictions cost about a minute; the scoring itself is tested with a
fake backend in ``test_refine_report.py``).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from nnunet_ulseg.refine.rounds import refine
from nnunet_ulseg.workflow.nnunet import NNUNetPaths
from nnunet_ulseg.workflow.slice_scores import read_crop_mask

pytestmark = pytest.mark.integration

TRAINER = "nnUNetTrainerULSeg_1epochs"
BASE, ROUND2 = "Dataset501_RefineIT", "Dataset601_RefineIT_round2"


def test_refine_two_rounds_with_nnunet(tmp_path, monkeypatch):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    sample = make_sample(tmp_path / "deeplesion", n_lesions=12, seed=3, progress=False)
    paths = NNUNetPaths.under(tmp_path).create()
    convert_deeplesion(sample, paths.raw / BASE, num_processes=1, progress=False)
    lines: list[str] = []
    result = refine(501, TRAINER, paths=paths, rounds=2, device="cpu", num_processes=1, tta=False,
                    echo=lines.append)
    print("\n".join(lines[-8:]))

    # round 2: a new raw dataset with linked images and updated labels that contain ignore pixels
    raw1, raw2 = paths.raw / BASE, paths.raw / ROUND2
    images = sorted((raw2 / "imagesTr").iterdir())
    assert images and all(p.is_symlink() for p in images)
    assert [p.name for p in images] == sorted(p.name for p in (raw1 / "imagesTr").iterdir())
    labels = {p.name: read_crop_mask(p) for p in (raw2 / "labelsTr").glob("*.mha")}
    assert sorted(labels) == sorted(p.name for p in (raw1 / "labelsTr").glob("*.mha"))
    assert any((lab == 2).any() for lab in labels.values())
    for name, lab in labels.items():
        ellipse = read_crop_mask(raw1 / "labelsTr" / name) == 1
        assert set(np.unique(lab)) <= {0, 1, 2} and not (lab[~ellipse] == 1).any()
    assert json.loads((raw2 / "dataset.json").read_text())["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    # preprocessed with round 1's plans, trained
    plans1 = json.loads((paths.preprocessed / BASE / "nnUNetPlans.json").read_text())
    plans2 = json.loads((paths.preprocessed / ROUND2 / "nnUNetPlans.json").read_text())
    assert plans2.pop("dataset_name") == ROUND2 and plans1.pop("dataset_name") == BASE and plans1 == plans2
    assert (paths.results / ROUND2 / f"{TRAINER}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").exists()
    # report
    report = json.loads((result.work_dir / "refine_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    r1, r2 = report["rounds"]
    assert r1["ignore_fraction"] == 0 and r2["ignore_fraction"] > 0 and r2["label_change"] > 0
    assert r2["ignore_fraction"] == sum(int((lab == 2).sum()) for lab in labels.values()) / sum(
        lab.size for lab in labels.values())
    assert r1["trained"] and r2["trained"] and report == result.report
    assert any("Dataset601_RefineIT_round2" in line and "ignore %" in line for line in lines)

    # the same command again, through the CLI and the nnUNet_* variables: nothing runs, the report is printed
    from nnunet_ulseg.refine.cli import add_refine_parser

    for name, value in (("nnUNet_raw", paths.raw), ("nnUNet_preprocessed", paths.preprocessed),
                        ("nnUNet_results", paths.results)):
        monkeypatch.setenv(name, str(value))
    manifest_before = result.manifest.read_text()
    log_size = os.path.getsize(result.work_dir / "refine.log")
    parser = argparse.ArgumentParser()
    add_refine_parser(parser.add_subparsers())
    args = parser.parse_args(["refine", "-d", "501", "-tr", TRAINER, "--rounds", "2", "--device", "cpu", "-np", "1",
                              "--disable-tta"])
    assert args.func(args) == 0
    assert result.manifest.read_text() == manifest_before
    assert os.path.getsize(result.work_dir / "refine.log") == log_size
