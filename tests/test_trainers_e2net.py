"""E²Net trainers (issue 14 items 3, 6, 8): labels, the AHRNet edge head, and one real epoch in-process.

The integration tests write two tiny 2D datasets themselves (64 x 64 CT-like slices, a liver with a
tumour): a region-labelled liver/tumour dataset (labels 0/1/2, dataset.json liver = [1, 2], tumour = 2)
and a weak-label lesion dataset (lesion 1 = the tumour, a 2-px ignore band around it), plan and
preprocess them once (2d only) with nnU-Net's own planning API in this process (the steps of
``nnUNetv2_plan_and_preprocess -c 2d --verify_dataset_integrity``; see ``planned``), then find the
trainers through ``nnUNet_extTrainer`` and run nnU-Net's own ``run_training`` for one short epoch in
this process (single-threaded data augmentation): E²Net (stage 2), R2UNet (stage 1, the same slices
read with the stage-1 labels ``{"background": 0, "liver": [1, 2]}``) and AHRNet + edge head + RLS.
The E²Net checkpoint is then loaded by nnU-Net's predictor, which rebuilds the network with deep
supervision off, so inference sees s² alone. The real CLI chain (converter -> nnUNetv2 commands ->
``ulseg liver-tumour``) is ``tests/test_liver_tumour_integration.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ulseg.nnunet_layout import NNUNetPaths

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"
LIVER_ID, LESION_ID = 983, 984
LIVER = f"Dataset{LIVER_ID}_E2NetTiny"
LESION = f"Dataset{LESION_ID}_EdgeTiny"
REGION_LABELS = {"background": 0, "liver": [1, 2], "tumour": 2}
SIZE, N_CASES = 64, 6


# ----------------------------------------------------------------------------------- fast unit tests
def test_trainer_refuses_other_labels_with_the_expected_block():
    from nnunet_ulseg.training.e2net import STAGE1_LABELS, STAGE2_LABELS, check_region_labels

    check_region_labels({"labels": dict(REGION_LABELS), "regions_class_order": [1, 2]}, STAGE2_LABELS, [1, 2], "T")
    check_region_labels({"labels": {"liver": (2, 1), "background": 0}, "regions_class_order": [1]}, STAGE1_LABELS,
                        [1], "T")
    for bad in ({"labels": {"background": 0, "liver": 1, "tumour": 2}},
                {"labels": dict(REGION_LABELS)},
                {"labels": {"background": 0, "lesion": 1, "ignore": 2}, "regions_class_order": [1, 2]}):
        with pytest.raises(ValueError, match=r"nnUNetTrainerE2Net trains nnU-Net regions .*'liver': \[1, 2\]"):
            check_region_labels(bad, STAGE2_LABELS, [1, 2], "nnUNetTrainerE2Net")


def test_table3_rows_and_edge_weight_survive_nnunet_setting_self_network():
    """nnU-Net's trainer assigns ``self.network`` (None, then the nn.Module): the switches must not live there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_e2net_trainers", TRAINERS_DIR / "nnUNetTrainerE2Net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    e2net = ("+ dist + DCFF (E2Net)", 4.0)
    rows = {"R2UNetLiver": ("1st stage (R2UNet, liver)", 0.0), "E2NetBaseline": ("Baseline (2nd stage, R2UNet)", 0.0),
            "E2NetEdge": ("+ edge", 4.0), "E2NetDist": ("+ dist", 4.0), "E2NetEdgeDCFF": ("+ edge + DCFF", 4.0),
            "E2NetDistDCFF": e2net, "E2Net": e2net, "E2NetLite_1epochs": e2net,
            "R2UNetLiverLite_1epochs": ("1st stage (R2UNet, liver)", 0.0)}
    for stem, (row, edge_weight) in rows.items():
        cls = getattr(module, f"nnUNetTrainer{stem}")
        trainer = cls.__new__(cls)
        trainer.network = torch.nn.Identity()  # what nnUNetTrainer.initialize leaves there
        trainer.label_manager = type("LM", (), {"has_regions": True, "has_ignore_label": False})()
        assert trainer.table3_row == row, stem
        assert trainer._build_loss().edge_weight == edge_weight, stem


