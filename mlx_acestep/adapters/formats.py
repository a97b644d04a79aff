"""Reading adapter files into deltas keyed by the decoder's module paths (`layers.3.self_attn.q_proj`).

Three formats (what the reference's trainers and the ecosystem write):

* PEFT folder (its names and config fields: `peft.py`, which writes it too);
* ComfyUI single file: keys under `diffusion_model.` (or `diffusion_model.decoder.`), `lora_A/lora_B` or
  `lora_down/lora_up`, an optional per-module `.alpha` (none: scale 1);
* LyCORIS LoKr: `lokr_weights.safetensors` (or any file whose keys are `lycoris_*.lokr_*`), keys
  `lycoris_layers_{i}_{self_attn|cross_attn}_{q|k|v|o}_proj.lokr_{w1|w2|w2_a|w2_b|w1_a|w1_b}`, `.alpha`.
  As LyCORIS: a low-rank factor makes the scale `alpha / r`; with both factors full it is 1.

Every key must land on a decoder projection of the right shape, or reading fails in one line naming the file
and the key: an adapter is applied whole or not at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..errors import AdapterError
from ..limits import ADAPTER_VALUE_MAX
from ..safetensors_io import read_header, read_safetensors
from . import peft
from .deltas import Delta, LoKrDelta, LoRADelta

PEFT_CONFIG, PEFT_WEIGHTS, LOKR_WEIGHTS = peft.CONFIG, peft.WEIGHTS, "lokr_weights.safetensors"
# Where the reference's trainer and the ecosystem root the decoder: stripped before matching a module path.
PREFIXES = (f"{peft.ROOT}decoder.", peft.ROOT, "diffusion_model.decoder.", "diffusion_model.", "decoder.")
LORA_PARTS = {peft.DOWN: "down", "lora_down": "down", peft.UP: "up", "lora_up": "up"}  # PEFT's and ComfyUI's
LOKR_PARTS = ("lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_w1", "lokr_w2")


@dataclass
class Adapter:
    """One adapter file's deltas, keyed by decoder module path."""

    name: str
    path: Path
    format: str  # peft | comfyui | lokr
    deltas: dict[str, Delta] = field(default_factory=dict)

    def summary(self) -> str:
        ranks = sorted({d.rank for d in self.deltas.values() if d.rank is not None})
        scales = sorted({round(d.scale, 6) for d in self.deltas.values()})
        kinds = sorted({p.rsplit(".", 2)[-2] for p in self.deltas})  # self_attn / cross_attn
        return (
            f"{self.name}: {self.format}, {len(self.deltas)} modules ({', '.join(kinds)}), "
            f"rank {'/'.join(map(str, ranks)) or 'full'}, alpha/r {'/'.join(f'{s:g}' for s in scales)}"
        )

    @property
    def nbytes(self) -> int:
        from mlx.utils import tree_flatten

        return sum(v.nbytes for d in self.deltas.values() for _, v in tree_flatten(d.parameters()))


