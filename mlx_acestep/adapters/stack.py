"""Putting adapters on a decoder: side paths beside the untouched base layers, or merged into the weights.

`AdapterStack` is the pipeline's list of adapters with their scales. `apply(decoder)` makes the decoder match
it: each targeted projection becomes an `AdaptedLinear` (the base layer, plain or quantized, plus one delta per
adapter), and a projection no adapter targets any more gets its base layer back, the very same module, so
unloading restores the model exactly. Scales are read at call time: changing one costs nothing.

Fused adapters (`fuse=True`) are merged into the weights when `apply` meets a decoder without them; for a
quantized base that means dequantize, add, re-quantize, which rounds the merged weights again. Taking a fused
adapter off needs the base weights back, so the pipeline reloads the DiT for it (`needs_fresh_weights`).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .deltas import Delta
from .formats import Adapter, AdapterError, read_adapter

_FUSED = "_acestep_fused"  # the (name, scale) pairs merged into a decoder's weights


class AdaptedLinear(nn.Module):
    """A base linear layer with adapter side paths: `base(x) + Σ strength_i · delta_i(x)`; a DoRA adapter adds
    `(g - 1) · (base(x) + its side path)` with its row gain `g`, as PEFT composes it."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters: dict[str, Delta] = {}
        self._gains: dict[str, tuple[tuple, mx.array]] = {}  # DoRA: ((delta, strength, base weight), gain) per adapter

    def _gain(self, name: str, delta: Delta) -> mx.array:
        key = (id(delta), delta.strength, id(self.base.weight))  # a later fused adapter replaces the base weight
        cached = self._gains.get(name)
        if cached is None or cached[0] != key:
            gain = delta.dora_gain(dense_weight(self.base), delta.strength)
            mx.eval(gain)
            cached = self._gains[name] = (key, gain)
        return cached[1]

    def __call__(self, x: mx.array) -> mx.array:
        y = out = self.base(x)
        for name, delta in self.adapters.items():
            if not delta.strength:  # scale 0 costs nothing and is exactly the base
                continue
            side = delta(x, delta.strength)
            out = out + side
            if "magnitude" in delta:
                out = out + (self._gain(name, delta).astype(y.dtype) - 1) * (y + side)
        return out


def _mode(layer: nn.QuantizedLinear) -> dict:
    """The quantization mode as a keyword for `mx.(de)quantize` (none for affine: older MLX has no `mode`)."""
    mode = getattr(layer, "mode", "affine")
    return {"mode": mode} if mode != "affine" else {}


def dense_weight(module: nn.Module) -> mx.array:
    """The `[out, in]` weight of a plain or quantized linear layer, dequantized."""
    if isinstance(module, nn.QuantizedLinear):
        return mx.dequantize(
            module.weight, module.scales, module.get("biases"), module.group_size, module.bits, **_mode(module)
        )
    return module.weight


def check_scale(scale, what: str = "adapter scale") -> float:
    """A finite, non-negative number (one place for the rule: the API, the CLI and the stack use it)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise AdapterError(f"{what} must be a finite number >= 0, got {scale!r}")
    return float(scale)


def base_of(module: nn.Module) -> nn.Module:
    return module.base if isinstance(module, AdaptedLinear) else module


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out, in) of a plain or quantized linear layer."""
    module = base_of(module)
    if isinstance(module, nn.QuantizedLinear):
        return int(module.weight.shape[0]), int(module.weight.shape[1]) * 32 // module.bits
    return int(module.weight.shape[0]), int(module.weight.shape[1])


def _compute_dtype(module: nn.Module) -> mx.Dtype:
    module = base_of(module)
    return module.scales.dtype if isinstance(module, nn.QuantizedLinear) else module.weight.dtype


def targets(decoder: nn.Module) -> dict[str, tuple[int, int]]:
    """Every linear layer of the decoder an adapter may target: module path -> (out, in)."""
    out = {}
    for path, module in decoder.named_modules():
        if isinstance(module, AdaptedLinear):
            out[path] = linear_shape(module)
        elif isinstance(module, (nn.Linear, nn.QuantizedLinear)) and not path.endswith(".base"):
            out[path] = linear_shape(module)
    return out


def _get(root: nn.Module, path: str):
    node = root
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else getattr(node, part)
    return node