def test_ahrnet_edge_head_is_off_by_default_and_last_when_on():
    from nnunet_ulseg.networks.ahrnet import AHRNet, ahrnet_arch_kwargs
    from tests.test_trainers_inprocess import TINY

    assert "edge_head" not in ahrnet_arch_kwargs()[0] and ahrnet_arch_kwargs(edge_head=True)[0]["edge_head"]
    torch.manual_seed(0)
    plain = AHRNet(1, 2, config=TINY, deep_supervision=True)
    torch.manual_seed(0)
    off = AHRNet(1, 2, config=TINY, deep_supervision=True, edge_head=False)
    assert list(plain.state_dict()) == list(off.state_dict())
    on = AHRNet(1, 2, config=TINY, deep_supervision=True, edge_head=True)
    extra = set(on.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("edge_decoder.") for k in extra)
    x = torch.randn(2, 1, 64, 64)
    out = on(x)
    assert [tuple(o.shape) for o in out] == [(2, 2, 64, 64), (2, 2, 32, 32), (2, 2, 16, 16), (2, 1, 64, 64)]
    on.decoder.deep_supervision = False
    assert on(x).shape == (2, 2, 64, 64)
    assert on.compute_conv_feature_map_size((64, 64)) > plain.compute_conv_feature_map_size((64, 64))


def test_edge_deep_supervision_adds_four_times_the_edge_bce_and_masks_ignore():
    from nnunet_ulseg.losses.compound import WeakSegLoss
    from nnunet_ulseg.losses.edge import edge_targets, masked_sigmoid_bce
    from nnunet_ulseg.training.ds import ImageDeepSupervision
    from nnunet_ulseg.training.e2net import EdgeDeepSupervision

    g = torch.Generator().manual_seed(1)
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 6:22, 6:22] = 2
    target[:, :, 8:20, 8:20] = 1
    targets = [target, target[:, :, ::2, ::2]]
    seg = [torch.randn(2, 2, 32, 32, generator=g), torch.randn(2, 2, 16, 16, generator=g)]
    edge = torch.randn(2, 1, 32, 32, generator=g, requires_grad=True)
    wrapped = EdgeDeepSupervision(WeakSegLoss(), (1.0, 1.0))
    total = wrapped(seg + [edge], targets)
    base = ImageDeepSupervision(WeakSegLoss(), (1.0, 1.0))(seg, targets)
    e = masked_sigmoid_bce(edge, edge_targets((target == 1).float()), target != 2)
    assert total.item() == pytest.approx(base.item() + 4 * e.item(), rel=1e-5)
    total.backward()
    assert (edge.grad[target == 2] == 0).all() and edge.grad[target != 2].abs().sum() > 0
    assert wrapped.pop_component_means()[0]["edge"] == pytest.approx(e.item(), rel=1e-5)
    assert wrapped(seg[0], target).item() == pytest.approx(WeakSegLoss()(seg[0], target).item(), rel=1e-6)


# ----------------------------------------------------------------------------------- integration
def _case(rng) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like slice (HU) and its LiTS-style label: body, liver (1) with one tumour (2)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.full((SIZE, SIZE), -1000.0)
    image[(yy - 32) ** 2 + (xx - 32) ** 2 <= 29 ** 2] = 0.0
    cy, cx = rng.integers(26, 38, 2)
    liver = ((yy - cy) / rng.uniform(14, 18)) ** 2 + ((xx - cx) / rng.uniform(16, 20)) ** 2 <= 1
    ty, tx, r = cy + rng.integers(-5, 6), cx + rng.integers(-5, 6), rng.uniform(3, 6)
    tumour = ((yy - ty) ** 2 + (xx - tx) ** 2 <= r ** 2) & liver
    image[liver] = 60.0
    image[tumour] = 10.0
    image += rng.normal(0, 8, image.shape)
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[liver] = 1
    label[tumour] = 2
    return image.astype(np.int16), label


def _write(path: Path, array: np.ndarray) -> None:
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def _write_datasets(paths: NNUNetPaths) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(7)
    cases = [f"case_{i:03d}" for i in range(N_CASES)]
    for dataset, labels, extra in ((LIVER, REGION_LABELS, {"regions_class_order": [1, 2]}),
                                   (LESION, {"background": 0, "lesion": 1, "ignore": 2}, {})):
        raw = paths.raw / dataset
        for case in cases:
            image, label = _case(rng)
            if dataset == LESION:
                lesion = label == 2
                label = np.where(lesion, 1, np.where(ndimage.binary_dilation(lesion, iterations=2), 2, 0))
            _write(raw / "imagesTr" / f"{case}_0000.mha", image)
            _write(raw / "labelsTr" / f"{case}.mha", label.astype(np.uint8))
        (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels, **extra,
                                                      "numTraining": N_CASES, "file_ending": ".mha"}))
        pre = paths.preprocessed / dataset
        pre.mkdir(parents=True)
        (pre / "splits_final.json").write_text(json.dumps([{"train": cases[:4], "val": cases[4:]}]))