def read_adapter(path: str | Path, targets: dict[str, tuple[int, int]], name: str | None = None) -> Adapter:
    """Read an adapter and check it against `targets` (module path -> (out, in) of the decoder's projections)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AdapterError(f"{path}: no such adapter file or folder")
    if path.is_dir():
        if (path / LOKR_WEIGHTS).is_file() and not (path / PEFT_CONFIG).is_file():
            file, config = path / LOKR_WEIGHTS, None
        elif not (path / PEFT_CONFIG).is_file():
            raise AdapterError(
                f"{path}: no {PEFT_CONFIG} (a PEFT adapter folder holds {PEFT_CONFIG} and "
                f"{PEFT_WEIGHTS}; a LoKr folder {LOKR_WEIGHTS})"
            )
        else:
            file, config = path / PEFT_WEIGHTS, peft.read_config(path / PEFT_CONFIG)
            if not file.is_file():
                raise AdapterError(f"{path}: {PEFT_CONFIG} without {PEFT_WEIGHTS}")
    else:
        file = path
        beside = path.parent / PEFT_CONFIG
        config = peft.read_config(beside) if path.name == PEFT_WEIGHTS and beside.is_file() else None
    header, metadata, _ = read_header(file)
    keys = list(header)
    if not keys:
        raise AdapterError(f"{file}: holds no tensors")
    name = name or (path.stem if path.is_file() else path.name)
    tensors = read_safetensors(file)
    if metadata.get("algo") == "lokr" or any(".lokr_" in k for k in keys):
        adapter = Adapter(name, path, "lokr", _lokr_deltas(file, tensors, targets))
    elif any(part in LORA_PARTS for k in keys for part in k.split(".")):
        fmt = "peft" if config is not None or keys[0].startswith(peft.ROOT) else "comfyui"
        adapter = Adapter(name, path, fmt, _lora_deltas(file, tensors, targets, config))
    else:
        raise AdapterError(
            f"{file}: no LoRA or LoKr keys (first key {keys[0]!r}); expected PEFT lora_A/lora_B, "
            "ComfyUI lora_down/lora_up or LyCORIS lokr_w1/lokr_w2"
        )
    if not adapter.deltas:
        raise AdapterError(f"{file}: no adapter weights found")
    _check_values(file, adapter)
    return adapter


def _check_values(file: Path, adapter: Adapter) -> None:
    """Finite factors and file scales within ADAPTER_VALUE_MAX, named by layer (see limits.py for why)."""
    parts = []
    for path, delta in adapter.deltas.items():
        if not math.isfinite(delta.scale) or abs(delta.scale) > ADAPTER_VALUE_MAX:
            raise AdapterError(f"{file}: {path}: scale (alpha / rank) {delta.scale:g} is not a usable number")
        parts += [(f"{path}.{part}", value) for part, value in tree_flatten(delta.parameters())]
    # every factor's largest magnitude in one evaluation (NaN propagates through max), not one sync per tensor
    biggest = mx.stack([mx.abs(v.astype(mx.float32)).max() for _, v in parts]).tolist()
    for (name, _), value in zip(parts, biggest):
        if not math.isfinite(value) or value > ADAPTER_VALUE_MAX:
            what = "non-finite values" if not math.isfinite(value) else f"values up to {value:.3g}"
            raise AdapterError(
                f"{file}: {name} holds {what} (a trained adapter's are of order 1): damaged or not an adapter"
            )


# -- PEFT / ComfyUI LoRA ----------------------------------------------------------------------------------


def _module_path(file: Path, key: str, module: str, targets: dict) -> str:
    """The decoder path of `module` (the part of `key` that names a layer), or a one-line error naming `key`."""
    for prefix in PREFIXES:
        if module.startswith(prefix):
            module = module[len(prefix) :]
            break
    if module not in targets:
        where = (
            "outside the decoder (adapters apply to the DiT decoder's attention projections only)"
            if re.match(r"(encoder|lyric_encoder|timbre_encoder|text_encoder|tokenizer|detokenizer)\b", module)
            else "which this model has no projection for"
        )
        raise AdapterError(f"{file}: key {key!r} targets {module!r}, {where}")
    return module


def _lora_deltas(file: Path, tensors: dict, targets: dict, config: dict | None) -> dict[str, Delta]:
    pairs: dict[str, dict] = {}
    for key, value in tensors.items():
        parts = key.split(".")
        if peft.MAGNITUDE in parts:  # DoRA: ...q_proj.lora_magnitude_vector[.default][.weight]
            at = parts.index(peft.MAGNITUDE)
            pairs.setdefault(_module_path(file, key, ".".join(parts[:at]), targets), {})["magnitude"] = value
            continue
        if parts[-1] == "alpha":
            module = _module_path(file, key, ".".join(parts[:-1]), targets)
            pairs.setdefault(module, {})["alpha"] = value
            continue
        # ...lora_A.weight | ...lora_A.default.weight | ...lora_down.weight
        names = [i for i, p in enumerate(parts) if p in LORA_PARTS]
        if not names:
            raise AdapterError(f"{file}: key {key!r} is neither a LoRA weight nor an alpha")
        at = names[-1]
        module = _module_path(file, key, ".".join(parts[:at]), targets)
        pairs.setdefault(module, {})[LORA_PARTS[parts[at]]] = value
    rslora = peft.uses_rslora(config)
    deltas = {}
    for module, entry in pairs.items():
        if "down" not in entry or "up" not in entry:
            missing = "lora_A/lora_down" if "down" not in entry else "lora_B/lora_up"
            raise AdapterError(f"{file}: {module} has no {missing} weight")
        down, up = entry["down"], entry["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise AdapterError(
                f"{file}: {module}: lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)} do not form a low-rank pair"
            )
        rank = int(down.shape[0])
        if (int(up.shape[0]), int(down.shape[1])) != targets[module]:
            raise AdapterError(
                f"{file}: {module}: the adapter is {up.shape[0]}x{down.shape[1]}, the model's layer is "
                f"{targets[module][0]}x{targets[module][1]} (an adapter for another model?)"
            )
        if config:
            alpha = peft.module_alpha(file, config, module, rank)
        else:
            alpha = entry.get("alpha", float(rank))  # ComfyUI: no alpha means scale 1
        scale = _scale(file, module, alpha, math.sqrt(rank) if rslora else rank)
        magnitude = entry.get("magnitude")
        if peft.uses_dora(config) and magnitude is None:
            raise AdapterError(f"{file}: {module}: use_dora is set but the file has no lora_magnitude_vector for it")
        if magnitude is not None and tuple(magnitude.shape) != (targets[module][0],):
            raise AdapterError(
                f"{file}: {module}: lora_magnitude_vector has shape {tuple(magnitude.shape)}, "
                f"expected ({targets[module][0]},)"
            )
        deltas[module] = LoRADelta(_mx(down), _mx(up), scale, None if magnitude is None else _mx(magnitude))
    return deltas


# -- LyCORIS LoKr -------------------------------------------------------------------------------------------


def _lokr_module(file: Path, key: str, targets: dict) -> str:
    """`lycoris_layers_3_self_attn_q_proj` -> `layers.3.self_attn.q_proj` (matched against the decoder's paths)."""
    flat = key.rsplit(".", 1)[0]
    flat = flat[len("lycoris_") :] if flat.startswith("lycoris_") else flat
    by_flat = {p.replace(".", "_"): p for p in targets}
    if flat not in by_flat:
        raise AdapterError(f"{file}: key {key!r} names no projection of this decoder")
    return by_flat[flat]


def _lokr_deltas(file: Path, tensors: dict, targets: dict) -> dict[str, Delta]:
    modules: dict[str, dict] = {}
    for key, value in tensors.items():
        part = key.rsplit(".", 1)[-1]
        if part == "dora_scale":
            raise AdapterError(f"{file}: key {key!r}: DoRA LoKr adapters are not supported yet")
        if part not in (*LOKR_PARTS, "alpha"):
            raise AdapterError(f"{file}: key {key!r} is not a LoKr weight (lokr_w1, lokr_w2, lokr_w2_a/_b, alpha)")
        modules.setdefault(_lokr_module(file, key, targets), {})[part] = value
    deltas = {}
    for module, entry in modules.items():
        factors = []
        for w in ("lokr_w1", "lokr_w2"):
            if w in entry:
                factors.append((_mx(entry[w]),))
            elif f"{w}_a" in entry and f"{w}_b" in entry:
                factors.append((_mx(entry[f"{w}_a"]), _mx(entry[f"{w}_b"])))
            else:
                raise AdapterError(f"{file}: {module} has no {w} (nor {w}_a and {w}_b)")
        delta = LoKrDelta(factors[0], factors[1], 1.0)
        for parts in (delta.w1, delta.w2):
            if any(p.ndim != 2 for p in parts) or (len(parts) == 2 and parts[0].shape[1] != parts[1].shape[0]):
                raise AdapterError(
                    f"{file}: {module}: LoKr factors of shapes {[tuple(p.shape) for p in parts]} do not fit"
                )
        if delta.shape != targets[module]:
            raise AdapterError(
                f"{file}: {module}: the adapter is {delta.shape[0]}x{delta.shape[1]}, the model's layer "
                f"is {targets[module][0]}x{targets[module][1]} (an adapter for another model?)"
            )
        if delta.rank is not None and "alpha" in entry:  # LyCORIS: alpha / r with a low-rank factor, else 1
            delta.scale = _scale(file, module, entry["alpha"], delta.rank)
        deltas[module] = delta
    return deltas


def _mx(a) -> mx.array:
    return mx.array(a.astype("float32"))


def _scale(file, module: str, alpha, divisor: float) -> float:
    """alpha / divisor (r, or sqrt(r) for rsLoRA), with alpha a number or a one-value tensor: finite, or an error
    (a NaN scale merged into the weights would silence the model without a word)."""
    try:
        value = float(np.asarray(alpha).reshape(-1)[0]) if not isinstance(alpha, (int, float)) else float(alpha)
    except (TypeError, ValueError, IndexError):
        raise AdapterError(f"{file}: {module}: alpha {alpha!r} is not a number") from None
    if not math.isfinite(value) or not divisor:
        raise AdapterError(f"{file}: {module}: alpha {value} over rank {divisor} is not a finite scale")
    return value / divisor
