"""Putting adapters on a decoder: side paths beside the untouched base layers, or merged into the weights.

`AdapterStack` is a list of adapters with their scales (add / remove / set_scale / names). `apply(decoder)`
makes the decoder match it: each targeted projection becomes an `AdaptedLinear` (the base layer, plain or
quantized, plus the (delta, scale) pairs it was given), and a projection no adapter targets any more gets its
base layer back, the very same module, so unloading restores the model exactly. Layers are swapped the MLX way
(`update_modules`), and the scales live in the adapted layers, never on the deltas: one adapter's deltas may
sit in two stacks, or twice in one, at different scales. Changing a scale costs an `apply`, no reload.

Fused adapters (`fuse=True`) are merged into the weights when `apply` meets a decoder without them; for a
quantized base that means dequantize, add, re-quantize, which rounds the merged weights again. Taking a fused
adapter off needs the base weights back, so the pipeline reloads the DiT for it (`needs_fresh_weights`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from ..errors import AdapterError
from ..limits import ADAPTER_SCALE
from .deltas import Delta
from .formats import Adapter, read_adapter

_FUSED = "_acestep_fused"  # the (name, scale) pairs merged into a decoder's weights


class AdaptedLinear(nn.Module):
    """A base linear layer with adapter side paths: `base(x) + Σ scale_i · delta_i(x)`; a DoRA adapter adds
    `(g - 1) · (base(x) + its side path)` with its row gain `g`, as PEFT composes it."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters: dict[str, Delta] = {}  # the parameters (training's gradients are keyed by these names)
        self._scales: dict[str, float] = {}  # "_": not parameters
        self._gains: dict[str, tuple[tuple, mx.array]] = {}  # DoRA: ((delta, scale, base weight), gain) per adapter

    def set_adapters(self, pairs: dict[str, tuple[Delta, float]]) -> None:
        """The (delta, scale) pairs this layer applies, by adapter name, in order."""
        self.adapters = {name: delta for name, (delta, _) in pairs.items()}
        self._scales = {name: float(scale) for name, (_, scale) in pairs.items()}

    def _gain(self, name: str, delta: Delta, scale: float) -> mx.array:
        key = (id(delta), scale, id(self.base.weight))  # a later fused adapter replaces the base weight
        cached = self._gains.get(name)
        if cached is None or cached[0] != key:
            gain = delta.dora_gain(dense_weight(self.base), scale)
            mx.eval(gain)
            cached = self._gains[name] = (key, gain)
        return cached[1]

    def __call__(self, x: mx.array) -> mx.array:
        y = out = self.base(x)
        for name, delta in self.adapters.items():
            scale = self._scales[name]
            if not scale:  # scale 0 costs nothing and is exactly the base
                continue
            side = delta(x, scale)
            out = out + side
            if "magnitude" in delta:
                out = out + (self._gain(name, delta, scale).astype(y.dtype) - 1) * (y + side)
        return out


def has_dora(module: nn.Module) -> bool:
    """Whether a DoRA adapter is applied anywhere in `module`: its row gain is cached between calls by evaluating
    it, which a compiled (traced) forward cannot do."""
    return any(
        "magnitude" in delta
        for m in module.modules()
        if isinstance(m, AdaptedLinear)
        for name, delta in m.adapters.items()
        if m._scales.get(name)
    )


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
    """A number in ADAPTER_SCALE (one place for the rule: the API, the CLI and the stack use it)."""
    low, high = ADAPTER_SCALE
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not low <= scale <= high:  # NaN fails too
        raise AdapterError(f"{what} must be a number from {low:g} to {high:g}, got {scale!r}")
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


@dataclass
class _Entry:
    adapter: Adapter
    scale: float
    fused: bool = False


