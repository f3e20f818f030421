"""The co-segmentation trainers (co-segmentation paper Sec. 2.2-2.4): pair loader, loss, optimisers, nnU-Net runs.

The loader is tested on nnU-Net's own ``nnUNetDatasetNumpy`` files (each case's image is filled
with its number, so a batch shows which case each sample came from); the trainers are built
in-process from the tiny plans of ``test_trainers_inprocess``; the integration test embeds the
session's tiny model's training cases (``ulseg coseg-pairs``), trains the co-segmentation trainer
with the real ``nnUNetv2_train`` and runs ``ulseg coseg-predict`` and ``ulseg evaluate``.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from nnunet_ulseg.training.coseg import PairDataLoader
from test_trainers_inprocess import nnunet_env, make_trainer, tiny_plans  # noqa: F401  (fixture)

LABELS = {"background": 0, "lesion": 1, "ignore": 2}


def _write_cases(folder, n):
    """``n`` preprocessed 2d cases ``c00..``: image = case number + 1, a lesion square, nnU-Net's properties."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    folder.mkdir(parents=True, exist_ok=True)
    seg = np.zeros((1, 1, 16, 16), dtype=np.int8)
    seg[0, 0, 4:12, 4:12] = 1
    locations = np.argwhere(seg >= 0)
    props = {"class_locations": {1: np.argwhere(seg == 1), (-1, 0, 1): locations}, "spacing": [1.0, 1.0, 1.0]}
    for i in range(n):
        data = np.full((1, 1, 16, 16), i + 1, dtype=np.float32)
        nnUNetDatasetNumpy.save_case(data, seg, props, str(folder / f"c{i:02d}"))
    return nnUNetDatasetNumpy(str(folder))


def _loader(dataset, clusters, batch_size=6, identifiers=None):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    if identifiers is not None:
        dataset = nnUNetDatasetNumpy(dataset.source_folder, identifiers)
    return PairDataLoader(dataset, batch_size, (16, 16), (16, 16), LabelManager(LABELS, None),
                          oversample_foreground_percent=0.33, clusters=clusters)


def test_loader_yields_interleaved_pairs_from_one_cluster_within_its_cases(tmp_path):
    dataset = _write_cases(tmp_path / "pre", 10)
    clusters = {f"c{i:02d}": i % 3 for i in range(10)}  # clusters {0,3,6,9}, {1,4,7}, {2,5,8}
    train = [f"c{i:02d}" for i in range(8)]  # c08, c09 are the other side of the split
    loader = _loader(dataset, clusters, batch_size=6, identifiers=train)
    np.random.seed(0)
    anchors = Counter()
    for _ in range(40):
        batch = loader.generate_train_batch()
        keys = list(batch["keys"])
        assert len(keys) == 6 and batch["data"].shape == (6, 1, 16, 16)
        for j, key in enumerate(keys):  # the image of sample j is case keys[j]'s
            assert float(batch["data"][j].max()) == int(key[1:]) + 1  # padding is 0
        for a, b in zip(keys[0::2], keys[1::2]):
            assert clusters[a] == clusters[b] and a != b and {a, b} <= set(train)
            anchors[a] += 1
    assert set(anchors) == set(train)  # every case of the side is drawn as an anchor


def test_loader_pairs_a_lone_lesion_with_itself_and_refuses_odd_batches(tmp_path):
    dataset = _write_cases(tmp_path / "pre", 3)
    clusters = {"c00": 0, "c01": 0, "c02": 1}
    loader = _loader(dataset, clusters, batch_size=2, identifiers=["c00", "c02"])  # c01 on the other side
    np.random.seed(1)
    for _ in range(10):
        a, b = loader.get_indices()
        assert a == b
    with pytest.raises(ValueError, match="even batch size"):
        _loader(dataset, clusters, batch_size=3)
    with pytest.raises(ValueError, match="no cluster for 1 case"):
        _loader(dataset, {"c00": 0, "c01": 0})


