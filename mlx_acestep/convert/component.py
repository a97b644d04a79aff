"""Convert one component: read -> sanitize -> cast -> quantize -> save, one tensor at a time.

The source tensors are lazy MLX arrays (`safetensors_io.read_weights`): nothing is
read until a tensor is written. The model is built from its config but never
evaluated: its parameter tree gives the expected names and shapes, its module
tree the layers to quantize. Each tensor is then cast straight from its stored
dtype to the target (bf16 stays bf16 for a bf16 target), quantized if its layer
is, and written block of rows by block of rows (`write_sharded`), so peak memory
is one block (tens of MB), not a tensor and not the checkpoint.

A component folder holds `config.json` (the model's own fields plus component,
layout version, dtype and mlx-lm's `quantization` block), `model.safetensors`
(or shards with an index) in MLX layout, and `manifest.json` (sha256 of every
source file used).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import __version__
from ..errors import AceStepError
from ..limits import GROUP_SIZES
from ..loading import LAYOUT_VERSION, WEIGHTS_FILE, check_weights
from ..quantization import MODE, MODES, quantization_config, quantization_plan
from ..safetensors_io import Output, write_sharded

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}  # limits.DTYPE_CHOICES but "auto"
SHARD_BYTES = 2 * 2**30  # per output file; memory holds one block of rows (safetensors_io.write_sharded), not a shard


def resolve_dtype(dtype: str) -> str:
    """`auto` is bfloat16 where MLX runs on a GPU (Metal: the official weights' dtype, half the memory) and float32
    on MLX's CPU backend, which has no fast bfloat16 matmul; any other name is itself."""
    if dtype != "auto":
        return dtype
    return "float32" if mx.default_device() == mx.cpu else "bfloat16"


@dataclass
class ConvertOptions:
    dtype: str = "auto"  # resolved when made: the cache key and config.json record the concrete dtype
    quantize: str = "none"  # none | q8 | q4
    group_size: int = 64
    force: bool = False

    def __post_init__(self):
        self.dtype = resolve_dtype(self.dtype)

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise AceStepError(f"unsupported dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.quantize not in MODES:
            raise AceStepError(f"unsupported quantization {self.quantize!r} (choose from {', '.join(MODES)})")
        if self.group_size not in GROUP_SIZES:
            raise AceStepError(f"unsupported group size {self.group_size} (choose {', '.join(map(str, GROUP_SIZES))})")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_weights(
    model: nn.Module,
    weights: dict[str, mx.array],
    out: Path,
    opts: ConvertOptions,
    source: str,
    hint: Callable[[str], str] | None = None,
    shard_bytes: int | None = None,
) -> tuple[dict | None, str]:
    """Check `weights` (already sanitized) against `model`, then cast, quantize and write them into `out`.

    `weights` is emptied: the outputs hold the only references to the (lazy) source tensors.
    Returns (the quantization block, a summary).
    """
    check_weights(model, weights, source, hint=hint)  # every parameter of these models is a float: checked there
    dtype = DTYPES[opts.dtype]
    bits = MODES[opts.quantize]
    plan = (
        {}
        if bits is None
        else quantization_plan(
            model, bits, opts.group_size, getattr(model, "QUANTIZE_KEEP", ()), getattr(model, "QUANTIZE_AT_LEAST_8", ())
        )
    )
    outputs = [_output(key, weights.pop(key), dtype, plan, opts.group_size) for key in sorted(weights)]
    write_sharded(out, WEIGHTS_FILE, outputs, shard_bytes or SHARD_BYTES, metadata={"format": "mlx"})
    if bits is None:
        return None, opts.dtype
    block = quantization_config(plan, bits, opts.group_size)
    if not plan:
        return block, f"{opts.dtype} (no quantizable layers: only linear layers quantize in MLX, not convolutions)"
    at_8 = sum(1 for b in plan.values() if b != bits)
    return block, f"{opts.dtype}, {len(plan) - at_8} layers at {bits} bits" + (f", {at_8} at 8 bits" if at_8 else "")


def _output(key: str, value: mx.array, dtype: mx.Dtype, plan: dict[str, int], group_size: int) -> Output:
    """How one (sanitized, lazy) source tensor is written: cast, and quantized when its layer is in `plan`."""
    target = dtype if mx.issubdtype(value.dtype, mx.floating) else value.dtype
    row = 4 * int(np.prod(value.shape[1:])) if value.ndim else 4  # a float32 row: the largest transient per row
    layer, _, leaf = key.rpartition(".")
    if leaf == "weight" and layer in plan and value.ndim == 2:
        bits, (rows, cols) = plan[layer], value.shape
        shapes = ((rows, cols * bits // 32), (rows, cols // group_size), (rows, cols // group_size))

        def quantized(a: int, b: int):
            return tuple(mx.quantize(value[a:b].astype(target), group_size, bits, mode=MODE))

        return Output((key, f"{layer}.scales", f"{layer}.biases"), shapes, (mx.uint32, target, target), quantized, row)
    if value.ndim == 0:
        return Output((key,), ((),), (target,), lambda a, b: (value.astype(target),), row)
    return Output((key,), (tuple(value.shape),), (target,), lambda a, b: (value[a:b].astype(target),), row)


def write_component(
    out: Path,
    component: str,
    model: nn.Module,
    weights: dict[str, mx.array],
    fields: dict,
    opts: ConvertOptions,
    sources: list[Path],
    root: Path,
    source: str,
    hint: Callable[[str], str] | None = None,
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
        "sources": {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sources},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary
