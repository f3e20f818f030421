"""The co-segmentation trainers (co-segmentation paper Sec. 2.2-2.4): pair loader, loss, optimisers, nnU-Net runs.

The loader is tested on nnU-Net's own ``nnUNetDatasetNumpy`` files (each case's image is filled
with its number, so a batch shows which case each sample came from); the trainers are built
in-process from the tiny plans of ``test_trainers_inprocess``; the integration test runs the
real ``nnUNetv2_*`` commands and ``ulseg coseg-pairs``/``coseg-predict`` on a generated sample.
"""
from __future__ import annotations

import json
import shutil
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
