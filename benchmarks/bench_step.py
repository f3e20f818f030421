"""Training-step time of our trainers against nnU-Net's default, on the same nnU-Net plans.

A generated sample is converted and planned by nnU-Net (no preprocessing needed); every
trainer is then found by name through nnU-Net's own lookup (``nnUNet_extTrainer``),
initialised from those plans, and its real ``train_step`` is timed on identical
synthetic batches of the planned patch size (lesion-like ellipse targets with an
ignore band).  Trainers with the regional level set are timed with RLS switched on,
i.e. in their more expensive phase.  Output: median ms/step and the ratio to
``nnUNetTrainer`` measured in the same run.

    python benchmarks/bench_step.py [--trainers nnUNetTrainerRLS ...] [--steps 6] [--batch B]
"""
from __future__ import annotations

import argparse
import statistics
import time

from _nnunet_setup import planned_sample, temp_root

DEFAULT_TRAINERS = ["nnUNetTrainer", "nnUNetTrainerBCEIoU", "nnUNetTrainerRLS", "nnUNetTrainerLS"]


def synthetic_batch(trainer, batch_size: int, seed: int = 0):
    import numpy as np
    import torch

    patch = trainer.configuration_manager.patch_size
    channels = trainer.num_input_channels
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(batch_size, channels, *patch, generator=g)
    yy, xx = np.mgrid[: patch[0], : patch[1]]
    target = np.zeros((batch_size, 1, *patch), np.float32)
    for b in range(batch_size):
        r = (0.15 + 0.1 * b / max(1, batch_size - 1)) * min(patch)
        d = ((yy - patch[0] / 2) / r) ** 2 + ((xx - patch[1] / 2) / (1.4 * r)) ** 2
        target[b, 0][d <= 1.2] = 2
        target[b, 0][d <= 1] = 1
    target = torch.from_numpy(target)
    if trainer.enable_deep_supervision:
        scales = trainer._get_deep_supervision_scales()
        targets = [torch.nn.functional.interpolate(target, scale_factor=tuple(s), mode="nearest-exact")
                   if any(x != 1 for x in s) else target for s in scales]
    else:
        targets = target
    return {"data": data, "target": targets}


def time_trainer(name: str, plans: dict, dataset_json: dict, steps: int, warmup: int, batch: int | None,
                 device: str) -> tuple[float, int, int]:
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_cls = recursive_find_trainer_class_by_name(name)
    trainer = trainer_cls(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                          device=torch.device(device))
    trainer.initialize()
    loss = getattr(trainer.loss, "loss", None)
    if getattr(trainer, "use_rls", False) and loss is not None:
        loss.use_rls = True
    bs = batch or trainer.configuration_manager.batch_size
    b = synthetic_batch(trainer, bs)
    trainer.network.train()
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.train_step(b)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    params = sum(p.numel() for p in trainer.network.parameters())
    return statistics.median(times), params, bs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the plans')")
    parser.add_argument("--lesions", type=int, default=40)
    parser.add_argument("--device", default=None)
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = temp_root(args.keep)
    plans, dataset_json, _ = planned_sample(root, args.lesions, seed=0, dataset_id=971, preprocess=False)
    cfg = plans["configurations"]["2d"]
    trainers = list(dict.fromkeys(["nnUNetTrainer"] + args.trainers))
    print(f"device {device}, torch threads {torch.get_num_threads()}, planned 2d patch {cfg['patch_size']}, "
          f"planned batch {cfg['batch_size']}")
    results = {}
    for name in trainers:
        results[name] = time_trainer(name, plans, dataset_json, args.steps, args.warmup, args.batch, device)
    base = results["nnUNetTrainer"][0]
    print(f"{'trainer':34s} {'batch':>5s} {'ms/step':>9s} {'ratio':>7s} {'params (M)':>11s}")
    for name, (sec, params, bs) in results.items():
        print(f"{name:34s} {bs:5d} {sec * 1000:9.1f} {sec / base:7.3f} {params / 1e6:11.2f}")


if __name__ == "__main__":
    main()
