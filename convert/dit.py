"""ACE-Step DiT checkpoint (`acestep-v15-*/model.safetensors`) -> MLX.

The checkpoint holds the decoder, the condition encoder, the FSQ audio
tokenizer and detokenizer, and the bare `null_condition_emb`; the MLX model
(`AceStepModel`) uses the same names, so the remap is the identity. Only the
condition encoder and `null_condition_emb` are built so far: the other
prefixes are reported as not converted yet (issue 4).
"""

from __future__ import annotations

from pathlib import Path

from mlx_acestep.condition import AceStepConfig, AceStepModel
from mlx_acestep.loading import load_checked, read_json
from mlx_acestep.safetensors_io import read_safetensors

from .common import ConvertOptions, cast_and_quantize, write_component

BUILT_PREFIXES = ("encoder.", "null_condition_emb")
PENDING_PREFIXES = ("decoder.", "tokenizer.", "detokenizer.")  # issue 4


def convert_dit(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    weights_path = folder / "model.safetensors"
    fields = read_json(config_path)
    model = AceStepModel(AceStepConfig.from_dict(fields))
    state = read_safetensors(weights_path)
    pending = [k for k in state if k.startswith(PENDING_PREFIXES)]
    weights = {k: v for k, v in state.items() if k.startswith(BUILT_PREFIXES)}
    unknown = {k: v for k, v in state.items() if not k.startswith(BUILT_PREFIXES + PENDING_PREFIXES)}
    load_checked(model, weights, str(weights_path), extra=unknown)  # an unknown prefix is an unexpected key
    # The input projections stay at full precision; null_condition_emb is a bare array, never quantized.
    quantization, summary = cast_and_quantize(model, opts, keep=("embed_tokens",))
    write_component(out, "dit", model, fields, opts, quantization, [config_path, weights_path], root)
    return f"condition encoder ({len(weights)} tensors, {summary}); {len(pending)} decoder/FSQ tensors not converted yet"
