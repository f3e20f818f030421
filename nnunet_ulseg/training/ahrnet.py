"""AHRNet / HRNet as the network of the weak-label trainer base (AHRNet Sec. 2.1, Table 2).

:class:`nnUNetTrainerWeakAHRNet` is :class:`~nnunet_ulseg.training.weak.nnUNetTrainerWeak`
with the network part; the ablation switches ``use_decoder`` (DE), ``use_dual_attention``
(DA) and ``use_scale_attention`` (SA) select the rows of Table 2 (1: none, 2: DE, 3: DE+DA,
4: DE+DA+SA = AHRNet), ``hrnet_config`` the backbone width.

* The network is built by the trainer's ``build_network_architecture`` (which nnU-Net's
  predictor also calls), not from the plans' U-Net block, so any nnU-Net 2d plans work
  unchanged and ``nnUNetv2_predict -tr <trainer>`` rebuilds the same network.
* Deep-supervision targets: nnU-Net derives them from the U-Net's pooling strides in the
  plans; AHRNet's outputs are at 1, 1/2, 1/4 of the input (DE decoder, paper's p3, p2,
  p1) or 1 (baseline head), so the scales come from the network instead.
* Loss weights over the three outputs: the paper's plain sum (``ds_weight_scheme = "equal"``,
  declared on this trainer class).
* Patch size: HRNet needs sides divisible by 32.  nnU-Net's 2d patches nearly always
  are; when one is not, the plans handed to nnU-Net are changed to the next multiple of
  32 *before* the trainer is built, so training, checkpoint and the ``plans.json`` that
  ``nnUNetv2_predict`` reads agree, and the training log says why.
* Pretrained weights (paper: ImageNet init): read only from a local file, given by the
  ``ULSEG_HRNET_WEIGHTS`` environment variable or the ``pretrained_hrnet_path`` class
  attribute, in timm's ``hrnet_w18/32/48`` layout.  Nothing is ever downloaded; without
  a file the network trains from scratch and the log says so.
* Normalisation: InstanceNorm (affine), nnU-Net's choice, instead of HRNet's BatchNorm.
  nnU-Net trains 2d with batches as small as 2, where BatchNorm's running statistics
  lag the weights; early in training the eval-mode network then produced infinite
  logits in nnU-Net's validation (seen after 2 iterations).  InstanceNorm has no
  running statistics, so training and inference normalise alike; pretrained HRNet
  BatchNorm scales and shifts load into its affine parameters.
* Optimiser and schedule stay nnU-Net's (SGD, poly) by default, so rows of the benchmark
  differ in network and loss only.  The paper's Adam (1e-3, steps at epochs 40 and 60 of 80)
  is ``optimizer_recipe = "ahrnet"`` (``nnUNetTrainerAHRNetRLSAdam``).
"""
from __future__ import annotations

import copy
import math
import os

import torch

from nnunet_ulseg.networks.ahrnet import NETWORK_CLASS_NAME, ahrnet_arch_kwargs, deep_supervision_scales
from nnunet_ulseg.training.weak import nnUNetTrainerWeak

SIZE_DIVISOR = 32
WEIGHTS_ENV = "ULSEG_HRNET_WEIGHTS"


def patch_multiple_of(plans: dict, configuration: str, divisor: int = SIZE_DIVISOR) -> tuple[dict, list | None]:
    """``(plans, old_patch)``: a copy with the configuration's patch rounded up to ``divisor``.

    ``old_patch`` is None (and the plans are returned unchanged) when nothing changes.
    Follows ``inherits_from`` like nnU-Net's PlansManager does (a shallow update), writing
    the new patch into the configuration itself.
    """
    configs = plans["configurations"]
    if configuration not in configs:
        raise ValueError(f"configuration {configuration!r} not in plans (have {sorted(configs)})")
    chain, name = [], configuration
    while name is not None:
        chain.append(configs[name])
        name = configs[name].get("inherits_from")
    patch = next(c["patch_size"] for c in chain if "patch_size" in c)
    new = [int(math.ceil(p / divisor) * divisor) for p in patch]
    if new == list(patch):
        return plans, None
    plans = copy.deepcopy(plans)
    plans["configurations"][configuration]["patch_size"] = new
    return plans, list(patch)


#: Table 2 row of each (DE, DA, SA) combination
ABLATION_ROWS = {(False, False, False): "HRNet baseline (Table 2 row 1)", (True, False, False): "+DE (row 2)",
                 (True, True, False): "+DE+DA (row 3)", (True, True, True): "AHRNet +DE+DA+SA (row 4)"}


class nnUNetTrainerWeakAHRNet(nnUNetTrainerWeak):
    """The weak-label base with an HRNet/AHRNet network instead of nnU-Net's U-Net."""

    hrnet_config: str = "w32"
    use_decoder: bool = True
    use_dual_attention: bool = True
    use_scale_attention: bool = True
    ds_weight_scheme = "equal"
    #: 4 = HRNet's stem (the paper); 2 = every branch at twice the resolution, for small crops
    #: (64 px: the stride-4 branch would be 16 x 16 px), at about 4x the backbone's compute
    stem_stride: int = 4
    #: local timm-layout HRNet weights (``ULSEG_HRNET_WEIGHTS`` wins when set)
    pretrained_hrnet_path: str | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans, self._old_patch = patch_multiple_of(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)

    @classmethod
    def arch_kwargs(cls) -> tuple[dict, list[str]]:
        return ahrnet_arch_kwargs(config=cls.hrnet_config, decoder=cls.use_decoder,
                                  dual_attention=cls.use_dual_attention, scale_attention=cls.use_scale_attention,
                                  norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                                  stem_stride=cls.stem_stride)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        kwargs, requires_import = cls.arch_kwargs()
        return get_network_from_plans(NETWORK_CLASS_NAME, kwargs, requires_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        return deep_supervision_scales(self.use_decoder, self.stem_stride) if self.enable_deep_supervision else None

    def initialize(self):
        super().initialize()
        row = ABLATION_ROWS.get((self.use_decoder, self.use_dual_attention, self.use_scale_attention),
                                "custom ablation")
        self.print_to_log_file(f"network: {row}, HRNet {self.hrnet_config}, stem stride {self.stem_stride}")
        if self._old_patch is not None:
            self.print_to_log_file(f"patch size {self._old_patch} -> {self.configuration_manager.patch_size}: "
                                   f"HRNet needs sides divisible by {SIZE_DIVISOR}")
        path = os.environ.get(WEIGHTS_ENV) or self.pretrained_hrnet_path
        if not path:
            self.print_to_log_file(f"no pretrained HRNet weights ({WEIGHTS_ENV} unset): training from scratch")
            return
        from nnunet_ulseg.networks.pretrained import load_pretrained_hrnet

        net = self.network.module if self.is_ddp else self.network
        net = getattr(net, "_orig_mod", net)
        report = load_pretrained_hrnet(net, path)
        self.print_to_log_file(f"pretrained HRNet weights from {path}: {report['matched']} tensors matched, "
                               f"{report['missing']} missing, {report['unexpected']} unexpected")
