"""Every trainer family built in-process from tiny hand-written nnU-Net plans (no subprocess).

Trainers are found by name through nnU-Net's own lookup with ``nnUNet_extTrainer`` pointing at
``trainers/``, constructed on the CPU, initialised, and given one real ``train_step`` on a random
batch of shape (2, 1, 64, 64) with targets at the deep-supervision scales (labels 0/1/2).

nnunetv2 2.8 resolves ``nnUNet_raw/_preprocessed/_results`` lazily (``nnunetv2.paths._EnvPath``), so
setting the environment is enough; for releases that read them at import, the fixture also patches
the names in ``nnunetv2.paths`` and in the trainer module that imported them.

Speed (2 busy CPU cores, where one HRNet-W18 step took 20 s): the U-Net is 4 stages of 4-16
features and the HRNet/AHRNet trainers run on a 4-32-channel HRNet (``TINY``) with their own
DE/DA/SA switches, loss, schedule and optimiser.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"
LABELS = {"background": 0, "lesion": 1, "ignore": 2}
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4, "file_ending": ".mha"}
TINY = {"stem_channels": 8, "stages": [
    {"block": "bottleneck", "num_modules": 1, "num_blocks": [1], "num_channels": [4]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1], "num_channels": [4, 8]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1, 1], "num_channels": [4, 8, 16]},
    {"block": "basic", "num_modules": 1, "num_blocks": [1, 1, 1, 1], "num_channels": [4, 8, 16, 32]},
]}


def tiny_plans(dataset_name: str = "Dataset999_Tiny") -> dict:
    """nnU-Net 2.8 plans with one small 2d configuration (patch 64 x 64, batch 2, 4-stage U-Net)."""
    arch = {"n_stages": 4, "features_per_stage": [4, 8, 16, 16], "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
            "n_conv_per_stage": [1, 1, 1, 1], "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    cfg = {"data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
           "patch_size": [64, 64], "median_image_size_in_voxels": [64, 64], "spacing": [1.0, 1.0],
           "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
           "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": arch, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
           "batch_dice": False}
    return {"dataset_name": dataset_name, "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": [1, 64, 64], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 1000.0, "mean": 0.0, "median": 0.0, "min": -1000.0, "percentile_00_5": -900.0,
                "percentile_99_5": 900.0, "std": 100.0}},
            "configurations": {"2d": cfg}}


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnU-Net folders under tmp_path (the preprocessed folder holds one file so nnU-Net can infer
    its dataset class) and ``nnUNet_extTrainer`` = our ``trainers/``."""
    import nnunetv2.paths as paths
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    folders = {k: tmp_path / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for key, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(key, str(folder))
        if not hasattr(getattr(paths, key), "is_set"):  # pre-2.8: plain strings read at import
            monkeypatch.setattr(paths, key, str(folder))
            monkeypatch.setattr(trainer_module, key, str(folder), raising=False)
    pre = folders["nnUNet_preprocessed"] / "Dataset999_Tiny" / "nnUNetPlans_2d"
    pre.mkdir(parents=True)
    (pre / "case.npz").touch()
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    monkeypatch.delenv("ULSEG_SHORT_EPOCHS", raising=False)
    monkeypatch.delenv("ULSEG_SHORT_ITERATIONS", raising=False)
    monkeypatch.delenv("ULSEG_HRNET_WEIGHTS", raising=False)
    return folders


def find(name: str):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def make_trainer(name: str, plans: dict | None = None, **overrides):
    """The trainer ``name`` found by nnU-Net, with class attributes ``overrides`` (a subclass), initialised."""
    cls = find(name)
    if overrides:
        cls = type(name, (cls,), overrides)
    plans = {**copy.deepcopy(plans or tiny_plans()), "continue_training": False}  # run_training sets it
    trainer = cls(plans=plans, configuration="2d", fold=0, dataset_json=DATASET_JSON, device=torch.device("cpu"))
    trainer.initialize()
    trainer.init_log_keys()  # what on_train_start does once the data loaders are up
    return trainer


def random_batch(trainer, seed: int = 0) -> dict:
    """Data (2, 1, 64, 64); a square lesion (1) with an ignore band (2) per sample, nearest-downsampled."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(2, 1, 64, 64, generator=g)
    target = torch.zeros(2, 1, 64, 64)
    target[0, :, 18:42, 18:42] = 2
    target[0, :, 20:40, 20:40] = 1
    target[1, :, 10:30, 30:50] = 1
    data[target == 1] += 2.0  # a brighter lesion, so the level set term has something to fit
    scales = trainer._get_deep_supervision_scales()
    targets = [target if all(s == 1 for s in scale) else
               torch.nn.functional.interpolate(target, scale_factor=tuple(scale), mode="nearest-exact")
               for scale in scales]
    return {"data": data, "target": targets}


def run_epoch(trainer, batches=1, seed=0) -> dict:
    """One training epoch without data loaders: epoch start, ``batches`` train steps, epoch end."""
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(random_batch(trainer, seed + i)) for i in range(batches)]
    trainer.on_train_epoch_end(outputs)
    return outputs[-1]


def grads_flow(trainer) -> bool:
    """Finite gradients, non-zero at the input convolution; only a zero-weighted head may have none."""
    grads = [p.grad for p in trainer.network.parameters() if p.requires_grad]
    present = [g for g in grads if g is not None]
    return (grads[0] is not None and grads[0].abs().sum() > 0 and all(torch.isfinite(g).all() for g in present)
            and len(present) >= 0.9 * len(grads))


def logged(trainer, key):
    return trainer.logger.get_value(key, step=None)


# name -> (network, (DE, DA, SA) or None, per-output loss, l_seg, RLS region, use_rls, rls_start, optimiser,
#          deep-supervision scheme); every HRNet/AHRNet trainer here is built on TINY (its backbone width is
#          checked without building in test_trainers_lookup.py, W18/W32 forward passes in test_networks.py)
U = ("PlainConvUNet", None)
A = "AHRNet"
FAMILIES = {
    "nnUNetTrainerBCEIoU_1epochs": (*U, "WeakSegLoss", "rls", False, "fraction", "SGD", "nnunet"),
    "nnUNetTrainerRLS_1epochs": (*U, "WeakSegLoss", "rls", True, "fraction", "SGD", "nnunet"),
    "nnUNetTrainerLS_1epochs": (*U, "WeakSegLoss", "image", True, "fraction", "SGD", "nnunet"),
    "nnUNetTrainerDiceCERLS_1epochs": (*U, "DiceCERLSLoss", "rls", True, "fraction", "SGD", "nnunet"),
    "nnUNetTrainerRLSPlateau_10epochs": (*U, "WeakSegLoss", "rls", True, "plateau", "SGD", "nnunet"),
    "nnUNetTrainerHRNet_1epochs": (A, (False, False, False), "WeakSegLoss", "rls", False, "fraction", "SGD", "equal"),
    "nnUNetTrainerHRNetDE": (A, (True, False, False), "WeakSegLoss", "rls", False, "fraction", "SGD", "equal"),
    "nnUNetTrainerHRNetDEDA_10epochs": (A, (True, True, False), "WeakSegLoss", "rls", False, "fraction", "SGD",
                                        "equal"),
    "nnUNetTrainerAHRNetRLS_1epochs": (A, (True, True, True), "WeakSegLoss", "rls", True, "fraction", "SGD", "equal"),
    "nnUNetTrainerAHRNetLS_10epochs": (A, (True, True, True), "WeakSegLoss", "image", True, "fraction", "SGD",
                                       "equal"),
    "nnUNetTrainerAHRNetW18RLSAdam_10epochs": (A, (True, True, True), "WeakSegLoss", "rls", True, "fraction",
                                               "Adam", "equal"),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_trainer_builds_and_trains_one_step(nnunet_env, name):
    net_cls, switches, loss_cls, region, use_rls, rls_start, optim, scheme = FAMILIES[name]
    trainer = make_trainer(name, **({"hrnet_config": TINY} if net_cls == A else {}))
    from nnunet_ulseg.training.ds import ImageDeepSupervision, deep_supervision_weights

    # the right network, loss, optimiser
    net = trainer.network
    assert type(net).__name__ == net_cls
    if switches is not None:
        assert (net.use_decoder, net.use_dual_attention, net.use_scale_attention) == switches
        assert net.encoder.output_channels == [4, 8, 16, 32]
    assert isinstance(trainer.loss, ImageDeepSupervision) and type(trainer.loss.loss).__name__ == loss_cls
    assert trainer.loss.loss.rls.region == region and trainer.use_rls == use_rls and trainer.rls_start == rls_start
    n_out = len(trainer._get_deep_supervision_scales())
    assert trainer.ds_weight_scheme == scheme
    np.testing.assert_array_equal(trainer.loss.weights, deep_supervision_weights(n_out, scheme))
    assert type(trainer.optimizer).__name__ == optim
    assert trainer.initial_lr == (1e-3 if optim == "Adam" else 1e-2)

    # one real train step with RLS on (the expensive phase), then the epoch's components
    trainer.loss.loss.use_rls = use_rls
    trainer.network.train()
    out = trainer.train_step(random_batch(trainer))
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    assert grads_flow(trainer)
    trainer.on_train_epoch_end([out])
    names = trainer.component_names
    assert set(names) == {"seg", *trainer.loss.loss.components} and names[-1] == "rls"
    values = {k: logged(trainer, f"train_{k}")[-1] for k in names}
    assert all(np.isfinite(v) for v in values.values())
    assert (values["rls"] > 0) == use_rls
    log = Path(trainer.log_file).read_text()
    if loss_cls == "WeakSegLoss":
        assert values["seg"] == pytest.approx(values["bce"] + values["iou"], rel=1e-5)
        assert "train components: bce " in log
    else:
        assert values["seg"] == pytest.approx(values["dice"] + values["ce"], rel=1e-5)
        assert "train components: dice " in log
    assert float(log.split("train components:")[1].split("rls")[1].split()[0]) == pytest.approx(values["rls"], abs=1e-4)


def test_dice_ce_rls_is_nnunets_default_loss_until_rls_switches_on(nnunet_env):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = make_trainer("nnUNetTrainerDiceCERLS_10epochs")
    reference = nnUNetTrainer._build_loss(trainer)  # exactly what nnU-Net's default trainer builds
    assert isinstance(trainer.loss.loss.seg, DC_and_CE_loss)
    assert trainer.loss.loss.seg.ignore_label == 2
    assert trainer.loss.weights == tuple(reference.weight_factors)  # bit-identical weights
    batch = random_batch(trainer)
    with torch.no_grad():
        outputs = trainer.network(batch["data"])
        trainer.loss.image = batch["data"]
        ours = trainer.loss(outputs, batch["target"])
        theirs = reference(outputs, batch["target"])
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
        # an all-ignored sample batch: nnU-Net skips CE, so do we
        ignored = [torch.full_like(t, 2) for t in batch["target"]]
        assert trainer.loss(outputs, ignored).item() == pytest.approx(reference(outputs, ignored).item(), rel=1e-6)
        trainer.loss.loss.use_rls = True
        with_rls = trainer.loss(outputs, batch["target"])
        rls = sum(w * trainer.loss.loss.rls(o, t, batch["data"])
                  for w, o, t in zip(trainer.loss.weights, outputs, batch["target"]) if w)
        assert with_rls.item() == pytest.approx(theirs.item() + 0.1 * rls.item(), rel=1e-5)
    assert trainer.rls_start_epoch == 5


@pytest.mark.parametrize("name, epochs, switch", [
    ("nnUNetTrainerRLS_10epochs", 10, 5), ("nnUNetTrainerDiceCERLS_1epochs", 1, 0),
    ("nnUNetTrainerBCEIoU_10epochs", 10, None),
])
def test_rls_switch_epoch_and_per_epoch_logging(nnunet_env, name, epochs, switch):
    trainer = make_trainer(name)
    assert trainer.num_epochs == epochs
    flags = []
    for epoch in range(epochs):
        trainer.on_train_epoch_start()
        flags.append(trainer.loss.loss.use_rls)
        trainer.on_train_epoch_end([{"loss": np.array(1.0)}])  # no step: components are NaN, still one per epoch
        trainer.current_epoch += 1
    expected = [switch is not None and e >= switch for e in range(epochs)]
    assert flags == expected
    log = Path(trainer.log_file).read_text()
    assert (f"regional level set loss switched on (region rls) at epoch {switch}: epoch {switch} >= {switch} = "
            f"floor(0.5 x {epochs} epochs)" in log) == (switch is not None)
    assert logged(trainer, "rls_on") == [float(f) for f in expected]
    assert all(len(logged(trainer, k)) == epochs for k in trainer._log_keys())


def test_plateau_switch_from_logged_history_survives_checkpoint_resume(nnunet_env):
    name = "nnUNetTrainerRLSPlateau_10epochs"
    trainer = make_trainer(name)
    assert trainer.rls_start_epoch == 5
    # epochs 0-3: l_seg falls, then flattens: 1.0, 0.6, 0.5, 0.495 -> at epoch 4: 0.495 vs best 0.5 of 1-3: 1 %
    history = [1.0, 0.6, 0.5, 0.495]
    for epoch, seg in enumerate(history):
        trainer.on_train_epoch_start()
        trainer.on_train_epoch_end([{"loss": np.array(seg)}])
        trainer.logger.local_logger.my_fantastic_logging["train_seg"][epoch] = seg  # as if trained
        assert not trainer.loss.loss.use_rls
        trainer.current_epoch += 1
    on, why = trainer.rls_decision()
    assert on and why.startswith("plateau") and "1.00%" in why
    # checkpoint written at the end of epoch 3 (nnU-Net stores current_epoch + 1), resumed in a new trainer
    trainer.current_epoch -= 1
    path = str(nnunet_env["nnUNet_results"] / "resume.pth")
    trainer.save_checkpoint(path)
    resumed = make_trainer(name)
    resumed.load_checkpoint(path)
    resumed.init_log_keys()
    assert resumed.current_epoch == 4
    assert resumed.rls_decision() == (on, why)
    resumed.on_train_epoch_start()
    assert resumed.loss.loss.use_rls and logged(resumed, "rls_on") == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert "regional level set loss switched on (region rls) at epoch 4: plateau: l_seg 0.4950 in epoch 3" in \
        Path(resumed.log_file).read_text()
    # once on, it stays on even if l_seg starts falling fast again
    resumed.on_train_epoch_end([{"loss": np.array(0.1)}])
    resumed.logger.local_logger.my_fantastic_logging["train_seg"][4] = 0.1
    resumed.current_epoch += 1
    assert resumed.rls_decision()[0] and "since epoch 4" in resumed.rls_decision()[1]


def test_adam_recipe_steps_with_nnunets_epoch_call(nnunet_env):
    from nnunet_ulseg.training.optim import StepFractionLR

    trainer = make_trainer("nnUNetTrainerAHRNetW18RLSAdam_10epochs", hrnet_config=TINY)
    assert isinstance(trainer.lr_scheduler, StepFractionLR)
    lrs = []
    for epoch in range(10):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()  # calls self.lr_scheduler.step(self.current_epoch)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3] * 5 + [1e-4] * 2 + [1e-5] * 3)
    assert logged(trainer, "lrs") == pytest.approx(lrs)


def test_stride_two_stem_trainer_builds_its_network_scales_and_trains(nnunet_env):
    trainer = make_trainer("nnUNetTrainerAHRNetW18S2RLS_10epochs", hrnet_config=TINY)
    assert trainer.network.encoder.output_strides == [2, 4, 8, 16]
    assert trainer._get_deep_supervision_scales() == [[1.0, 1.0], [0.5, 0.5]]
    assert len(trainer.loss.weights) == 2 and trainer.use_rls
    trainer.loss.loss.use_rls = True
    trainer.network.train()
    out = trainer.train_step(random_batch(trainer))
    assert np.isfinite(out["loss"]) and grads_flow(trainer)
    assert "stem stride 2" in Path(trainer.log_file).read_text()


def test_unnormalized_rls_trainer_uses_eq2_literally(nnunet_env):
    assert make_trainer("nnUNetTrainerRLSUnnormalized_10epochs").loss.loss.rls.normalize_intensity is False
    assert make_trainer("nnUNetTrainerRLS_10epochs").loss.loss.rls.normalize_intensity is True
