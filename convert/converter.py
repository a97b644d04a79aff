"""Convert a checkpoint root into one self-describing MLX folder per component.

DST/<component>/ holds `config.json` (layout version, component, dtype,
quantization block and the model's own fields), `model.safetensors` in MLX
layout and `manifest.json` (sha256 of every source file used). The whole of
DST is written in a temporary folder beside it and renamed at the end, so a
failure or an interrupt leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_acestep import __version__
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import LAYOUT_VERSION, WEIGHTS_FILE, check_weights, read_json
from mlx_acestep.oobleck import AutoencoderOobleck, OobleckConfig
from mlx_acestep.quantization import MODES, quantize_model
from mlx_acestep.safetensors_io import read_safetensors

from .layouts import LAYOUTS, SourceFolder, classify_single_folder
from .vae import source_key_hint, vae_to_mlx

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


@dataclass
class ConvertReport:
    converted: list[tuple[str, str]] = field(default_factory=list)  # (component folder, summary)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source folder, reason)


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


def _cast_and_quantize(model: nn.Module, opts: ConvertOptions, keep: tuple[str, ...] = ()) -> tuple[dict | None, str]:
    model.set_dtype(DTYPES[opts.dtype])
    bits = MODES[opts.quantize]
    if bits is None:
        return None, opts.dtype
    block = quantize_model(model, bits, opts.group_size, keep)
    if not block["layers"]:
        return block, f"{opts.dtype} (no quantizable layers: convolutions have no quantized form in MLX)"
    return block, f"{opts.dtype}, {len(block['layers'])} layers at {bits} bits"


def convert_vae(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    weights_path = folder / "diffusion_pytorch_model.safetensors"
    fields = read_json(config_path)
    try:
        model = AutoencoderOobleck(OobleckConfig.from_dict(fields))
    except (TypeError, ValueError) as e:
        raise AceStepError(f"{config_path}: invalid VAE config ({e})") from None
    state = read_safetensors(weights_path)
    weights = {k: mx.array(v) for k, v in vae_to_mlx(state, str(weights_path)).items()}
    check_weights(model, weights, str(weights_path), hint=source_key_hint)
    model.load_weights(list(weights.items()), strict=True)
    quantization, summary = _cast_and_quantize(model, opts)
    write_component(out, "vae", model, fields, opts, quantization, [config_path, weights_path], root)
    return f"{len(state)} tensors -> {len(weights)} ({summary})"


# kind -> converter; kinds without one are reported as skipped.
CONVERTERS: dict[str, Callable[[Path, Path, ConvertOptions, Path], str]] = {"vae": convert_vae}
NOT_YET = {
    "dit": "DiT decoder / condition encoder / FSQ conversion is not implemented yet",
    "text_encoder": "Qwen3 text encoder conversion is not implemented yet",
    "lm": "5 Hz planner LM conversion is not implemented yet",
}


def find_components(src: Path) -> list[tuple[SourceFolder, Path]]:
    for layout in LAYOUTS:
        found = layout.find(src)
        if found:
            return found
    if (src / "config.json").is_file():  # a single component folder passed directly
        spec = classify_single_folder(src, read_json(src / "config.json"))
        if spec is not None:
            return [(spec, src)]
    return []


def convert_checkpoints(
    src: str | Path, dst: str | Path, opts: ConvertOptions | None = None, log: Callable[[str], None] | None = None
) -> ConvertReport:
    """Convert every supported component under `src` into `dst` (atomically)."""
    opts = opts or ConvertOptions()
    opts.validate()
    log = log or (lambda msg: None)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise AceStepError(f"{src}: checkpoint folder not found")
    if dst.exists() and not opts.force:
        raise AceStepError(f"{dst}: already exists (pass --force to replace it)")
    if dst.exists() and not dst.is_dir():
        raise AceStepError(f"{dst}: exists and is not a folder")
    found = find_components(src)
    if not found:
        raise AceStepError(
            f"{src}: no ACE-Step 1.5 checkpoint folders found (expected vae/, acestep-v15-*/, Qwen3-Embedding-*/, acestep-5Hz-lm-*/)"
        )

    report = ConvertReport()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; DST should look like any folder
    try:
        for spec, folder in found:
            name = folder.name if folder != src else spec.kind
            converter = CONVERTERS.get(spec.kind)
            if converter is None:
                report.skipped.append((name, NOT_YET.get(spec.kind, "unsupported component")))
                log(f"skipped {name}: {report.skipped[-1][1]}")
                continue
            log(f"converting {name} ...")
            start = time.perf_counter()
            summary = converter(folder, tmp / name, opts, src)
            report.converted.append((name, summary))
            log(f"converted {name}: {summary} in {time.perf_counter() - start:.1f} s")
        if not report.converted:
            raise AceStepError(f"{src}: nothing to convert (" + "; ".join(f"{n}: {r}" for n, r in report.skipped) + ")")
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _replace_dir(new: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(new, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    os.replace(dst, old / "x")
    try:
        os.replace(new, dst)
    except BaseException:
        os.replace(old / "x", dst)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
