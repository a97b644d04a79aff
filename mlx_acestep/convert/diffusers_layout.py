"""ACE-Step 1.5 in the diffusers pipeline layout -> the original layout (spec DIFFUSERS-MAPPING §1, §2).

A diffusers root (`model_index.json`, `transformer/`, `condition_encoder/`, optional
`audio_tokenizer/` and `audio_token_detokenizer/`, `vae/`, `text_encoder/`, `tokenizer/`,
`scheduler/`) splits the one `acestep-v15-*` DiT checkpoint into four models. This module
undoes the split: the four renaming rules of §1.2 run backwards (folder -> prefix, attention
segments, patch convolutions, the silence buffer back out of the condition encoder), the
original `AceStepConfig` is rebuilt from the four configs (§2 inverted), and the result goes
through the original layout's DiT path (`dit.write_dit`), so dtype and quantization options
behave identically and the output folders carry the original names.

Three converter revisions wrote such folders (§1.4). The newest renames the attention
sub-modules (`to_q`...); the middle one left them as `q_proj`... and dropped the audio
tokenizer and detokenizer (the output config then lists them in `absent_parts`); the oldest
(transformer class `AceStepDiTModel`) also dropped `null_condition_emb`, so its folders cannot
be used for sampling and are refused.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..loading import read_json
from ..models.dit.model import PATCH_RENAMES
from ..names import BASE_DIT, DEFAULT_DIT, SFT_DIT, TEXT_ENCODER
from ..safetensors_io import read_weights
from .component import ConvertOptions
from .dit import read_silence_file, write_dit
from .kinds import convert_text_encoder

WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMER_CLASS = "AceStepTransformer1DModel"
OLDEST_TRANSFORMER_CLASS = "AceStepDiTModel"

# diffusers model folder -> the top-level module (prefix) of the original checkpoint (rule 1).
PREFIXES = {
    "transformer": "decoder",
    "condition_encoder": "encoder",
    "audio_tokenizer": "tokenizer",
    "audio_token_detokenizer": "detokenizer",
}
OPTIONAL = ("audio_tokenizer", "audio_token_detokenizer")  # absent from the middle revision's folders
NULL_CONDITION = "null_condition_emb"  # stored in condition_encoder/, bare (no prefix) in the original
SILENCE_BUFFER = "silence_latent"
SILENCE_FILE = "silence_latent.pt"  # the converters' root-level copy, read when the buffer is absent
VAE_CONFIG = "vae/config.json"  # the DiT's timbre fix frame is computed from it
TOKENIZER_DIR = "tokenizer"  # the text encoder's tokenizer files, beside text_encoder/
# What the DiT's conversion reads besides transformer/ (see `layouts.SourceFolder.reads`).
DIT_READS = (*(name for name in PREFIXES if name != "transformer"), SILENCE_FILE, VAE_CONFIG)

# Rules 2 and 3, diffusers -> original, on whole dotted segments ("norm_out" and "to_k" elsewhere are untouched).
ATTENTION_RENAMES = {
    "to_q": "q_proj",
    "to_k": "k_proj",
    "to_v": "v_proj",
    "to_out.0": "o_proj",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}
PATCH_CONV_RENAMES = {"proj_in_conv": "proj_in.1", "proj_out_conv": "proj_out.1"}

# §2 inverted: the original fields each diffusers config carries under the same name.
TRANSFORMER_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "in_channels", "audio_acoustic_hidden_dim", "patch_size", "rope_theta", "attention_bias",
    "attention_dropout", "rms_norm_eps", "sliding_window", "layer_types", "is_turbo", "model_version",
)  # fmt: skip
CONFIG_FIELDS = {
    "condition_encoder": ("text_hidden_dim", "timbre_hidden_dim", "num_lyric_encoder_hidden_layers",
                          "num_timbre_encoder_hidden_layers"),
    "audio_tokenizer": ("pool_window_size", "fsq_dim", "fsq_input_levels", "fsq_input_num_quantizers",
                        "num_attention_pooler_hidden_layers"),
    "audio_token_detokenizer": ("pool_window_size", "num_attention_pooler_hidden_layers"),
}  # fmt: skip
# The encoder-side modules get their own widths on XL (`encoder_<name>` in the original config).
ENCODER_WIDTHS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def rename_segments(key: str, table: dict[str, str]) -> str:
    """Rename whole dotted segments of `key` (a segment may itself hold a dot, as `to_out.0`)."""
    return _segments(tuple(table)).sub(lambda m: table[m.group(1)], key)


@functools.lru_cache
def _segments(names: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![^.])({alternatives})(?![^.])")  # bounded by a dot or an end on both sides


def is_turbo(transformer_config: dict) -> bool:
    """As the diffusers pipeline decides it: either field may mark a turbo model."""
    return bool(transformer_config.get("is_turbo")) or transformer_config.get("model_version") == "turbo"


def dit_folder_name(transformer: Path) -> str:
    """The original layout's name for this DiT (acestep-v15-turbo, -base or -sft, from the config's own fields)."""
    config = read_json(transformer / "config.json")
    if is_turbo(config):
        return DEFAULT_DIT
    return SFT_DIT if str(config.get("model_version", "")).lower() == "sft" else BASE_DIT


def text_encoder_folder_name(_folder: Path) -> str:
    return TEXT_ENCODER  # the original layout's folder name, which loaders look for


def convert_diffusers_text_encoder(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    """`text_encoder/` holds the same unprefixed Qwen3Model tensors; its tokenizer files are in the sibling `tokenizer/`."""
    return convert_text_encoder(folder, out, opts, root, tokenizer_dir=folder.parent / TOKENIZER_DIR)


def check_transformer_class(config_path: Path, config: dict) -> None:
    name = config.get("_class_name")
    if name == OLDEST_TRANSFORMER_CLASS:
        raise AceStepError(
            f"{config_path}: written by the oldest diffusers converter ({name}, no {NULL_CONDITION}, no audio tokenizer), "
            "which cannot be used for sampling; convert the original acestep-v15-* checkpoint instead"
        )
    if name not in (None, TRANSFORMER_CLASS):
        raise AceStepError(f"{config_path}: transformer class {name!r} is not ACE-Step 1.5's {TRANSFORMER_CLASS}")


def read_models(root: Path) -> tuple[dict[str, dict], dict[str, dict[str, mx.array]], dict[str, list[Path]]]:
    """Config, tensors and source files (config first, then weights) of each DiT model folder under `root`."""
    configs, states, files = {}, {}, {}
    for name in PREFIXES:
        folder = root / name
        if name in OPTIONAL and not folder.is_dir():
            continue
        config_path = folder / "config.json"
        configs[name] = read_json(config_path)
        if name == "transformer":  # before the weights are read: the oldest revision is refused outright
            check_transformer_class(config_path, configs[name])
        states[name], weight_files = read_weights(folder, WEIGHTS)
        files[name] = [config_path, *weight_files]
    return configs, states, files


def attention_renames(states: dict[str, dict], root: Path) -> dict[str, str]:
    """Rule 2 when the folder uses diffusers' attention names; none when an older revision left `q_proj`."""
    keys = [k for state in states.values() for k in state]
    new = any(rename_segments(k, ATTENTION_RENAMES) != k for k in keys)
    old = any(re.search(r"(?<![^.])[qkvo]_proj(?![^.])", k) for k in keys)
    if new and old:
        raise AceStepError(f"{root}: the DiT folders mix diffusers ('to_q') and original ('q_proj') attention names")
    return ATTENTION_RENAMES if new else {}


