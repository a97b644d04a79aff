"""The PEFT adapter folder, read and written in this one module (every key and config name lives here).

A folder holds `adapter_config.json` (`r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`, `use_rslora`,
`use_dora`, ...) and `adapter_model.safetensors`, keys `base_model.model.layers.{i}.{self_attn|cross_attn}.
{q|k|v|o}_proj.lora_{A|B}[.default].weight`: the layout the reference's trainer writes and this project's
trainer writes too, so what is trained is what `--lora`, the reference and ComfyUI load.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import BAD_JSON, AdapterError
from ..files import atomic_file, write_text
from ..safetensors_io import read_safetensors
from .deltas import LoRADelta

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
ROOT = "base_model.model."  # where PEFT roots the wrapped model (the decoder, in the reference's trainer)
DOWN, UP, MAGNITUDE = "lora_A", "lora_B", "lora_magnitude_vector"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ATTENTION = {"self": "self_attn", "cross": "cross_attn"}  # the trainer's target kinds -> the decoder's module names


# What PEFT reads for an `adapter_config.json` without `lora_alpha`: LoraConfig's default (peft 0.21), not the rank.
PEFT_DEFAULT_ALPHA = 8


def weight_key(path: str, part: str) -> str:
    """The key of one factor (`DOWN` or `UP`) of the layer at decoder path `path`, as PEFT saves it."""
    return f"{ROOT}{path}.{part}.weight"


# -- reading ----------------------------------------------------------------------------------------------


def read_config(file: Path) -> dict:
    """`adapter_config.json`, checked: a LoRA, with a positive finite `r` and `lora_alpha` where given."""
    try:
        config = json.loads(file.read_text())
    except (OSError, *BAD_JSON) as e:
        raise AdapterError(f"{file}: not a readable JSON file ({e.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{file}: not a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(
            f"{file}: peft_type {config['peft_type']!r} is not supported (LORA only; LoKr as LyCORIS files)"
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if key in config and not _positive(value):
            raise AdapterError(f"{file}: {key} must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        _check_patterns(file, key, config.get(key))
    return config


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_patterns(file: Path, key: str, patterns) -> None:
    """PEFT's module-name patterns are regular expressions mapped to positive numbers; a bad one is named here,
    not met as a traceback when the first layer is matched."""
    if patterns is None:
        return
    if not isinstance(patterns, dict):
        raise AdapterError(f"{file}: {key} must be an object of pattern: number, got {type(patterns).__name__}")
    for pattern, value in patterns.items():
        try:
            _matcher(pattern)  # as matched: `(?i)q_proj` compiles alone, not after the prefix
        except (re.error, OverflowError) as e:  # OverflowError: a repeat count past the engine's (a{4294967296})
            raise AdapterError(f"{file}: {key} pattern {pattern!r} is not a valid regular expression ({e})") from None
        if not _positive(value):
            raise AdapterError(f"{file}: {key}[{pattern!r}] must be a positive number, got {value!r}")


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key that matches the end of the module's name."""
    for key, value in (patterns or {}).items():
        if _matcher(key).fullmatch(module):
            return value
    return default


def _matcher(key: str) -> re.Pattern:
    """PEFT's pattern `key`, matched against the end of a module's dotted name."""
    return re.compile(rf"(.*\.)?{key}")


def module_alpha(file: Path, config: dict, module: str, rank: int):
    """The alpha of `module` under `config` (its rank checked against the config's), as PEFT resolves it."""
    want = _pattern_value(config.get("rank_pattern"), module, config.get("r", rank))
    if want != rank:
        raise AdapterError(f"{file}: {module}: rank {rank} in the weights, {want} in {CONFIG}")
    return _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", PEFT_DEFAULT_ALPHA))


def uses_rslora(config: dict | None) -> bool:
    """rsLoRA scales by alpha / sqrt(r) instead of alpha / r."""
    return bool((config or {}).get("use_rslora"))


def uses_dora(config: dict | None) -> bool:
    return bool((config or {}).get("use_dora"))


def load_adapter_tensors(deltas: Mapping[str, LoRADelta], file: Path) -> None:
    """Read factors written by `adapter_tensors` back into `deltas` (a training checkpoint: same paths, shapes)."""
    state = read_safetensors(file)
    for path, delta in deltas.items():
        try:
            down, up = state[weight_key(path, DOWN)], state[weight_key(path, UP)]
        except KeyError as e:
            raise AdapterError(f"{file}: no {e.args[0]} (the checkpoint is damaged, or of another run)") from None
        if down.shape != delta.down.shape or up.shape != delta.up.shape:
            raise AdapterError(
                f"{file}: {path} has shapes {down.shape} / {up.shape}, this run's {delta.down.shape} / "
                f"{delta.up.shape} (the checkpoint is damaged, or of another run)"
            )
        delta.down, delta.up = mx.array(down).astype(delta.down.dtype), mx.array(up).astype(delta.up.dtype)


# -- writing ----------------------------------------------------------------------------------------------


def adapter_tensors(deltas: Mapping[str, LoRADelta]) -> dict[str, np.ndarray]:
    """The factors under PEFT's keys, float32 (the alpha / r scale lives in the config, not in the tensors)."""
    out = {}
    for path, delta in deltas.items():
        out[weight_key(path, DOWN)] = np.array(delta.down.astype(mx.float32))
        out[weight_key(path, UP)] = np.array(delta.up.astype(mx.float32))
    return out


def target_modules(kinds: tuple[str, ...]) -> list[str] | str:
    """PEFT's `target_modules` for the attention kinds given: the projection names, or a regex for some kinds."""
    if set(kinds) == set(ATTENTION):
        return list(PROJECTIONS)
    return rf".*\.({'|'.join(ATTENTION[k] for k in kinds)})\.({'|'.join(PROJECTIONS)})"


def peft_config(rank: int, alpha: float, dropout: float, kinds: tuple[str, ...], base_model: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": None,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": target_modules(kinds),
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "base_model_name_or_path": base_model,
        "inference_mode": True,
        "fan_in_fan_out": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
    }


def save_peft_folder(folder: Path, deltas: Mapping[str, LoRADelta], config: dict, card: str) -> None:
    """adapter_config.json, adapter_model.safetensors and README.md into `folder` (each written atomically)."""
    from safetensors.numpy import save

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / WEIGHTS) as tmp:
        Path(tmp).write_bytes(save(adapter_tensors(deltas), metadata={"format": "pt"}))
    write_text(folder / CONFIG, json.dumps(config, indent=2))
    write_text(folder / "README.md", card)
