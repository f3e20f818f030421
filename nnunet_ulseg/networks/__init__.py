"""Networks: AHRNet (HRNet backbone, dual/scale attention, DE decoder), AHRNet Sec. 2.1;
E²Net (Res2Net backbone, R2UNet, edge branch, DCFF), E²Net Sec. 2;
CoSegNet (Siamese dilated ResNet, co-attention, D1/D2), co-segmentation paper Sec. 2.2."""
from nnunet_ulseg.networks.ahrnet import (NETWORK_CLASS_NAME, AHRNet, ahrnet_arch_kwargs,
                                          deep_supervision_scales, deep_supervision_strides)
from nnunet_ulseg.networks.configs import HRNET_CONFIGS, resolve_hrnet_config
from nnunet_ulseg.networks.coseg import CoSegNet, coseg_arch_kwargs
from nnunet_ulseg.networks.dcff import DeepCrossFeatureFusion
from nnunet_ulseg.networks.e2net import TABLE3_ROWS, E2Net, e2net_arch_kwargs
from nnunet_ulseg.networks.hrnet import HRNetBackbone
from nnunet_ulseg.networks.pretrained import load_pretrained_hrnet
from nnunet_ulseg.networks.r2unet import R2UNet
from nnunet_ulseg.networks.res2net import RES2NET_CONFIGS, Res2NetBackbone, load_pretrained_res2net

__all__ = ["AHRNet", "NETWORK_CLASS_NAME", "ahrnet_arch_kwargs", "deep_supervision_scales",
           "deep_supervision_strides", "HRNET_CONFIGS", "resolve_hrnet_config", "HRNetBackbone",
           "load_pretrained_hrnet", "E2Net", "e2net_arch_kwargs", "TABLE3_ROWS", "R2UNet",
           "DeepCrossFeatureFusion", "Res2NetBackbone", "RES2NET_CONFIGS", "load_pretrained_res2net",
           "CoSegNet", "coseg_arch_kwargs"]
