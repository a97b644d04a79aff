"""The 5 Hz planner LM (`acestep-5Hz-lm-*`): transformers Qwen3ForCausalLM -> MLX (mlx-lm layout), tokenizer copied.

Keys keep their names (`model.*`: mlx-lm's Qwen3 uses the same ones); a tied
`lm_head` is dropped. Quantized, the embedding table (which is also the output
head when tied) and any separate `lm_head` stay at 8 bits or more: 4-bit output
logits move the argmax of the audio codes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..loading import load_checked, read_json
from ..models.planner_lm import PlannerLM, planner_args
from ..safetensors_io import read_safetensors

from .common import ConvertOptions, cast_and_quantize, write_component
from .text_encoder import TOKENIZER_FILES

AT_LEAST_8_BITS = ("embed_tokens", "lm_head")


def convert_lm(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    fields = read_json(config_path)
    args = planner_args(fields)
    model = PlannerLM(args)
    state = read_safetensors(weights_path)
    weights = {k: v for k, v in state.items() if not (args.tie_word_embeddings and k == "lm_head.weight")}
    load_checked(model, weights, str(weights_path))
    quantization, summary = cast_and_quantize(model, opts, at_least_8=AT_LEAST_8_BITS)
    extras = [folder / f for f in (*TOKENIZER_FILES, "generation_config.json") if (folder / f).is_file()]
    write_component(out, "lm", model, fields, opts, quantization, [config_path, weights_path, *extras], root)
    for f in extras:
        shutil.copy2(f, out / f.name)
    return f"{len(state)} tensors, tokenizer ({summary})"