class AdapterStack:
    """Adapters in load order, each with its scale; `apply` puts them on a decoder."""

    def __init__(self):
        self._entries: dict[str, _Entry] = {}

    def add(
        self, path: str | Path, decoder_targets: dict, scale: float = 1.0, name: str | None = None, fuse: bool = False
    ) -> Adapter:
        """Read an adapter file or folder (checked against `decoder_targets`) and add it."""
        scale = check_scale(scale)
        return self.add_adapter(read_adapter(path, decoder_targets, name), scale, fuse)

    def add_adapter(self, adapter: Adapter, scale: float = 1.0, fuse: bool = False) -> Adapter:
        scale = check_scale(scale)
        if fuse and any("magnitude" in delta for delta in adapter.deltas.values()):
            # refused here, before anything is merged: its rescaling depends on the weights it is applied to
            raise AdapterError(f"{adapter.name}: DoRA adapters are applied unfused (fuse=False)")
        if adapter.name in self._entries:
            raise AdapterError(f"an adapter named {adapter.name!r} is already loaded (give another name, or unload it)")
        self._entries[adapter.name] = _Entry(adapter, scale, fuse)
        return adapter

    def _entry(self, name: str) -> _Entry:
        if name not in self._entries:
            known = ", ".join(self._entries) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {known})")
        return self._entries[name]

    def remove(self, name: str) -> None:
        self._entry(name)
        del self._entries[name]

    def clear(self) -> None:
        self._entries.clear()

    def set_scale(self, name: str, scale: float) -> None:
        scale = check_scale(scale)
        self._entry(name).scale = scale

    def names(self) -> list[str]:
        return list(self._entries)

    def loaded(self) -> list[tuple[str, float]]:
        """(name, scale) of each adapter, in load order."""
        return [(n, e.scale) for n, e in self._entries.items()]

    def adapter(self, name: str) -> Adapter:
        return self._entry(name).adapter

    def _fused_signature(self) -> tuple:
        return tuple((n, e.scale) for n, e in self._entries.items() if e.fused)

    def needs_fresh_weights(self, decoder: nn.Module | None) -> bool:
        """Whether `decoder` holds merged adapters that are no longer wanted as they are."""
        if decoder is None:
            return False
        have, want = getattr(decoder, _FUSED, ()), self._fused_signature()
        return have != want[: len(have)]

    def apply(self, decoder: nn.Module, extra: Sequence[tuple[Adapter, float]] = ()) -> None:
        """Make `decoder` carry exactly this stack's adapters (and `extra` (adapter, scale) pairs, unfused: one
        call's adapters)."""
        if self.needs_fresh_weights(decoder):
            raise AdapterError("internal: the DiT holds merged adapters that were changed; it must be reloaded")
        modules = dict(decoder.named_modules())
        have = getattr(decoder, _FUSED, ())
        for name, entry in self._entries.items():
            if entry.fused and (name, entry.scale) not in have:
                try:
                    _fuse(modules, entry.adapter, entry.scale)
                except BaseException:
                    # some layers may be merged already: mark the weights as matching no stack, so the next call
                    # reloads them instead of merging this adapter into them a second time
                    object.__setattr__(decoder, _FUSED, (("\0partly merged", -1.0),))
                    raise
        object.__setattr__(decoder, _FUSED, self._fused_signature())
        side = [(n, e.adapter, e.scale) for n, e in self._entries.items() if not e.fused]
        side += [(adapter.name, adapter, check_scale(scale)) for adapter, scale in extra]
        wanted: dict[str, dict[str, tuple[Delta, float]]] = {}
        for name, adapter, scale in side:
            for path, delta in adapter.deltas.items():
                wanted.setdefault(path, {})[name] = (delta, scale)
        swaps = []
        for path in targets(decoder):
            current = modules[path]
            if path in wanted:
                layer = current if isinstance(current, AdaptedLinear) else AdaptedLinear(current)
                dtype = _compute_dtype(layer)
                for delta, _ in wanted[path].values():
                    delta.cast(dtype)
                layer.set_adapters(wanted[path])
                if layer is not current:
                    swaps.append((path, layer))
            elif isinstance(current, AdaptedLinear):
                swaps.append((path, current.base))  # the very base module back
        if swaps:
            decoder.update_modules(tree_unflatten(swaps))


def _fuse(modules: dict[str, nn.Module], adapter: Adapter, scale: float) -> None:
    quantized = False
    for path, delta in adapter.deltas.items():
        layer = base_of(modules[path])
        update = delta.dense() * scale
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
            f"adapter {adapter.name!r} was merged into quantized weights and re-quantized: this rounds "
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
