"""``nnUNetTrainerWeak``: the one base of every weak-label trainer (AHRNet Sec. 2.2-2.3, Sec. 3).

The base fixes the order of its parts once (``nnUNetTrainerWeak -> ShortSchedule ->
nnUNetTrainer``); trainers set class attributes, and the HRNet/AHRNet trainers derive from
:class:`~nnunet_ulseg.training.ahrnet.nnUNetTrainerWeakAHRNet`, which adds the network.

* Loss (``seg_loss``): ``"bce_iou"``, AHRNet's ``l_seg = BCE + IoU`` (Eq. 3) on
  ``p = softmax[:, 1]``; or ``"dice_ce"``, nnU-Net's own ``DC_and_CE_loss`` exactly as
  ``nnUNetTrainer._build_loss`` builds it (to isolate RLS against nnU-Net's default,
  Table 1 "nnUNet" vs "nnUNet+RLS").  Plus ``rls_weight * l_rls`` (Eq. 2; 0.1,
  lambda1 = 1, lambda2 = 3) once the schedule switches it on, on every evaluated output
  (the paper is silent on which outputs; this is the same weight everywhere).  Ignore
  pixels are excluded by BCE, IoU, Dice and CE.
* RLS switch (``rls_start``): "we do not add l_rls for training until the model converges
  using only l_seg".  ``"fraction"`` (default): at ``floor(rls_start_fraction * num_epochs)``
  (half way; a 1-epoch run uses RLS from the start, which is what a smoke test wants).
  ``"plateau"``: when the epoch-mean training l_seg stops improving, between
  ``rls_min_start_fraction`` and ``rls_start_fraction`` (:mod:`~nnunet_ulseg.training.rls_switch`).
  Both are re-derived from the epoch and nnU-Net's checkpointed logger on resume; the log
  says at which epoch and why RLS came on.
* Deep-supervision weights (``ds_weight_scheme``, a trainer attribute): nnU-Net's own for
  nnU-Net's U-Net, whose 5-6 outputs reach 1/32 resolution; the AHRNet trainers use the
  paper's plain sum over their three outputs (``"equal"``).
* Optimiser (``optimizer_recipe``): ``"nnunet"`` (SGD, poly; rows of a benchmark then
  differ in network and loss only) or ``"ahrnet"`` (Adam 1e-3, x0.1 at 1/2 and 3/4 of
  the epochs, Sec. 3; :mod:`~nnunet_ulseg.training.optim`).
* Logging: per epoch, the mean unweighted components of the highest-resolution output
  (``train_bce``, ``train_iou`` or ``train_dice``, ``train_ce``; ``train_rls``; ``train_seg``
  = l_seg) and the switch ``rls_on`` (0/1) go to the training log and to nnU-Net's logger,
  which is checkpointed.  The deep-supervision wrapper keeps the per-output means.  Under
  DDP the means are all-reduced before they are logged, so every rank sees the same
  history and the plateau rule switches all ranks at the same epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import distributed as dist

from nnunet_ulseg.losses.compound import DiceCERLSLoss, WeakSegLoss
from nnunet_ulseg.training.ds import ImageDeepSupervision, deep_supervision_weights
from nnunet_ulseg.training.optim import AHRNET_LR, AHRNET_LR_GAMMA, AHRNET_LR_MILESTONES, ahrnet_optimizer
from nnunet_ulseg.training.rls_switch import rls_on_at, start_epoch
from nnunet_ulseg.training.schedule import ShortSchedule

SEG_LOSSES = ("bce_iou", "dice_ce")
OPTIMIZER_RECIPES = ("nnunet", "ahrnet")


class nnUNetTrainerWeak(ShortSchedule, nnUNetTrainer):
    """nnU-Net's U-Net with the weak-label loss; every behaviour is a class attribute below."""

    # --- schedule (ShortSchedule): None = nnU-Net's 1000 x 250; ``_Nepochs`` variants set it
    short_num_epochs: int | None = None
    # --- loss
    #: "bce_iou" (AHRNet Eq. 3) or "dice_ce" (nnU-Net's DC_and_CE_loss)
    seg_loss: str = "bce_iou"
    #: add the regional level set term after the l_seg phase
    use_rls: bool = False
    #: "rls": I' = pseudo mask scaled x2 about its centre; "image": whole image (paper's LS row)
    rls_region: str = "rls"
    rls_weight: float = 0.1
    rls_lambda1: float = 1.0
    rls_lambda2: float = 3.0
    #: divide l_rls by the intensity variance inside I' (``losses/level_set.py``); False = Eq. 2 literally
    rls_normalize_intensity: bool = True
    # --- RLS switch (rls_switch.py)
    #: "fraction" or "plateau"
    rls_start: str = "fraction"
    #: fraction of the epochs trained with l_seg only ("plateau": the latest switch)
    rls_start_fraction: float = 0.5
    #: "plateau": never before this fraction of the epochs
    rls_min_start_fraction: float = 0.25
    #: "plateau": relative improvement of l_seg at or below which it has converged
    rls_plateau_tol: float = 0.02
    #: "plateau": epochs whose best l_seg the latest epoch is compared with
    rls_plateau_patience: int = 3
    # --- deep supervision: "nnunet" (1/2^i, last off) or "equal" (AHRNet's plain sum)
    ds_weight_scheme: str = "nnunet"
    # --- optimiser: "nnunet" (SGD + poly) or "ahrnet" (Adam + steps, Sec. 3)
    optimizer_recipe: str = "nnunet"
    ahrnet_initial_lr: float = AHRNET_LR
    lr_milestones: tuple = AHRNET_LR_MILESTONES
    lr_gamma: float = AHRNET_LR_GAMMA

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.seg_loss not in SEG_LOSSES:
            raise ValueError(f"{type(self).__name__}.seg_loss must be one of {SEG_LOSSES}, got {self.seg_loss!r}")
        if self.optimizer_recipe not in OPTIMIZER_RECIPES:
            raise ValueError(f"{type(self).__name__}.optimizer_recipe must be one of {OPTIMIZER_RECIPES}, "
                             f"got {self.optimizer_recipe!r}")
        # validates rls_start and the fractions now rather than at the first epoch
        rls_on_at(0, 1, self.rls_start, self.rls_start_fraction, min_start_fraction=self.rls_min_start_fraction)
        if self.optimizer_recipe == "ahrnet":
            self.initial_lr = self.ahrnet_initial_lr

    # ------------------------------------------------------------------ loss
    @property
    def component_names(self) -> tuple[str, ...]:
        """The logged components: the loss's own, then ``seg`` (their l_seg), ``rls`` last."""
        own = tuple(c for c in self.loss.loss.components if c != "rls")
        return own + ("seg", "rls")

    def _build_loss(self):
        if self.label_manager.has_regions or len(self.label_manager.foreground_labels) != 1:
            raise ValueError(
                f"{type(self).__name__} trains one lesion class (labels background/lesion[/ignore]); "
                f"this dataset has foreground labels {self.label_manager.foreground_labels}"
            )
        if self.enable_deep_supervision:
            weights = deep_supervision_weights(len(self._get_deep_supervision_scales()), self.ds_weight_scheme,
                                               ddp=self.is_ddp, compiled=self._do_i_compile())
        else:
            weights = None
        return ImageDeepSupervision(self._build_output_loss(), weights)

    def _build_output_loss(self):
        """The loss of one output, RLS off (the schedule switches it)."""
        ignore = self.label_manager.ignore_label
        rls = dict(rls_weight=self.rls_weight, use_rls=False, region=self.rls_region, lambda1=self.rls_lambda1,
                   lambda2=self.rls_lambda2, ignore_label=ignore, normalize_intensity=self.rls_normalize_intensity)
        if self.seg_loss == "bce_iou":
            return WeakSegLoss(**rls)
        # nnU-Net's own loss, built by nnU-Net's own code; only its per-output part is kept
        seg = nnUNetTrainer._build_loss(self)
        return DiceCERLSLoss(getattr(seg, "loss", seg), **rls)

    def _output_loss(self):
        return self.loss.loss

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        if self.optimizer_recipe == "nnunet":
            return super().configure_optimizers()
        return ahrnet_optimizer(self.network.parameters(), self.initial_lr, self.weight_decay, self.num_epochs,
                                self.lr_milestones, self.lr_gamma)

    # ------------------------------------------------------------------ RLS schedule
    @property
    def rls_start_epoch(self) -> int:
        """The fraction rule's switch epoch (``"plateau"``: the latest possible one)."""
        return start_epoch(self.rls_start_fraction, self.num_epochs)

    def _history(self, key: str) -> list:
        return list(self.logger.local_logger.my_fantastic_logging.get(key, []))[: self.current_epoch]

    def rls_decision(self) -> tuple[bool, str]:
        """``(on, why)`` for the current epoch, from the logged history of the epochs before it."""
        if not self.use_rls:
            return False, "use_rls is off"
        return rls_on_at(self.current_epoch, self.num_epochs, self.rls_start, self.rls_start_fraction,
                         self._history("train_seg"), self._history("rls_on"), self.rls_min_start_fraction,
                         self.rls_plateau_tol, self.rls_plateau_patience)

    def _log_keys(self) -> list[str]:
        return [f"train_{name}" for name in self.component_names] + ["rls_on"]

    def init_log_keys(self) -> None:
        """Add our keys to nnU-Net's logger (it accepts only known keys), one entry per past epoch."""
        local = self.logger.local_logger.my_fantastic_logging
        for key in self._log_keys():
            values = local.setdefault(key, [])
            # a checkpoint written without this key: pad, so the lists stay one entry per epoch
            values.extend([float("nan")] * (self.current_epoch - len(values)))

    def on_train_start(self):
        super().on_train_start()
        self.init_log_keys()
        if not self.use_rls:
            return
        if self.rls_start == "fraction":
            rule = f"from epoch {self.rls_start_epoch} of {self.num_epochs}"
        else:
            rule = (f"when l_seg plateaus (relative improvement <= {self.rls_plateau_tol:g} on the best of "
                    f"{self.rls_plateau_patience} epochs), from epoch "
                    f"{start_epoch(self.rls_min_start_fraction, self.num_epochs)}, at the latest at "
                    f"{self.rls_start_epoch} of {self.num_epochs}")
        self.print_to_log_file(f"RLS ({self.rls_region}, weight {self.rls_weight}) on {rule}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        on, why = self.rls_decision()
        loss = self._output_loss()
        if on and not loss.use_rls:
            self.print_to_log_file(f"regional level set loss switched on (region {self.rls_region}) at epoch "
                                   f"{self.current_epoch}: {why}")
        loss.use_rls = on
        self.logger.log("rls_on", float(on), self.current_epoch)
        self.loss.pop_component_means()

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: dict) -> dict:
        self.loss.image = batch["data"]
        try:
            return super().train_step(batch)
        finally:
            self.loss.image = None

    def validation_step(self, batch: dict) -> dict:
        self.loss.image = batch["data"]
        try:
            return super().validation_step(batch)
        finally:
            self.loss.image = None

    # ------------------------------------------------------------------ logging
    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        per_output = self.loss.pop_component_means()
        top = per_output[min(per_output)] if per_output else {}  # highest-resolution evaluated output
        names = self.component_names
        means = np.array([top.get(k, np.nan) for k in names], dtype=np.float64)
        if self.is_ddp:
            t = torch.tensor(means, device=self.device, dtype=torch.float64)
            dist.all_reduce(t)
            means = (t / dist.get_world_size()).cpu().numpy()
        for name, value in zip(names, means):
            self.logger.log(f"train_{name}", float(value), self.current_epoch)
        self.print_to_log_file("train components: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(names, means)))

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.loss.pop_component_means()
