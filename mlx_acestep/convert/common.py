"""What every component converter shares: options, writing a component folder, casting and quantizing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .. import __version__
from ..errors import AceStepError
from ..loading import LAYOUT_VERSION, WEIGHTS_FILE
from ..quantization import MODES, quantize_model

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


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


def write_component(
    out: Path, component: str, model: nn.Module, fields: dict, opts: ConvertOptions, quantization: dict | None, sources: list[Path], root: Path
) -> None:
    """Write config.json, model.safetensors and manifest.json for one component."""
    out.mkdir(parents=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out / WEIGHTS_FILE), weights, metadata={"format": "mlx"})
    config = {
        **{k: v for k, v in fields.items() if not k.startswith("_")},
        "component": component,
        "layout_version": LAYOUT_VERSION,
        "dtype": opts.dtype,
        "quantization": quantization,
    }
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


def cast_and_quantize(
    model: nn.Module, opts: ConvertOptions, keep: tuple[str, ...] = (), at_least_8: tuple[str, ...] = ()
) -> tuple[dict | None, str]:
    model.set_dtype(DTYPES[opts.dtype])
    bits = MODES[opts.quantize]
    if bits is None:
        return None, opts.dtype
    block = quantize_model(model, bits, opts.group_size, keep, at_least_8)
    if not block["layers"]:
        return block, f"{opts.dtype} (no quantizable layers: only linear layers quantize in MLX, not convolutions)"
    at_8 = len(block.get("layer_bits", {}))
    return block, f"{opts.dtype}, {len(block['layers']) - at_8} layers at {bits} bits" + (f", {at_8} at 8 bits" if at_8 else "")
