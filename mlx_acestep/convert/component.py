"""Convert one component: read -> sanitize -> cast -> quantize -> save, one tensor at a time.

The source tensors are lazy MLX arrays (`safetensors_io.read_weights`): nothing is
read until a tensor is written. The model is built from its config but never
evaluated: its parameter tree gives the expected names and shapes, its module
tree the layers to quantize. Each tensor is then cast straight from its stored
dtype to the target (bf16 stays bf16 for a bf16 target), quantized if its layer
is, and handed to a `ShardWriter` that writes a shard as soon as it is full, so
peak memory is a shard and a few tensors, not the checkpoint.

A component folder holds `config.json` (the model's own fields plus component,
layout version, dtype and mlx-lm's `quantization` block), `model.safetensors`
(or shards with an index) in MLX layout, and `manifest.json` (sha256 of every
source file used).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .. import __version__
from ..errors import AceStepError
from ..loading import LAYOUT_VERSION, WEIGHTS_FILE, check_weights
from ..quantization import MODE, MODES, quantization_config, quantization_plan
from ..safetensors_io import ShardWriter

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
SHARD_BYTES = 512 * 2**20  # what is held in memory before a shard is written


@dataclass
class ConvertOptions:
    dtype: str = "float32"
    quantize: str = "none"  # none | q8 | q4
    group_size: int = 64
    force: bool = False

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise AceStepError(f"unsupported dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.quantize not in MODES:
            raise AceStepError(f"unsupported quantization {self.quantize!r} (choose from {', '.join(MODES)})")
        if self.group_size not in (32, 64, 128):
            raise AceStepError(f"unsupported group size {self.group_size} (choose 32, 64 or 128)")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_weights(
    model: nn.Module, weights: dict[str, mx.array], out: Path, opts: ConvertOptions, source: str,
    hint: Callable[[str], str] | None = None, shard_bytes: int = SHARD_BYTES,
) -> tuple[dict | None, str]:
    """Check `weights` (already sanitized) against `model`, then cast, quantize and write them into `out`.

    `weights` is emptied as it is written, so each source tensor is freed once its output is on disk.
    Returns (the quantization block, a summary).
    """
    check_weights(model, weights, source, hint=hint)
    dtype = DTYPES[opts.dtype]
    bits = MODES[opts.quantize]
    plan = {} if bits is None else quantization_plan(
        model, bits, opts.group_size, getattr(model, "QUANTIZE_KEEP", ()), getattr(model, "QUANTIZE_AT_LEAST_8", ()))
    writer = ShardWriter(out, WEIGHTS_FILE, shard_bytes, metadata={"format": "mlx"})
    for key in sorted(weights):
        value = weights.pop(key)
        if mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(dtype)
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in plan:
            q, scales, biases = mx.quantize(value, opts.group_size, plan[layer], mode=MODE)
            writer.add(key, q)
            writer.add(f"{layer}.scales", scales)
            writer.add(f"{layer}.biases", biases)
        else:
            writer.add(key, value)
    writer.close()
    if bits is None:
        return None, opts.dtype
    block = quantization_config(plan, bits, opts.group_size)
    if not plan:
        return block, f"{opts.dtype} (no quantizable layers: only linear layers quantize in MLX, not convolutions)"
    at_8 = sum(1 for b in plan.values() if b != bits)
    return block, f"{opts.dtype}, {len(plan) - at_8} layers at {bits} bits" + (f", {at_8} at 8 bits" if at_8 else "")


def write_component(
    out: Path, component: str, model: nn.Module, weights: dict[str, mx.array], fields: dict, opts: ConvertOptions,
    sources: list[Path], root: Path, source: str, hint: Callable[[str], str] | None = None,
) -> str:
    """Write one component folder (weights, config.json, manifest.json); return the summary."""
    out.mkdir(parents=True)
    quantization, summary = write_weights(model, weights, out, opts, source, hint)
    config = {
        **{k: v for k, v in fields.items() if not k.startswith("_")},
        "component": component,
        "layout_version": LAYOUT_VERSION,
        "dtype": opts.dtype,
        "quantization": quantization,
    }
    if quantization:  # what Hugging Face tools read; mlx-lm writes both
        config["quantization_config"] = quantization
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    manifest = {
        "component": component,
        "layout_version": LAYOUT_VERSION,
        "converter": f"mlx-acestep {__version__}",
        "options": {k: v for k, v in asdict(opts).items() if k != "force"},
        "sources": {
            str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sources
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def parameter_bytes(model: nn.Module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))
