"""ImageNet-pretrained HRNet weights for the AHRNet backbone (AHRNet Sec. 3: "its backbone is
initialized with ImageNet pre-trained weights").

Reads a LOCAL file (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``, or
``.safetensors``) holding a state dict in timm's ``hrnet_w18/w32/w48`` layout, which is also
the layout of the HRNet-Image-Classification checkpoints. Nothing is ever downloaded.

Key mapping (timm -> ours, :func:`timm_to_backbone_key`)::

    conv1 / bn1, conv2 / bn2              -> stem.0.conv / stem.0.norm, stem.1.conv / stem.1.norm
    layer1.{b}.<block>                    -> stages.0.{b}.<block>
    stage{s}.{m}.branches.{r}.{b}.<block> -> stages.{s-1}.{m}.branches.{r}.{b}.<block>
    stage{s}.{m}.fuse_layers.{i}.{j}.{0,1}      (j > i) -> stages.{s-1}.{m}.fuse.{i}.{j}.{conv,norm}
    stage{s}.{m}.fuse_layers.{i}.{j}.{k}.{0,1}  (j < i) -> stages.{s-1}.{m}.fuse.{i}.{j}.{k}.{conv,norm}
    transition{t}.{i}.{0,1}      (existing branch) -> transitions.{t-1}.{i}.0.{conv,norm}
    transition{t}.{i}.{k}.{0,1}  (new branch)      -> transitions.{t-1}.{i}.{k}.{conv,norm}
    <block>: conv{n} / bn{n} -> conv{n}.conv / conv{n}.norm; downsample.0 / .1 -> skip.conv / skip.norm

The classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``,
``classifier``) is skipped. First conv: the RGB kernel is copied for 3 input channels;
otherwise the mean over RGB is used for every input channel (a grey image replicated to
RGB then gives the same response per channel as the mean filter; we do not rescale by
3/C, so C > 1 identical channels respond C times the grey response).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from nnunet_ulseg.networks.hrnet import HRNetBackbone

_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "fc.")
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
_BLOCK_PARTS = {"conv1": "conv1.conv", "bn1": "conv1.norm", "conv2": "conv2.conv", "bn2": "conv2.norm",
                "conv3": "conv3.conv", "bn3": "conv3.norm", "downsample.0": "skip.conv",
                "downsample.1": "skip.norm"}
_CONV_OR_NORM = {"0": "conv", "1": "norm"}


def _block_key(rest: str) -> str | None:
    m = re.fullmatch(r"(conv\d|bn\d|downsample\.[01])\.(\w+)", rest)
    if m is None or m.group(1) not in _BLOCK_PARTS:
        return None
    return f"{_BLOCK_PARTS[m.group(1)]}.{m.group(2)}"


def timm_to_backbone_key(key: str) -> str | None:
    """Our backbone key for a timm HRNet key, or None if it has no counterpart."""
    m = re.fullmatch(r"(conv|bn)([12])\.(\w+)", key)
    if m:
        return f"stem.{int(m.group(2)) - 1}.{'conv' if m.group(1) == 'conv' else 'norm'}.{m.group(3)}"
    m = re.fullmatch(r"layer1\.(\d+)\.(.+)", key)
    if m:
        block = _block_key(m.group(2))
        return None if block is None else f"stages.0.{m.group(1)}.{block}"
    m = re.fullmatch(r"stage(\d+)\.(\d+)\.branches\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        block = _block_key(m.group(5))
        s, mod, r, b = (int(g) for g in m.group(1, 2, 3, 4))
        return None if block is None else f"stages.{s - 1}.{mod}.branches.{r}.{b}.{block}"
    m = re.fullmatch(r"stage(\d+)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.([01])\.(\w+)", key)
    if m:  # upsampling path j > i: Sequential(conv1x1, bn, upsample)
        s, mod, i, j = (int(g) for g in m.group(1, 2, 3, 4))
        return f"stages.{s - 1}.{mod}.fuse.{i}.{j}.{_CONV_OR_NORM[m.group(5)]}.{m.group(6)}"
    m = re.fullmatch(r"stage(\d+)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.(\d+)\.([01])\.(\w+)", key)
    if m:  # downsampling path j < i: Sequential of Sequential(conv3x3 s2, bn[, relu])
        s, mod, i, j, k = (int(g) for g in m.group(1, 2, 3, 4, 5))
        return f"stages.{s - 1}.{mod}.fuse.{i}.{j}.{k}.{_CONV_OR_NORM[m.group(6)]}.{m.group(7)}"
    m = re.fullmatch(r"transition(\d+)\.(\d+)\.([01])\.(\w+)", key)
    if m:  # existing branch with a width change: Sequential(conv3x3, bn, relu)
        t, i = int(m.group(1)), int(m.group(2))
        return f"transitions.{t - 1}.{i}.0.{_CONV_OR_NORM[m.group(3)]}.{m.group(4)}"
    m = re.fullmatch(r"transition(\d+)\.(\d+)\.(\d+)\.([01])\.(\w+)", key)
    if m:  # new branch: Sequential of Sequential(conv3x3 s2, bn, relu)
        t, i, k = (int(g) for g in m.group(1, 2, 3))
        return f"transitions.{t - 1}.{i}.{k}.{_CONV_OR_NORM[m.group(4)]}.{m.group(5)}"
    return None


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained HRNet weights not found: {path} (a local file is required; "
                                f"nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    if weight.shape[1] == in_channels:
        return weight
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)


def load_pretrained_hrnet(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Copy timm-layout HRNet weights from a local ``path`` into ``model``'s backbone.

    ``model`` is an :class:`~nnunet_ulseg.networks.ahrnet.AHRNet` (its ``encoder``) or an
    :class:`HRNetBackbone`. Returns a report ``{"matched", "missing", "unexpected",
    "skipped_head", "skipped_stats", "missing_keys", "unexpected_keys"}``: ``matched`` counts
    backbone tensors set from the file, ``missing`` backbone tensors the file lacks,
    ``unexpected`` file tensors without a counterpart (classification-head tensors are
    counted in ``skipped_head``; norm statistics the model's norm does not keep, e.g.
    InstanceNorm, in ``skipped_stats``). Shape mismatches (e.g. W32 weights for a W18 model)
    always raise; with ``strict`` missing or unexpected tensors raise too.
    """
    backbone = model.encoder if hasattr(model, "encoder") else model
    if not isinstance(backbone, HRNetBackbone):
        raise TypeError(f"expected an AHRNet or HRNetBackbone, got {type(model).__name__}")
    new, report = map_state_dict(path, backbone.state_dict(), timm_to_backbone_key, "stem.0.conv.weight",
                                 "backbone", "wrong HRNet width?", strict)
    backbone.load_state_dict(new, strict=False)
    return report