def original_state(states: dict[str, dict], attention: dict[str, str]) -> dict[str, mx.array]:
    """The four folders' tensors under the original checkpoint's names (rules 1-3, backwards)."""
    table = {**attention, **PATCH_CONV_RENAMES}
    out = {}
    for folder, state in states.items():
        for key, value in state.items():
            name = key if key == NULL_CONDITION else f"{PREFIXES[folder]}.{rename_segments(key, table)}"
            if name in out:
                raise AceStepError(f"{folder}/: key '{key}' and another both map to '{name}'")
            out[name] = value
    return out


def take_silence_latent(states: dict[str, dict], weights: Path, root: Path, channels: int) -> tuple[np.ndarray, Path]:
    """Float32 `[1, T, C]`: the condition encoder's buffer (rule 4), else the converters' root-level `silence_latent.pt`.

    `weights` is the condition encoder's weight file (or shard index), named in errors.
    """
    buffer = states["condition_encoder"].pop(SILENCE_BUFFER, None)
    if buffer is not None:
        if buffer.ndim != 3 or buffer.shape[0] != 1 or buffer.shape[2] != channels:
            raise AceStepError(
                f"{weights}: '{SILENCE_BUFFER}' has shape {tuple(buffer.shape)}, expected (1, T, {channels})"
            )
        return np.array(buffer.astype(mx.float32)), weights  # bf16 in converted folders: widened exactly
    path = root / SILENCE_FILE
    if path.is_file():
        return read_silence_file(path, channels), path
    raise AceStepError(
        f"{root}: no silence latent (neither a '{SILENCE_BUFFER}' buffer in condition_encoder/ nor silence_latent.pt at the root)"
    )