# ---------------------------------------------------------------------------------------- trainers in-process
NAMES = {  # name -> (attention, optimiser, decoder, multi-grid)
    "nnUNetTrainerCoSeg": ("csa", "sgd", "d2", (2, 4, 8)), "nnUNetTrainerCoSegAdam": ("csa", "adam", "d2", (2, 4, 8)),
    "nnUNetTrainerCoSegSEASPP": ("aspp", "sgd", "d2", (2, 4, 8)), "nnUNetTrainerCoSegECA": ("eca", "sgd", "d2", (2, 4, 8)),
    "nnUNetTrainerCoSegECAASPP": ("eca_aspp", "sgd", "d2", (2, 4, 8)),
    "nnUNetTrainerCoSegDANet": ("danet", "sgd", "d2", (2, 4, 8)), "nnUNetTrainerCoSegNone": ("none", "sgd", "d2", (2, 4, 8)),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_trainer_names_mean_what_they_say(nnunet_env, name):
    from test_trainers_inprocess import find

    for suffix, epochs in (("", None), ("_10epochs", 10)):
        cls = find(name + suffix)
        assert (cls.coseg_attention, cls.coseg_optimizer, cls.coseg_decoder, cls.coseg_multi_grid) == NAMES[name]
        assert cls.short_num_epochs == epochs and cls.seg_loss == "dice_ce"
        kwargs, _ = cls.arch_kwargs()
        assert kwargs["attention"] == NAMES[name][0] and kwargs["norm_op"].endswith("InstanceNorm2d")
    assert find("nnUNetTrainerCoSeg_1epochs").short_num_epochs == 1


def _pair_batch(seed=0):
    """Two pairs (4 images of 64 x 64): a lesion square (1) with an ignore band (2) in each."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(4, 1, 64, 64, generator=g)
    target = torch.zeros(4, 1, 64, 64)
    target[:, :, 16:44, 16:44] = 2
    target[:, :, 20:40, 20:40] = 1
    data[target == 1] += 2.0
    return {"data": data, "target": target}


def test_paper_optimisers_and_even_batch(nnunet_env):
    plans = tiny_plans()
    plans["configurations"]["2d"]["batch_size"] = 3
    sgd = make_trainer("nnUNetTrainerCoSeg_1epochs", plans, coseg_depth="resnet_lite")
    assert sgd.batch_size == 4  # 3 rounded up: whole pairs
    group = sgd.optimizer.param_groups[0]
    assert type(sgd.optimizer) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-2, 0.99, 5e-4)
    sgd.num_epochs = 10
    sgd.lr_scheduler.max_steps = 10
    sgd.lr_scheduler.step(5)
    assert group["lr"] == pytest.approx(1e-2 * (1 - 5 / 10) ** 0.9)  # Sec. 2.4's poly
    adam = make_trainer("nnUNetTrainerCoSegAdam", coseg_depth="resnet_lite")
    group = adam.optimizer.param_groups[0]
    assert type(adam.optimizer) is torch.optim.Adam and (group["lr"], group["weight_decay"]) == (1e-5, 5e-4)
    adam.lr_scheduler.step(700)
    assert group["lr"] == pytest.approx(1e-5)  # constant: the paper gives Adam no schedule
    assert adam.batch_size == 2 and adam.enable_deep_supervision is False


def test_loss_masks_ignore_and_every_parameter_gets_a_gradient(nnunet_env):
    trainer = make_trainer("nnUNetTrainerCoSeg_1epochs", coseg_depth="resnet_lite")
    batch = _pair_batch()
    target = batch["target"]
    logits = torch.randn(4, 2, 64, 64, generator=torch.Generator().manual_seed(1))
    base = trainer.loss(logits, target)
    assert torch.isfinite(base) and float(trainer.loss(logits, target)) == float(base)  # no state between calls
    changed = logits.clone()
    changed[:, :, (target[0, 0] == 2)] += 5.0  # only ignore pixels
    assert float(trainer.loss(changed, target)) == pytest.approx(float(base), abs=1e-6)
    changed = logits.clone()
    changed[:, :, (target[0, 0] == 0)] += 5.0 * torch.tensor([-1.0, 1.0])[:, None]  # background -> lesion
    assert float(trainer.loss(changed, target)) > float(base) + 0.1
    # one real nnU-Net train step: every parameter is used (DDP's find_unused_parameters=False) and finite
    trainer.on_train_epoch_start()
    out = trainer.train_step(batch)
    assert np.isfinite(out["loss"])
    params = [p for p in trainer.network.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert params[0].grad.abs().sum() > 0
    # nnU-Net's predictor feeds single tiles: the network pairs them with themselves
    assert trainer.network.self_pair_when_odd is True
    with torch.no_grad():
        trainer.network.eval()
        single = trainer.network(batch["data"][:1])
        assert torch.allclose(single, trainer.network(batch["data"][[0, 0]])[:1], atol=1e-5)


# ---------------------------------------------------------------------------------------- integration
@pytest.mark.integration
def test_coseg_pairs_train_predict_and_evaluate_end_to_end(tiny_model, tmp_path, monkeypatch):
    """Embedding model -> coseg-pairs -> nnUNetTrainerCoSeg_1epochs through nnUNetv2_train and
    nnUNet_extTrainer -> coseg-predict on the test split -> ulseg evaluate scores the folder as it is.

    The embedding model is the session's tiny ``nnUNetTrainerULSeg_1epochs`` model (``tiny_model``:
    sample, conversion, nnU-Net's planning and one epoch, in-process), copied here because
    coseg-pairs and the co-segmentation training write into the dataset's folders.  The
    co-segmentation trainer itself is trained by the console script, final validation included.
    """
    from nnunet_ulseg.cli import main
    from nnunet_ulseg.coseg.pairs import read_clusters
    from nnunet_ulseg.workflow.nnunet import console_script
    from nnunet_ulseg.workflow.slice_scores import read_crop_mask
    from test_integration_nnunet import _run
    from tiny_model import DATASET, DATASET_ID, TRAINER

    sample = tiny_model.sample
    paths = tiny_model.copy_to(tmp_path / "nnunet")
    raw, pre = paths.raw / DATASET, paths.preprocessed / DATASET
    env = paths.environ(num_processes=1)
    env["nnUNet_n_proc_DA"] = "0"  # nnU-Net's single-threaded augmenter: no worker processes for 2 iterations
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    assert main(["coseg-pairs", "-d", str(DATASET_ID), "-tr", TRAINER, "-device", "cpu", "--split-folds", "2"]) == 0
    clusters = read_clusters(pre / "clusters.csv")
    pairs = json.loads((pre / "pairs.json").read_text())
    train_cases = json.loads((raw / "dataset.json").read_text())["numTraining"]
    assert len(clusters) == train_cases and pairs["n_clusters"] == 2  # round(200 n / 32735) = 0, clamped to 2
    for side in ("train", "val"):
        assert all(clusters[a] == clusters[b] and {a, b} <= set(pairs["folds"][0][side])
                   for a, b in pairs["pairs"][side])

    trainer = "nnUNetTrainerCoSeg_1epochs"
    out = _run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", trainer, "-device", "cpu"], env)
    fold = paths.fold_dir(DATASET, trainer)
    assert (fold / "checkpoint_final.pth").exists(), out[-2000:]
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "co-segmentation: CoSegNet resnet26, attention csa, sgd (lr 0.01, weight decay 0.0005)" in log
    assert np.isfinite(json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"])

    images, pred = raw / "imagesTs", tmp_path / "coseg_pred"
    assert main(["coseg-predict", "-i", str(images), "-o", str(pred), "-d", str(DATASET_ID), "-tr", trainer,
                 "-f", "0", "-device", "cpu", "--disable_tta", "--partners", "2"]) == 0
    cases = sorted(p.name[: -len("_0000.mha")] for p in images.glob("*_0000.mha"))
    assert cases
    report = json.loads((pred / "coseg_partners_part0.json").read_text())
    for case in cases:
        mask = read_crop_mask(pred / f"{case}.mha")
        assert mask.shape == read_crop_mask(images / f"{case}_0000.mha").shape and set(np.unique(mask)) <= {0, 1}
        assert len(report["pairs"][case]) == 2 and set(report["pairs"][case]) <= set(clusters)
    # ulseg evaluate scores the folder as nnUNetv2_predict's
    scored = tmp_path / "scores"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(sample), "-o", str(scored), "--sidecar",
                 str(raw / "lesions.csv"), "--split", "test", "--no-plots"]) == 0
    summary = json.loads((scored / "summary.json").read_text())
    assert "coseg_pred" in json.dumps(summary)
    # the paper's optional dense CRF, on half of the cases (-num_parts 2 -part_id 0, as nnUNetv2_predict)
    from nnunet_ulseg.coseg.crf import available

    if available():
        crf = tmp_path / "coseg_crf"
        assert main(["coseg-predict", "-i", str(images), "-o", str(crf), "-d", str(DATASET_ID), "-tr", trainer,
                     "-device", "cpu", "--disable_tta", "--crf", "-num_parts", "2", "-part_id", "0"]) == 0
        assert sorted(p.stem for p in crf.glob("*.mha")) == cases[0::2]
        for case in cases[0::2]:
            mask = read_crop_mask(crf / f"{case}.mha")
            assert mask.shape == read_crop_mask(pred / f"{case}.mha").shape and set(np.unique(mask)) <= {0, 1}
