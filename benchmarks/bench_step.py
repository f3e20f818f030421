"""Training-step time of our trainers against nnU-Net's default, on the same nnU-Net plans.

A generated sample is converted and planned and preprocessed by nnU-Net; every
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
import copy
import statistics
import time

from _nnunet_setup import planned_sample, temp_root
from nnunet_ulseg.cli_args import help_text

DEFAULT_TRAINERS = ["nnUNetTrainer", "nnUNetTrainerBCEIoU", "nnUNetTrainerRLS", "nnUNetTrainerLS",
                    "nnUNetTrainerAHRNetW18", "nnUNetTrainerAHRNet", "nnUNetTrainerAHRNetW18RLS",
                    "nnUNetTrainerAHRNetRLS"]


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


def build_trainer(name: str, plans: dict, dataset_json: dict, batch: int | None, device: str):
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_cls = recursive_find_trainer_class_by_name(name)
    plans = {**copy.deepcopy(plans), "continue_training": False}  # run_training sets this; __init__ pops it
    trainer = trainer_cls(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                          device=torch.device(device))
    trainer.initialize()
    loss = getattr(trainer.loss, "loss", None)
    if getattr(trainer, "use_rls", False) and loss is not None:
        loss.use_rls = True
    trainer.network.train()
    return trainer, synthetic_batch(trainer, batch or trainer.configuration_manager.batch_size)


def time_interleaved(trainers: dict, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per ``train_step``; trainers take turns step by step, so a change in
    background load hits all of them alike and the ratios stay meaningful."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in trainers}
    for i in range(warmup + steps):
        for name, (trainer, batch) in trainers.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.train_step(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    plans, dataset_json, _ = planned_sample(root, args.lesions, seed=0, dataset_id=971, preprocess=True)
    cfg = plans["configurations"]["2d"]
    trainers = list(dict.fromkeys(["nnUNetTrainer"] + args.trainers))
    print(f"device {device}, torch threads {torch.get_num_threads()}, planned 2d patch {cfg['patch_size']}, "
          f"planned batch {cfg['batch_size']}")
    built = {name: build_trainer(name, plans, dataset_json, args.batch, device) for name in trainers}
    seconds = time_interleaved(built, args.steps, args.warmup, device)
    base = seconds["nnUNetTrainer"]
    print(f"{'trainer':34s} {'batch':>5s} {'ms/step':>9s} {'ratio':>7s} {'params (M)':>11s}")
    for name, (trainer, batch) in built.items():
        params = sum(p.numel() for p in trainer.network.parameters())
        print(f"{name:34s} {batch['data'].shape[0]:5d} {seconds[name] * 1000:9.1f} {seconds[name] / base:7.3f} "
              f"{params / 1e6:11.2f}")


if __name__ == "__main__":
    main()