def timbre_fix_frame(root: Path) -> tuple[int, list[Path]]:
    """⌈30 s × latent rate⌉ from the VAE config, as the diffusers pipeline computes it (750 for the real VAE).

    Without a VAE config the pipeline's own fallback (48 kHz / 1920) applies; returns the file read, if any.
    """
    path = root / VAE_CONFIG
    vae = read_json(path) if path.is_file() else {}
    rate = float(vae.get("sampling_rate", 48000)) / float(math.prod(vae.get("downsampling_ratios", (1920,))))
    return math.ceil(30 * rate), [path] if path.is_file() else []


def original_config(configs: dict[str, dict], frames: int) -> dict:
    """The original `AceStepConfig` fields rebuilt from the diffusers configs (§2 inverted)."""
    transformer, encoder = configs["transformer"], configs["condition_encoder"]
    fields = {k: transformer[k] for k in TRANSFORMER_FIELDS if transformer.get(k) is not None}
    for name, keys in CONFIG_FIELDS.items():
        fields.update({k: configs[name][k] for k in keys if name in configs and configs[name].get(k) is not None})
    # XL: the encoder side differs from the DiT; the original config then names all four widths.
    own_width = transformer.get("encoder_hidden_size") not in (None, transformer.get("hidden_size"))
    if own_width or any(encoder.get(k) != transformer.get(k) for k in ENCODER_WIDTHS):
        fields.update({f"encoder_{k}": encoder[k] for k in ENCODER_WIDTHS})
    absent = [PREFIXES[name] for name in OPTIONAL if name not in configs]
    return {
        **fields,
        "use_sliding_window": True,  # diffusers drops the flag: sliding follows layer_types alone
        "timbre_fix_frame": frames,
        "model_type": "acestep",
        **({"absent_parts": absent} if absent else {}),
    }


def source_key_hint(attention: dict[str, str]):
    """An MLX key's tensor in the diffusers folders, for 'missing key' errors."""
    forward = {v: k for k, v in {**attention, **PATCH_CONV_RENAMES}.items()}
    to_original = {v: k for k, v in PATCH_RENAMES.items()}
    folders = {prefix: folder for folder, prefix in PREFIXES.items()}

    def hint(mlx_key: str) -> str:
        key = to_original.get(mlx_key, mlx_key)
        if key == NULL_CONDITION:
            return f"'{key}' in condition_encoder/"
        prefix, rest = key.split(".", 1)
        return f"'{rename_segments(rest, forward)}' in {folders.get(prefix, prefix)}/"

    return hint


def convert_diffusers_dit(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    """`transformer/` and its sibling model folders -> one converted DiT folder, as from `acestep-v15-*/`."""
    base = folder.parent
    configs, states, files = read_models(base)
    if NULL_CONDITION not in states["condition_encoder"]:
        raise AceStepError(
            f"{base / 'condition_encoder'}: no '{NULL_CONDITION}' (the oldest diffusers converter dropped it), "
            "so this folder cannot be used for sampling; convert the original acestep-v15-* checkpoint instead"
        )
    channels = configs["condition_encoder"].get("timbre_hidden_dim", 64)
    silence, silence_path = take_silence_latent(states, files["condition_encoder"][1], base, channels)
    frames, vae_files = timbre_fix_frame(base)
    fields = original_config(configs, frames)
    attention = attention_renames(states, base)
    state = original_state(states, attention)
    states.clear()  # `state` now holds the only references: write_dit frees them before casting
    read = [p for paths in files.values() for p in paths]
    sources = [base / "model_index.json", *read, *([silence_path] if silence_path not in read else []), *vae_files]
    summary = write_dit(
        out,
        fields,
        state,
        silence,
        sources,
        opts,
        root,
        str(base),
        source_key_hint(attention),
        f"{base / 'transformer' / 'config.json'} (with condition_encoder/, audio_tokenizer/)",
    )
    revision = "" if attention else ", attention names of an older converter"
    return f"{summary}; diffusers layout{revision}"
