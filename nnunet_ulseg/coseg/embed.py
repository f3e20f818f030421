"""Lesion embeddings from a trained encoder (co-segmentation paper Sec. 3.1, "clustering of the lesions ... using [25]").

Floor 2 (like ``training/``): torch and nnU-Net's predictor, nothing above ``conversion/``.

The paper clusters DeepLesion with the lesion embeddings of [25] (a CNN trained on
DeepLesion).  Ours come from a model trained here (no outside weights can be fetched):
any nnU-Net model of this project whose network has an ``.encoder`` (nnU-Net's U-Nets,
AHRNet/HRNet, CoSegNet).  The embedding of one lesion is the global average of the
encoder's deepest feature map (the bottleneck, the last element when the encoder returns
a list of skips), computed on a patch-sized tile centred on the crop.

Choices where the paper is silent:

* Tile: the preprocessed image (nnU-Net's normalisation) cropped or zero-padded about its
  centre to the plans' patch size.  Our crops are centred on the lesion's RECIST box
  (DESIGN "Crops"), so the tile is centred on the lesion; zero is the normalised mean,
  what nnU-Net's own sliding window pads with.
* Vectors are L2-normalised (:func:`normalise`) before k-means, so clusters group lesions
  by the direction of their features (appearance) rather than by feature magnitude,
  which follows image contrast.
* Only the first fold's weights are used when several are given: one embedding space.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def center_tile(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``image [C, *S]`` cropped or zero-padded about its centre to ``[C, *size]``.

    A 2d nnU-Net case stored as ``[C, 1, H, W]`` is first squeezed to ``[C, H, W]``.
    """
    image = np.asarray(image)
    size = tuple(int(s) for s in size)
    if image.ndim == len(size) + 2 and image.shape[1] == 1:
        image = image[:, 0]
    if image.ndim != len(size) + 1:
        raise ValueError(f"image of shape {image.shape} does not match a patch of size {size} "
                         f"(expected [C, {', '.join('*' * len(size))}])")
    out = np.zeros((image.shape[0], *size), dtype=np.float32)
    src, dst = [slice(None)], [slice(None)]
    for have, want in zip(image.shape[1:], size):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = image[tuple(src)]
    return out


def bottleneck(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The encoder's deepest feature map of ``x``, global-average-pooled to ``[B, channels]``."""
    net = getattr(network, "module", network)  # DDP
    net = getattr(net, "_orig_mod", net)  # torch.compile
    encoder = getattr(net, "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(net).__name__} has no .encoder: embeddings need an encoder "
                         f"(nnU-Net's U-Nets, AHRNet/HRNet and CoSegNet have one)")
    features = encoder(x)
    while isinstance(features, (list, tuple)):
        features = features[-1]
    return features.flatten(2).mean(dim=2)


@torch.no_grad()
def embed_tiles(network: nn.Module, tiles: Iterable[np.ndarray], batch_size: int = 16,
                device: torch.device | str = "cpu", progress: bool = True, total: int | None = None) -> np.ndarray:
    """``[n, channels]`` float32 embeddings of equally sized tiles ``[C, *patch]`` (eval mode)."""
    device = torch.device(device)
    network = network.to(device)
    was_training = network.training
    network.eval()
    out, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).to(device)
        out.append(bottleneck(network, x).float().cpu().numpy())
        batch.clear()

    try:
        for tile in tqdm(tiles, total=total, desc="embeddings", unit="lesion", disable=not progress):
            batch.append(np.asarray(tile, dtype=np.float32))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    finally:
        network.train(was_training)
    if not out:
        raise ValueError("no lesions to embed")
    return np.concatenate(out).astype(np.float32)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def load_encoder_model(model_dir: str, folds: Sequence[int | str] | None, checkpoint: str = "checkpoint_final.pth",
                       device: torch.device | str = "cpu"):
    """nnU-Net's predictor initialised from a trained model folder (its network, plans and dataset.json)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device(device), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), None if folds is None else tuple(folds), checkpoint)
    net = predictor.network
    if hasattr(net, "self_pair_when_odd"):
        net.self_pair_when_odd = True
    return predictor
