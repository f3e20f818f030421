"""Shared plumbing of the weak-label losses: input checks, the foreground probability, the ignore mask.

Conventions (all losses in this package):

- ``logits`` is the raw output of nnU-Net's default head, shape ``(B, 2, *spatial)`` with
  ``spatial`` = ``(H, W)`` or ``(D, H, W)``. For the labels ``{background: 0, lesion: 1, ignore: 2}``
  nnU-Net builds two softmax channels (the ignore label is not a head, DESIGN "nnU-Net v2.8 facts").
- The foreground probability of AHRNet's Eq. 2 and 3 is ``p = softmax(logits, 1)[:, 1]``. We keep the
  two-channel softmax head instead of a one-channel sigmoid head so that nnU-Net's network builder,
  predictor (softmax + argmax), label manager and validation Dice stay unchanged. For two channels
  ``softmax(logits)[:, 1] == sigmoid(logits[:, 1] - logits[:, 0])``, so this is the paper's
  sigmoid probability map with one redundant degree of freedom.
- ``target`` is the raw nnU-Net label map ``(B, 1, *spatial)`` with values 0/1 and ``ignore_label``
  (2 in our datasets). Any dtype; compared with ``==``.
- Everything is computed in float32 with autocast disabled, whatever the logits' dtype (fp16/bf16
  under nnU-Net's CUDA autocast): sums over ~10^5 pixels and squared intensity differences are not
  safe in half precision. The result is a float32 scalar connected to ``logits``.
"""
from contextlib import nullcontext
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def fp32_region(device_type: str):
    """Context in which autocast is off, so the ops below really run in the float32 we cast to.

    ``torch.autocast(..., enabled=False)`` is only entered for 'cuda' and 'cpu'; other backends (mps)
    reject the context even when disabled (comment in nnU-Net's ``train_step``), and have no autocast
    that could interfere anyway.
    """
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ValueError unless ``logits`` is (B, 2, *spatial) and ``target`` is (B, 1, *spatial)."""
    if logits.ndim not in (4, 5) or logits.shape[1] != 2:
        raise ValueError(
            f"logits must be (B, 2, H, W) or (B, 2, D, H, W) (two softmax channels: background, lesion), "
            f"got shape {tuple(logits.shape)}")
    if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[0] != logits.shape[0] \
            or target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"target must be (B, 1, *spatial) matching logits {tuple(logits.shape)}, "
            f"got shape {tuple(target.shape)}")


def foreground_log_probs(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(p, log p, log (1 - p))`` in float32, each (B, 1, *spatial), with p = softmax(logits)[:, 1].

    The logs come from ``log_softmax`` (log-sum-exp), so they are finite for any finite logits; this is
    the numerically stable form of the BCE of Eq. 3. Call inside :func:`fp32_region`.
    """
    log_sm = F.log_softmax(logits.float(), dim=1)
    log_p = log_sm[:, 1:2]
    log_q = log_sm[:, 0:1]
    return log_p.exp(), log_p, log_q


def split_target(target: torch.Tensor, ignore_label: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(g, valid)``: the float32 lesion indicator (target == 1) and the bool non-ignored mask.

    With ``ignore_label=None`` every pixel is valid. Ignored pixels have g = 0 (it is never used there).
    """
    g = (target == 1).float()
    if ignore_label is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        valid = target != ignore_label
    return g, valid


def spatial_axes(x: torch.Tensor) -> Tuple[int, ...]:
    """The spatial axes (2, 3[, 4]) of a (B, C, *spatial) tensor."""
    return tuple(range(2, x.ndim))
