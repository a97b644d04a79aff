"""Qwen3-Embedding-0.6B: transformers `Qwen3Model` checkpoint -> MLX, tokenizer files copied.

The tensors keep their names (mlx-lm's Qwen3Model uses the same ones). A
`model.` prefix, which some exports carry, is removed, and a tied `lm_head` is
dropped. Quantization keeps the embedding table at full precision: the lyric
branch uses it directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import AceStepError
from ..loading import load_checked, read_json
from ..safetensors_io import read_safetensors
from ..models.text_encoder import Qwen3TextEncoder, text_encoder_args

from .common import ConvertOptions, cast_and_quantize, write_component

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def qwen3_to_mlx(state: dict, tied: bool) -> dict:
    out = {}
    for key, value in state.items():
        name = key.removeprefix("model.")
        if tied and name == "lm_head.weight":
            continue
        out[name] = value
    return out


def convert_text_encoder(folder: Path, out: Path, opts: ConvertOptions, root: Path, tokenizer_dir: Path | None = None) -> str:
    """`tokenizer_dir` holds the tokenizer files when they are not beside the weights (diffusers' `tokenizer/`)."""
    config_path = folder / "config.json"
    weights_path = folder / "model.safetensors"
    tokenizer_dir = tokenizer_dir or folder
    if not (tokenizer_dir / "tokenizer.json").is_file():  # before the (large) weights are read
        raise AceStepError(f"{tokenizer_dir / 'tokenizer.json'}: file not found (the text encoder needs its tokenizer)")
    tokenizer = [tokenizer_dir / f for f in TOKENIZER_FILES if (tokenizer_dir / f).is_file()]
    fields = read_json(config_path)
    args = text_encoder_args(fields)
    model = Qwen3TextEncoder(args)
    state = read_safetensors(weights_path)
    load_checked(model, qwen3_to_mlx(state, args.tie_word_embeddings), str(weights_path))
    quantization, summary = cast_and_quantize(model, opts, keep=("embed_tokens",))
    write_component(out, "text_encoder", model, fields, opts, quantization, [config_path, weights_path, *tokenizer], root)
    for f in tokenizer:
        shutil.copy2(f, out / f.name)
    return f"{len(state)} tensors, tokenizer ({summary})"
