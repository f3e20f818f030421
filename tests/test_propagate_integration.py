"""Integration: ``ulseg propagate`` (WSSS Algorithm 1) with the real nnUNetv2_* commands, K = 1, killed once.

Kept cheap for CI on 2 CPU cores: 8 lesions on 128 px slices, one input channel, a 1-epoch
trainer, no TTA, one process.  The run is cut short by an injected failure as
``nnUNetv2_preprocess`` of model 1's dataset starts (step ``preprocess_1`` unfinished), as
``tests/test_faults_refine.py`` does for refine (the kill point is chosen so that no expensive
nnU-Net command runs twice; ``test_propagate.py`` kills a fake-backend run at every call); the same
call then resumes it: the finished steps (model 0's training, test and slice predictions, model 1's
labels) are not run again, and the run finishes with model 1 and both models' test predictions.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_ulseg.conversion.slices import read_slices
from nnunet_ulseg.propagate.rounds import propagate
from nnunet_ulseg.refine.backend import NNUNetBackend
from nnunet_ulseg.workflow.nnunet import NNUNetPaths
from refine_support import Killed, read_image

pytestmark = pytest.mark.integration

TRAINER = "nnUNetTrainerULSeg_1epochs"
BASE = "Dataset501_PropIT"


class KilledInPreprocess(NNUNetBackend):
    """nnU-Net's commands, recorded; with ``kill`` the first ``nnUNetv2_preprocess`` 'dies' as it starts."""

    calls: list
    kill: bool

    def train(self, dataset, fold, pretrained=None):
        self.calls.append(("train", dataset))
        super().train(dataset, fold, pretrained)

    def predict(self, dataset, folds, input_dir, output_dir, num_parts=1, part_id=0, save_probabilities=False):
        self.calls.append(("predict", dataset, input_dir.name, save_probabilities))
        super().predict(dataset, folds, input_dir, output_dir, num_parts, part_id, save_probabilities)

    def preprocess(self, dataset):
        self.calls.append(("preprocess", dataset))
        if self.kill:
            raise Killed(f"nnUNetv2_preprocess {dataset}")
        super().preprocess(dataset)


def test_propagation_killed_mid_run_resumes_and_finishes(tmp_path):
    from nnunet_ulseg.conversion.deeplesion import convert_deeplesion
    from nnunet_ulseg.demo import make_sample

    sample = make_sample(tmp_path / "deeplesion", n_lesions=8, seed=3, image_size=128, progress=False)
    paths = NNUNetPaths.under(tmp_path).create()
    convert_deeplesion(sample, paths.raw / BASE, num_processes=1, progress=False)
    work = paths.results / BASE / f"ulseg_propagate_{TRAINER}__nnUNetPlans__2d_fold0"

    def backend():
        b = KilledInPreprocess(paths, "2d", TRAINER, "nnUNetPlans", "cpu", 1, work / "propagate.log",
                                          tta=False, echo=None)
        b.calls, b.kill = [], True
        return b

    first = backend()
    with pytest.raises(Killed):
        propagate(501, TRAINER, paths=paths, backend=first, K=1, device="cpu", num_processes=1, tta=False,
                  echo=None)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["in_progress"]["step"] == "preprocess_1"
    assert list(manifest["steps"]) == ["slices", "prepare_0", "train_0", "test_0", "predict_0", "build_1"]
    assert ("predict", BASE, "predict_reach1", True) in first.calls  # the probabilities for the trimaps
    assert not (work / "coordinator.lock").exists()  # released on the way out

    again = backend()
    again.kill = False
    lines: list[str] = []
    result = propagate(501, TRAINER, paths=paths, backend=again, K=1, device="cpu", num_processes=1, tta=False,
                       echo=lines.append)
    # nothing finished is run again: the resumed run starts with the step that was cut short
    model1 = json.loads(result.manifest.read_text())["rounds"]["1"]["dataset_name"]
    assert [c[:2] for c in again.calls] == [("preprocess", model1), ("train", model1), ("predict", model1)]
    steps = json.loads(result.manifest.read_text())["steps"]
    assert all(steps[s] == manifest["steps"][s] for s in manifest["steps"])
    assert list(steps)[6:] == ["preprocess_1", "train_1", "test_1"]

    # model 1's dataset: key cases + labelled slices r±1, images linked, labels 0/1/2
    raw1 = paths.raw / model1
    table = read_slices(raw1 / "slices.csv")
    off = [r for r in table if r.offset != 0]
    assert off and {abs(r.offset) for r in off} == {1}
    for r in off:
        label = read_image(raw1 / "labelsTr" / f"{r.case}.mha")
        assert set(np.unique(label)) <= {0, 1, 2}
        assert (raw1 / "imagesTr" / f"{r.case}_0000.mha").is_symlink()
    assert (paths.results / model1 / f"{TRAINER}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").exists()
    # each model's test predictions of the test key cases and their slices r±1, with slices.csv
    for m in (0, 1):
        out = work / f"round{m}" / "test_predictions"
        rows = read_slices(out / "slices.csv")
        assert {r.offset for r in rows} == {-1, 0, 1} and all((out / f"{r.case}.mha").exists() for r in rows)
    report = json.loads((work / "propagate_report.json").read_text())
    assert report["models"][1]["per_offset"]["1"] + report["models"][1]["per_offset"]["-1"] == len(off)
    assert any("model 1" in line for line in lines)
