"""The VAE, the text encoder and the planner LM: which files each reads, what is copied beside its weights.

Each builds its model from the source config, reads the weights lazily, runs the
model's own `sanitize` (the one place where source names become ours) and hands
the result to `write_component`. The DiT, with its silence latent and its second
source layout, is `dit.py`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import AceStepError
from ..loading import BUILDERS, read_json
from ..safetensors_io import read_weights
from .component import ConvertOptions, write_component

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def build(kind: str, fields: dict, config_path: Path):
    try:
        return BUILDERS[kind](fields, None, str(config_path))
    except (TypeError, ValueError) as e:
        raise AceStepError(f"{config_path}: invalid {kind.replace('_', ' ')} config ({e})") from None


def convert_vae(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    """diffusers `AutoencoderOobleck`: weight norm fused, convolutions transposed (`oobleck.sanitize`)."""
    config_path = folder / "config.json"
    fields = read_json(config_path)
    model = build("vae", fields, config_path)
    state, files = read_weights(folder, "diffusion_pytorch_model.safetensors")
    count = len(state)
    weights = model.sanitize(state, source=str(files[0]))
    state.clear()  # `weights` holds the only references: each tensor is freed once written
    n = len(weights)
    summary = write_component(
        out, "vae", model, weights, fields, opts, [config_path, *files], root, str(files[0]), model.source_name
    )
    return f"{count} tensors -> {n} ({summary})"


def convert_text_encoder(
    folder: Path, out: Path, opts: ConvertOptions, root: Path, tokenizer_dir: Path | None = None
) -> str:
    """Qwen3-Embedding-0.6B (transformers `Qwen3Model`), its tokenizer copied. `tokenizer_dir` holds the tokenizer
    files when they are not beside the weights (diffusers' `tokenizer/`)."""
    tokenizer_dir = tokenizer_dir or folder
    if not (tokenizer_dir / "tokenizer.json").is_file():  # before the (large) weights are read
        raise AceStepError(f"{tokenizer_dir / 'tokenizer.json'}: file not found (the text encoder needs its tokenizer)")
    return _qwen3(folder, out, opts, root, "text_encoder", [tokenizer_dir / f for f in TOKENIZER_FILES])


def convert_lm(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    """The 5 Hz planner (transformers `Qwen3ForCausalLM`) in mlx-lm's layout, so `mlx_lm.load` opens it too."""
    return _qwen3(folder, out, opts, root, "lm", [folder / f for f in (*TOKENIZER_FILES, "generation_config.json")])


def _qwen3(folder: Path, out: Path, opts: ConvertOptions, root: Path, kind: str, extras: list[Path]) -> str:
    config_path = folder / "config.json"
    fields = read_json(config_path)
    model = build(kind, fields, config_path)
    state, files = read_weights(folder, "model.safetensors")
    count = len(state)
    extras = [f for f in extras if f.is_file()]
    for f in extras:  # copied as they are, and read only when a model loads: a damaged one is named here instead
        if f.suffix == ".json":
            read_json(f)
    weights = model.sanitize(state)
    state.clear()  # `weights` holds the only references: each tensor is freed once written
    summary = write_component(
        out, kind, model, weights, fields, opts, [config_path, *files, *extras], root, str(files[0]), model.source_name
    )
    for f in extras:
        shutil.copy2(f, out / f.name)
    return f"{count} tensors, tokenizer ({summary})"