class _ThreadPools:
    """Stands in for the ``multiprocessing`` module of nnU-Net's planning modules: ``get_context(...)``
    gives ``multiprocessing.dummy``, whose ``Pool`` runs the very same nnU-Net worker functions
    (``verify_labels``, ``analyze_case``, ``run_case_save``) in threads of this process.

    Why: each of nnU-Net's ``spawn`` pools starts a fresh interpreter that imports torch and nnunetv2
    (about 10 s each on the shared 2-core machine), and the CLI run costs seven of them for two datasets
    (its own process, then verify, fingerprint and preprocess pools per dataset): that, not the work on
    six 64 x 64 slices, was the fixture's 270 s. The computations and the files written are nnU-Net's.
    """

    @staticmethod
    def get_context(method=None):
        import multiprocessing.dummy

        return multiprocessing.dummy


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Both datasets planned and preprocessed by nnU-Net's own API in this process, 2d only.

    The same steps as ``nnUNetv2_plan_and_preprocess -d 983 984 -c 2d --verify_dataset_integrity``
    (``extract_fingerprints`` with the integrity check, ``plan_experiments`` with nnU-Net's default
    planner, ``preprocess`` of the 2d configuration), with the worker pools in threads (see
    :class:`_ThreadPools`).
    """
    import importlib

    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    root = tmp_path_factory.mktemp("e2net_it")
    paths = NNUNetPaths.under(root).create()
    _write_datasets(paths)
    env = paths.environ(num_processes=1)
    ids = [LIVER_ID, LESION_ID]
    with pytest.MonkeyPatch.context() as mp:
        for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(key, env[key])
        for module in ("nnunetv2.experiment_planning.verify_dataset_integrity",
                       "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
                       "nnunetv2.preprocessing.preprocessors.default_preprocessor"):
            mp.setattr(importlib.import_module(module), "multiprocessing", _ThreadPools)
        api.extract_fingerprints(ids, num_processes=1, check_dataset_integrity=True, show_progress_bar=False)
        plans_name = api.plan_experiments(ids)
        api.preprocess(ids, plans_name, configurations=("2d",), num_processes=[1], show_progress_bar=False)
    for dataset in (LIVER, LESION):
        pre = paths.preprocessed / dataset
        plans = json.loads((pre / f"{plans_name}.json").read_text())
        assert plans["configurations"]["2d"]["patch_size"] == [SIZE, SIZE]
        assert len(list((pre / plans["configurations"]["2d"]["data_identifier"]).glob("case_*.pkl"))) == N_CASES
    return paths


def _train(planned, monkeypatch, dataset: str, name: str, dataset_json: dict | None = None, **overrides):
    """nnU-Net's ``run_training`` of trainer ``name`` (found via nnUNet_extTrainer) for its short schedule.

    ``dataset_json`` replaces the preprocessed dataset.json (the stage-1 labels on the same label files).
    """
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for key, folder in (("nnUNet_raw", planned.raw), ("nnUNet_preprocessed", planned.preprocessed),
                        ("nnUNet_results", planned.results)):
        monkeypatch.setenv(key, str(folder))
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    for key in ("ULSEG_SHORT_EPOCHS", "ULSEG_SHORT_ITERATIONS", "ULSEG_HRNET_WEIGHTS"):
        monkeypatch.delenv(key, raising=False)
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name
    if overrides:
        cls = type(name, (cls,), overrides)
    pre = planned.preprocessed / dataset
    plans = {**json.loads((pre / "nnUNetPlans.json").read_text()), "continue_training": False}
    if dataset_json is None:
        dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = cls(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu"))
    trainer.run_training()
    return trainer


def _logged(trainer, key):
    return trainer.logger.get_value(key, step=None)


@pytest.mark.integration
def test_e2net_trains_one_epoch_and_the_predictor_gets_s2(planned, monkeypatch):
    name = "nnUNetTrainerE2NetLite_1epochs"
    trainer = _train(planned, monkeypatch, LIVER, name)
    fold = Path(trainer.output_folder)
    assert (fold / "checkpoint_final.pth").exists()
    assert type(trainer.network).__name__ == "E2Net" and trainer.label_manager.has_regions
    log = Path(trainer.log_file).read_text()
    assert trainer.table3_row == "+ dist + DCFF (E2Net)" and trainer.backbone == "res2net_lite"
    assert "train components: iou_s1" in log
    values = {k: _logged(trainer, f"train_{k}")[-1] for k in ("iou_s1", "bce_s1", "iou_s2", "bce_s2", "bce_e", "total")}
    assert all(np.isfinite(v) for v in values.values()) and values["bce_e"] > 0
    assert values["total"] == pytest.approx(values["iou_s1"] + values["bce_s1"] + values["iou_s2"] + values["bce_s2"]
                                            + 4 * values["bce_e"], rel=1e-4)
    assert np.isfinite(_logged(trainer, "val_losses")[-1])  # nnU-Net's own validation_step on (s2, s1, e)

    predictor = _predictor(fold)
    assert predictor.network.decoder.deep_supervision is False
    image, _ = _case(np.random.default_rng(99))
    x = torch.from_numpy(image[None, None].astype(np.float32))
    with torch.no_grad():
        s2 = predictor.network(x)
        predictor.network.decoder.deep_supervision = True
        outputs = predictor.network(x)
        predictor.network.decoder.deep_supervision = False
    assert torch.equal(s2, outputs[0]) and not torch.equal(s2, outputs[1])  # the predictor's tensor is s2, not s1
    seg = predictor.predict_single_npy_array(image[None, None].astype(np.float32), {"spacing": [999.0, 1.0, 1.0]})
    assert seg.shape == (1, SIZE, SIZE) and set(np.unique(seg)) <= {0, 1, 2}


def _predictor(fold: Path):
    """nnU-Net's predictor on ``fold``'s final checkpoint (it rebuilds the network with deep supervision off)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=1.0, use_gaussian=False, use_mirroring=False, device=torch.device("cpu"),
                                perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(fold.parent), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    return predictor


