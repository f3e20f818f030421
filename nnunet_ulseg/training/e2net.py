"""The trainer base of E²Net's two stages (E²Net Sec. 2, 2.4, 3; Table 3 ablation switches).

:class:`nnUNetTrainerE2NetBase` is nnU-Net's trainer with one of two networks, both built by the
trainer's ``build_network_architecture`` (which nnU-Net's predictor also calls, deep supervision off):

* ``network_kind = "r2unet"``: :class:`~nnunet_ulseg.networks.r2unet.R2UNet`, stage 1's coarse liver
  network (``l_1st = IoU + BCE``) and Table 3's "Baseline (2nd stage)" (the paper: "using the model
  (R2UNet) of the first stage as the baseline in the second stage");
* ``network_kind = "e2net"``: :class:`~nnunet_ulseg.networks.e2net.E2Net` with the switches ``edge_branch``
  and ``dcff``; the edge target ``edge_kind`` ("edge": binary edge image, "dist": the edge distance
  map) completes Table 3's rows "+ edge", "+ dist", "+ edge + DCFF", "+ dist + DCFF" (= E²Net).

Labels: region-based training. The paper segments liver and tumour each with its own sigmoid output,
BCE (Eq. 1) and IoU (Eq. 2), and its liver mask contains the tumours; that is nnU-Net's region-based
mode, with dataset.json ::

    stage 2: "labels": {"background": 0, "liver": [1, 2], "tumour": 2}, "regions_class_order": [1, 2]
    stage 1: "labels": {"background": 0, "liver": [1, 2]},                "regions_class_order": [1]

on LiTS label files (0 background, 1 liver, 2 tumour; both stages read the same values). nnU-Net's
data loader then hands over one 0/1 channel per region (liver = {1, 2}, tumour = {2}), the network has
one output per region, the predictor applies a sigmoid per region and writes tumour over liver
(``regions_class_order``). Softmax classes ({liver: 1, tumour: 2} exclusive) would turn the liver mask
into liver parenchyma, whose edges also run along every tumour: not the paper's object. Any other
``labels``/``regions_class_order`` is refused in ``__init__`` with the expected block in the message.

Deep supervision: every E²Net output (s², s¹, e) is at full resolution, so the target scales are
``[[1, 1]]`` (one full-resolution target) and nnU-Net's own ``train_step``/``validation_step`` run
unchanged: the loss reads the ``(s2, s1, e)`` tuple, validation's ``output[0]`` is s², and inference
(deep supervision off) gets s² alone.

Patch size: Res2Net's five scales need sides divisible by 32; the plans' patch is rounded up as for
AHRNet (:func:`~nnunet_ulseg.training.ahrnet.patch_multiple_of`).

Normalisation: InstanceNorm (affine) rather than Res2Net's BatchNorm, for the reason given in
``training/ahrnet.py`` (nnU-Net's small 2d batches; no running statistics to lag).

Optimiser: nnU-Net's (SGD, Nesterov momentum 0.99, initial learning rate 0.01, poly decay). The
paper (Sec. 3) uses SGD with momentum 0.9 from 0.01, divided by 10 "once the validation loss is
stable", stopping after two decreases; that rule has no fixed length, while nnU-Net's schedule,
checkpoints (``checkpoint_final``) and our ``_Nepochs`` budgets are counted in epochs, and keeping
nnU-Net's optimiser makes the Table 3 rows differ in network and loss only. Batch size and patch
size are the plans'. The paper's random 10-60 px liver-box padding and 256 x 256 resize belong to the
stage-2 dataset (the crops), not to the trainer.

Logging: the mean unweighted components of Eq. 3 per epoch (``train_iou_s1`` ... ``train_bce_e``,
``train_total``) go to the training log and to nnU-Net's checkpointed logger (all-reduced under DDP).

Item 8 of issue 14, the edge branch for lesions, is :class:`nnUNetTrainerWeakAHRNetEdge` at the end of
this module: AHRNet with an edge head (a second decoder of one channel on AHRNet's fused features,
``networks/ahrnet.py``'s ``edge_head``) rather than a second full E²Net branch, so that the weak-label
trainers keep AHRNet's network, l_seg, RLS schedule and deep supervision and the edge term is the only
change (``nnUNetTrainerAHRNetEdgeRLS`` against ``nnUNetTrainerAHRNetRLS``).
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import distributed as dist

from nnunet_ulseg.losses.e2net import E2NetLoss
from nnunet_ulseg.losses.edge import EDGE_KINDS, edge_targets, masked_sigmoid_bce
from nnunet_ulseg.training.ahrnet import SIZE_DIVISOR, nnUNetTrainerWeakAHRNet, patch_multiple_of
from nnunet_ulseg.training.ds import ImageDeepSupervision
from nnunet_ulseg.training.schedule import ShortSchedule

STAGE2_LABELS = {"background": 0, "liver": [1, 2], "tumour": 2}
STAGE2_REGIONS = [1, 2]
STAGE1_LABELS = {"background": 0, "liver": [1, 2]}
STAGE1_REGIONS = [1]
NETWORKS = ("r2unet", "e2net")

#: Table 3 row of each (network, edge_branch, dcff, edge_kind)
TABLE3_ROWS = {("r2unet", False, False, "dist"): "Baseline (2nd stage, R2UNet)",
               ("e2net", True, False, "edge"): "+ edge", ("e2net", True, False, "dist"): "+ dist",
               ("e2net", True, True, "edge"): "+ edge + DCFF", ("e2net", True, True, "dist"): "+ dist + DCFF (E2Net)"}


def _canonical(labels) -> dict:
    return {str(k): sorted(int(x) for x in v) if isinstance(v, (list, tuple)) else int(v)
            for k, v in (labels or {}).items()}


def check_region_labels(dataset_json: dict, labels: dict, regions_class_order: list, who: str) -> None:
    """Raise ValueError unless dataset.json has exactly ``labels`` and ``regions_class_order``."""
    got_labels = dataset_json.get("labels")
    got_order = dataset_json.get("regions_class_order")
    if _canonical(got_labels) != _canonical(labels) or list(got_order or []) != list(regions_class_order):
        raise ValueError(
            f"{who} trains nnU-Net regions with dataset.json \"labels\": {labels} and \"regions_class_order\": "
            f"{regions_class_order} (LiTS label files: 0 background, 1 liver, 2 tumour); this dataset has "
            f"\"labels\": {got_labels} and \"regions_class_order\": {got_order}")


class nnUNetTrainerE2NetBase(ShortSchedule, nnUNetTrainer):
    """nnU-Net's trainer with R2UNet or E²Net and the loss of Eq. 3; every behaviour is a class attribute."""

    # --- schedule (ShortSchedule): None = nnU-Net's 1000 x 250; ``_Nepochs`` variants set it
    short_num_epochs: int | None = None
    # --- network (not ``network``: nnU-Net's trainer sets ``self.network`` to the nn.Module, which would
    # shadow a class attribute of that name and silently turn every switch below into "custom")
    network_kind: str = "e2net"
    #: Res2Net layout (networks/res2net.py): the paper's Res2Net-50, or "res2net_lite" for CPU runs
    backbone: str | dict = "res2net50_26w_4s"
    edge_branch: bool = True
    dcff: bool = True
    # --- loss (Eq. 3)
    edge_kind: str = "dist"
    edge_normalise: str = "component"
    s1_weight: float = 1.0
    s2_weight: float = 1.0
    edge_weight: float = 4.0
    # --- labels
    required_labels: dict = STAGE2_LABELS
    required_regions_class_order: list = STAGE2_REGIONS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        check_region_labels(dataset_json, self.required_labels, self.required_regions_class_order, type(self).__name__)
        if self.network_kind not in NETWORKS:
            raise ValueError(f"{type(self).__name__}.network_kind must be one of {NETWORKS}, got {self.network_kind!r}")
        plans, self._old_patch = patch_multiple_of(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)

    # ------------------------------------------------------------------ network
    @classmethod
    def arch_kwargs(cls) -> tuple[str, dict, list[str]]:
        """``(network_class_name, arch_kwargs, _kw_requires_import)`` of the trainer's network."""
        norm = dict(norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True})
        if cls.network_kind == "r2unet":
            from nnunet_ulseg.networks.r2unet import NETWORK_CLASS_NAME, R2UNET_STRIDES

            kwargs = {"backbone": cls.backbone, "conv_op": "torch.nn.Conv2d", "norm_op": "torch.nn.InstanceNorm2d",
                      "norm_op_kwargs": norm["norm_op_kwargs"], "nonlin": "torch.nn.ReLU",
                      "nonlin_kwargs": {"inplace": True}, "strides": R2UNET_STRIDES}
            return NETWORK_CLASS_NAME, kwargs, ["conv_op", "norm_op", "nonlin"]
        from nnunet_ulseg.networks import e2net

        kwargs, requires_import = e2net.e2net_arch_kwargs(backbone=cls.backbone, edge_branch=cls.edge_branch,
                                                          dcff=cls.dcff, **norm)
        return e2net.NETWORK_CLASS_NAME, kwargs, requires_import

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        name, kwargs, requires_import = cls.arch_kwargs()
        return get_network_from_plans(name, kwargs, requires_import, num_input_channels, num_output_channels,
                                      allow_init=True, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        return [[1.0, 1.0]] if self.enable_deep_supervision else None

    @property
    def table3_row(self) -> str:
        if self.required_labels is STAGE1_LABELS:
            return "1st stage (R2UNet, liver)"
        return TABLE3_ROWS.get((self.network_kind, self.edge_branch, self.dcff, self.edge_kind), "custom configuration")

    def initialize(self):
        super().initialize()
        self.print_to_log_file(f"network: {self.table3_row}; {self.network_kind}, backbone {self.backbone}, "
                               f"edge branch {self.edge_branch}, DCFF {self.dcff}, edge target {self.edge_kind}")
        if self._old_patch is not None:
            self.print_to_log_file(f"patch size {self._old_patch} -> {self.configuration_manager.patch_size}: "
                                   f"Res2Net needs sides divisible by {SIZE_DIVISOR}")

    # ------------------------------------------------------------------ loss
    def _build_loss(self):
        if not self.label_manager.has_regions:
            raise ValueError(f"{type(self).__name__} needs region-based labels (see training/e2net.py)")
        use_edge = self.network_kind == "e2net" and self.edge_branch
        return E2NetLoss(self.s1_weight, self.s2_weight, self.edge_weight if use_edge else 0.0, self.edge_kind,
                         self.edge_normalise, has_ignore_channel=self.label_manager.has_ignore_label)

    # ------------------------------------------------------------------ logging
    def _log_keys(self) -> list[str]:
        return [f"train_{k}" for k in (*E2NetLoss.components, "total")]

    def init_log_keys(self) -> None:
        """Add our keys to nnU-Net's logger (it accepts only known keys), one entry per past epoch."""
        local = self.logger.local_logger.my_fantastic_logging
        for key in self._log_keys():
            local.setdefault(key, []).extend([float("nan")] * (self.current_epoch - len(local.get(key, []))))

    def on_train_start(self):
        super().on_train_start()
        self.init_log_keys()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.loss.pop_means()  # drop the previous epoch's validation calls

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        means = self.loss.pop_means()
        names = (*E2NetLoss.components, "total")
        values = np.array([means.get(k, np.nan) for k in names], dtype=np.float64)
        if self.is_ddp:
            t = torch.tensor(values, device=self.device, dtype=torch.float64)
            dist.all_reduce(t)
            values = (t / dist.get_world_size()).cpu().numpy()
        for name, value in zip(names, values):
            self.logger.log(f"train_{name}", float(value), self.current_epoch)
        self.print_to_log_file("train components: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(names, values)))


# ---------------------------------------------------------------------------------------------------------
# Issue 14 item 8: E²Net's edge branch on the weak-label lesion datasets (AHRNet + edge head + RLS)
# ---------------------------------------------------------------------------------------------------------
class EdgeDeepSupervision(ImageDeepSupervision):
    """AHRNet's per-output weak loss over ``[p3, p2, p1]`` plus ``edge_weight`` x BCE of the edge output.

    ``outputs`` is AHRNet's list with the edge logits (B, 1, H, W) last (``AHRNet(edge_head=True)``);
    the segmentation outputs go to :class:`~nnunet_ulseg.training.ds.ImageDeepSupervision` unchanged, the
    edge logits to E²Net's edge term (Eq. 3's ``4 * l_BCE(g_e, e)``) against the edge target of the
    full-resolution pseudo mask (label 1), ignore-label pixels masked (they are neither object nor
    background, exactly as in BCE and IoU; the object's edge next to the ignore band still counts as
    edge: that is where the pseudo mask ends). A single tensor (deep supervision off) has no edge term.
    The edge BCE is recorded as component ``"edge"`` of output 0.
    """

    def __init__(self, loss, weights=None, edge_weight: float = 4.0, edge_kind: str = "dist",
                 normalise: str = "component", ignore_label: int | None = 2):
        super().__init__(loss, weights)
        if edge_kind not in EDGE_KINDS:
            raise ValueError(f"edge_kind must be one of {EDGE_KINDS}, got {edge_kind!r}")
        self.edge_weight, self.edge_kind, self.normalise = float(edge_weight), edge_kind, normalise
        self.ignore_label = ignore_label

    def forward(self, outputs, targets) -> torch.Tensor:
        if not isinstance(outputs, (list, tuple)):
            return super().forward(outputs, targets)
        *seg, edge = outputs
        total = super().forward(seg, targets[: len(seg)] if isinstance(targets, (list, tuple)) else targets)
        target = targets[0] if isinstance(targets, (list, tuple)) else targets
        if edge.shape[1] != 1 or edge.shape[2:] != target.shape[2:]:
            raise ValueError(f"edge output {tuple(edge.shape)} must be (B, 1) at the target's size {tuple(target.shape)}")
        valid = None if self.ignore_label is None else target != self.ignore_label
        g_e = edge_targets((target == 1).float(), self.edge_kind, self.normalise)
        bce_e = masked_sigmoid_bce(edge, g_e, valid)
        if 0 in self._sums:
            sums = self._sums[0]
            sums["edge"] = bce_e.detach() + sums.get("edge", 0)
        return total + self.edge_weight * bce_e


class nnUNetTrainerWeakAHRNetEdge(nnUNetTrainerWeakAHRNet):
    """The weak-label AHRNet trainer with an edge head (``AHRNet(edge_head=True)``) and the edge loss."""

    edge_kind: str = "dist"
    edge_weight: float = 4.0
    edge_normalise: str = "component"

    @classmethod
    def arch_kwargs(cls) -> tuple[dict, list[str]]:
        kwargs, requires_import = super().arch_kwargs()
        return {**kwargs, "edge_head": True}, requires_import

    @property
    def component_names(self) -> tuple[str, ...]:
        names = super().component_names
        return names[:-1] + ("edge",) + names[-1:]

    def _build_loss(self):
        base = super()._build_loss()
        return EdgeDeepSupervision(base.loss, base.weights, self.edge_weight, self.edge_kind, self.edge_normalise,
                                   self.label_manager.ignore_label)

    def initialize(self):
        super().initialize()
        self.print_to_log_file(f"edge head: target {self.edge_kind}, weight {self.edge_weight} (E2Net Eq. 3)")
