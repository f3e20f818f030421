"""Named HRNet stage configurations (HRNet-W18/W32/W48) and their validation.

These are the published ImageNet HRNet configurations (Wang et al., TPAMI 2020, Table 1;
identical to timm's ``hrnet_w18/w32/w48`` ``cfg_cls`` entries, which a test checks):

* stem: two 3x3 stride-2 convs (``stem_channels`` = 64) -> 1/4 resolution;
* stage 1: one branch, 4 bottlenecks of 64 planes (256 output channels);
* stage 2: 1 module, 2 branches; stage 3: 4 modules, 3 branches; stage 4: 3 modules,
  4 branches; 4 basic blocks per branch; branch widths C, 2C, 4C, 8C at 1/4 ... 1/32.

AHRNet (Sec. 2.1) states ``F_k`` has ``2^(k+4)`` channels at ``1/2^(k+1)`` resolution,
k = 1..4, i.e. the W32 widths (32, 64, 128, 256): ``"w32"`` is the default.

A config is a JSON-serialisable dict ``{"stem_channels": int, "stages": [stage, ...]}``
with ``stage = {"block": "basic"|"bottleneck", "num_modules": int, "num_blocks": [...],
"num_channels": [...]}`` (one entry per branch). Rules enforced by
:func:`resolve_hrnet_config`: stage 1 has one branch and one module (it is a plain block
sequence, HRNet's ``layer1``); every later stage adds exactly one branch (HRNet's
transition: the new branch is a stride-2 conv of the previous lowest resolution).
"""
from __future__ import annotations

import copy

_STAGE_KEYS = {"block", "num_modules", "num_blocks", "num_channels"}
_TOP_KEYS = {"stem_channels", "stages"}


def _published(width: int) -> dict:
    return {
        "stem_channels": 64,
        "stages": [
            {"block": "bottleneck", "num_modules": 1, "num_blocks": [4], "num_channels": [64]},
            {"block": "basic", "num_modules": 1, "num_blocks": [4, 4],
             "num_channels": [width, 2 * width]},
            {"block": "basic", "num_modules": 4, "num_blocks": [4, 4, 4],
             "num_channels": [width, 2 * width, 4 * width]},
            {"block": "basic", "num_modules": 3, "num_blocks": [4, 4, 4, 4],
             "num_channels": [width, 2 * width, 4 * width, 8 * width]},
        ],
    }


#: the published HRNet-W18/W32/W48 configs; read with :func:`resolve_hrnet_config`
HRNET_CONFIGS: dict[str, dict] = {f"w{c}": _published(c) for c in (18, 32, 48)}


def resolve_hrnet_config(config: str | dict) -> dict:
    """Return a validated deep copy of a named (``"w18"``, ``"w32"``, ``"w48"``) or explicit config.

    The caller's dict is never mutated (docs/STYLE.md §7). Unknown keys are rejected.
    """
    if isinstance(config, str):
        if config not in HRNET_CONFIGS:
            raise ValueError(f"unknown HRNet config {config!r}; named configs: {sorted(HRNET_CONFIGS)}")
        config = HRNET_CONFIGS[config]
    if not isinstance(config, dict):
        raise TypeError(f"config must be a name or a dict, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    unknown = set(cfg) - _TOP_KEYS
    if unknown or "stages" not in cfg:
        raise ValueError(f"HRNet config needs keys {sorted(_TOP_KEYS)}; unknown: {sorted(unknown)}")
    cfg.setdefault("stem_channels", 64)
    stages = cfg["stages"]
    if len(stages) < 2:
        raise ValueError("an HRNet config needs at least two stages")
    for s, stage in enumerate(stages):
        unknown = set(stage) - _STAGE_KEYS
        missing = _STAGE_KEYS - set(stage)
        if unknown or missing:
            raise ValueError(f"stage {s + 1}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        if stage["block"] not in ("basic", "bottleneck"):
            raise ValueError(f"stage {s + 1}: block must be 'basic' or 'bottleneck', got {stage['block']!r}")
        stage["num_blocks"] = [int(n) for n in stage["num_blocks"]]
        stage["num_channels"] = [int(n) for n in stage["num_channels"]]
        if len(stage["num_blocks"]) != len(stage["num_channels"]):
            raise ValueError(f"stage {s + 1}: num_blocks and num_channels need one entry per branch")
        if int(stage["num_modules"]) < 1 or min(stage["num_blocks"]) < 1:
            raise ValueError(f"stage {s + 1}: num_modules and num_blocks must be >= 1")
        if len(stage["num_channels"]) != s + 1:
            raise ValueError(f"stage {s + 1} must have {s + 1} branches (HRNet adds one branch per stage), "
                             f"got {len(stage['num_channels'])}")
    if stages[0]["num_modules"] != 1:
        raise ValueError("stage 1 is a plain block sequence: num_modules must be 1")
    return cfg