@pytest.mark.integration
def test_r2unet_liver_stage1_trains_one_epoch_on_the_liver_region(planned, monkeypatch):
    """Stage 1 (E2Net Sec. 2.1, l_1st = IoU + BCE) on the same planned slices, read with the stage-1 labels."""
    from nnunet_ulseg.training.e2net import STAGE1_LABELS, STAGE1_REGIONS

    pre = planned.preprocessed / LIVER
    stage1 = {**json.loads((pre / "dataset.json").read_text()), "labels": dict(STAGE1_LABELS),
              "regions_class_order": list(STAGE1_REGIONS)}
    trainer = _train(planned, monkeypatch, LIVER, "nnUNetTrainerR2UNetLiverLite_1epochs", dataset_json=stage1)
    fold = Path(trainer.output_folder)
    assert (fold / "checkpoint_final.pth").exists()
    assert type(trainer.network).__name__ == "R2UNet" and trainer.label_manager.foreground_regions == [(1, 2)]
    assert trainer.table3_row == "1st stage (R2UNet, liver)" and trainer.loss.edge_weight == 0
    values = {k: _logged(trainer, f"train_{k}")[-1] for k in ("iou_s1", "bce_s1", "iou_s2", "bce_s2", "bce_e", "total")}
    assert values["iou_s1"] == values["bce_s1"] == values["bce_e"] == 0  # one output: l_1st on it alone
    assert 0 < values["iou_s2"] <= 1 and values["bce_s2"] > 0
    assert values["total"] == pytest.approx(values["iou_s2"] + values["bce_s2"], rel=1e-4)
    assert np.isfinite(_logged(trainer, "val_losses")[-1])

    image, _ = _case(np.random.default_rng(98))
    seg = _predictor(fold).predict_single_npy_array(image[None, None].astype(np.float32), {"spacing": [999.0, 1.0, 1.0]})
    assert seg.shape == (1, SIZE, SIZE) and set(np.unique(seg)) <= {0, 1}


@pytest.mark.integration
def test_ahrnet_edge_rls_trains_one_epoch_on_a_weak_label_dataset(planned, monkeypatch):
    from tests.test_trainers_inprocess import TINY

    trainer = _train(planned, monkeypatch, LESION, "nnUNetTrainerAHRNetEdgeRLS_1epochs", hrnet_config=TINY)
    assert (Path(trainer.output_folder) / "checkpoint_final.pth").exists()
    assert trainer.network.use_edge_head and type(trainer.loss).__name__ == "EdgeDeepSupervision"
    log = Path(trainer.log_file).read_text()
    assert "edge head: target dist, weight 4.0" in log and "regional level set loss switched on" in log
    edge, rls = _logged(trainer, "train_edge")[-1], _logged(trainer, "train_rls")[-1]
    assert np.isfinite(edge) and edge > 0 and rls > 0
    assert np.isfinite(_logged(trainer, "val_losses")[-1])
