"""Helpers shared by the network tests."""
import torch
from torch import nn


def conv_output_elements(model, x):
    """Elements of every Conv2d/ConvTranspose2d output during one forward (batch 1)."""
    total, hooks = [0], []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel())))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]