def _set(root: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = _get(root, parent_path) if parent_path else root
    if isinstance(parent, list):
        parent[int(leaf)] = value
    else:
        setattr(parent, leaf, value)


@dataclass
class Entry:
    adapter: Adapter
    scale: float
    fused: bool = False


class AdapterStack:
    """The adapters a pipeline applies, in load order, each with its scale."""

    def __init__(self):
        self.entries: dict[str, Entry] = {}

    def add(
        self, path: str | Path, decoder_targets: dict, scale: float = 1.0, name: str | None = None, fuse: bool = False
    ) -> Adapter:
        scale = check_scale(scale)
        adapter = read_adapter(path, decoder_targets, name)
        if fuse and any("magnitude" in delta for delta in adapter.deltas.values()):
            # refused here, before anything is merged: its rescaling depends on the weights it is applied to
            raise AdapterError(f"{adapter.name}: DoRA adapters are applied unfused (fuse=False)")
        if adapter.name in self.entries:
            raise AdapterError(f"an adapter named {adapter.name!r} is already loaded (give another name, or unload it)")
        self.entries[adapter.name] = Entry(adapter, scale, fuse)
        return adapter

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            known = ", ".join(self.entries) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {known})")
        return self.entries[name]

    def fused_signature(self) -> tuple:
        return tuple((n, e.scale) for n, e in self.entries.items() if e.fused)

    def needs_fresh_weights(self, decoder: nn.Module | None) -> bool:
        """Whether `decoder` holds merged adapters that are no longer wanted as they are."""
        if decoder is None:
            return False
        have, want = getattr(decoder, _FUSED, ()), self.fused_signature()
        return have != want[: len(have)]

    def apply(self, decoder: nn.Module, extra: list[Entry] = ()) -> None:
        """Make `decoder` carry exactly this stack's adapters (and `extra` ones, unfused, for one call)."""
        if self.needs_fresh_weights(decoder):
            raise AdapterError("internal: the DiT holds merged adapters that were changed; it must be reloaded")
        have = getattr(decoder, _FUSED, ())
        for name, entry in self.entries.items():
            if entry.fused and (name, entry.scale) not in have:
                try:
                    _fuse(decoder, entry)
                except BaseException:
                    # some layers may be merged already: mark the weights as matching no stack, so the next call
                    # reloads them instead of merging this adapter into them a second time
                    object.__setattr__(decoder, _FUSED, (("\0partly merged", -1.0),))
                    raise
        object.__setattr__(decoder, _FUSED, self.fused_signature())
        side = [(n, e) for n, e in self.entries.items() if not e.fused] + [(e.adapter.name, e) for e in extra]
        wanted: dict[str, dict[str, Delta]] = {}
        for name, entry in side:
            for path, delta in entry.adapter.deltas.items():
                delta.strength = entry.scale
                wanted.setdefault(path, {})[name] = delta
        for path in list(targets(decoder)):
            current = _get(decoder, path)
            if path in wanted:
                layer = current if isinstance(current, AdaptedLinear) else AdaptedLinear(current)
                dtype = _compute_dtype(layer)
                for delta in wanted[path].values():
                    delta.cast(dtype)
                layer.adapters = wanted[path]
                if layer is not current:
                    _set(decoder, path, layer)
            elif isinstance(current, AdaptedLinear):
                _set(decoder, path, current.base)  # the very base module back


def _fuse(decoder: nn.Module, entry: Entry) -> None:
    quantized = False
    for path, delta in entry.adapter.deltas.items():
        layer = base_of(_get(decoder, path))
        update = delta.dense() * entry.scale
        if isinstance(layer, nn.QuantizedLinear):
            quantized = True
            merged = (dense_weight(layer).astype(mx.float32) + update).astype(layer.scales.dtype)
            parts = mx.quantize(merged, layer.group_size, layer.bits, **_mode(layer))
            layer.weight, layer.scales = parts[0], parts[1]
            if len(parts) > 2 and parts[2] is not None:
                layer.biases = parts[2]
        else:
            layer.weight = (layer.weight.astype(mx.float32) + update).astype(layer.weight.dtype)
    if quantized:
        warnings.warn(
            f"adapter {entry.adapter.name!r} was merged into quantized weights and re-quantized: this rounds "
            "the merged weights again (unfused adapters keep the quantized base and the adapter apart)",
            stacklevel=3,
        )


_PATH_SPEC = re.compile(r"^(?P<path>.+?)(?::(?P<scale>[^:/\\]+))?$")


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """`PATH[:SCALE]` from the command line -> (path, scale); a path that exists as given wins over a scale."""
    if Path(spec).expanduser().exists():
        return spec, 1.0
    match = _PATH_SPEC.match(spec)
    path, scale = match.group("path"), match.group("scale")
    if scale is None:
        return spec, 1.0
    try:
        value = float(scale)
    except ValueError:
        raise AdapterError(
            f"--lora {spec}: {scale!r} is not a scale (PATH[:SCALE], e.g. style.safetensors:0.8)"
        ) from None
    return path, check_scale(value, f"--lora {spec}: the scale")