def map_state_dict(path, target: dict, key_map, first_conv_key: str, part: str, mismatch_hint: str,
                   strict: bool, head_prefixes: tuple[str, ...] = _HEAD_PREFIXES) -> tuple[dict, dict]:
    """Map a local checkpoint's tensors onto ``target`` (a module's state dict); the loaders' one loop.

    ``key_map(key)`` gives our key or ``None`` (keys under ``head_prefixes``, the classifier
    heads, are counted in ``skipped_head``);
    norm statistics our norm does not keep are counted in ``skipped_stats``; the first conv is
    adapted to the model's input channels (:func:`_adapt_first_conv`).  Shape mismatches always
    raise (``mismatch_hint`` says the likely cause); with ``strict`` missing or unexpected
    tensors raise too.  Returns the tensors to load and the report the loaders return.
    """
    source = _read_state_dict(path)
    new, mismatched, unexpected = {}, [], []
    skipped_head = skipped_stats = 0
    for key, tensor in source.items():
        ours = key_map(key)
        if ours is None:
            if key.startswith(head_prefixes):
                skipped_head += 1
            else:
                unexpected.append(key)
            continue
        if ours not in target:
            if ours.rsplit(".", 1)[-1] in _NORM_STATS:
                skipped_stats += 1
            else:
                unexpected.append(key)
            continue
        if ours == first_conv_key:
            tensor = _adapt_first_conv(tensor, target[ours].shape[1])
        if tensor.shape != target[ours].shape:
            mismatched.append(f"{key} {tuple(tensor.shape)} -> {ours} {tuple(target[ours].shape)}")
            continue
        new[ours] = tensor.to(dtype=target[ours].dtype)
    if mismatched:
        raise ValueError(f"{len(mismatched)} shape mismatches loading {path} ({mismatch_hint}): "
                         + "; ".join(mismatched[:5]))
    missing = sorted(set(target) - set(new))
    if strict and (missing or unexpected):
        raise ValueError(f"loading {path}: {len(missing)} {part} tensors missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return new, {"matched": len(new), "missing": len(missing), "unexpected": len(unexpected),
                 "skipped_head": skipped_head, "skipped_stats": skipped_stats,
                 "missing_keys": missing, "unexpected_keys": unexpected}
