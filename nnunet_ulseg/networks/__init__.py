"""Networks: AHRNet (HRNet backbone, dual/scale attention, DE decoder), AHRNet Sec. 2.1."""
from nnunet_ulseg.networks.ahrnet import (NETWORK_CLASS_NAME, AHRNet, ahrnet_arch_kwargs,
                                          deep_supervision_scales, deep_supervision_strides)
from nnunet_ulseg.networks.configs import HRNET_CONFIGS, resolve_hrnet_config
from nnunet_ulseg.networks.hrnet import HRNetBackbone
from nnunet_ulseg.networks.pretrained import load_pretrained_hrnet

__all__ = ["AHRNet", "NETWORK_CLASS_NAME", "ahrnet_arch_kwargs", "deep_supervision_scales",
           "deep_supervision_strides", "HRNET_CONFIGS", "resolve_hrnet_config", "HRNetBackbone",
           "load_pretrained_hrnet"]
