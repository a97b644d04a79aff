"""A tiny random-weight checkpoint root in the original upstream layout, built on the fly.

`--model tiny` and the end-to-end tests need a whole ACE-Step 1.5 root (VAE, turbo
and base DiT, text encoder, planner LM) without downloading gigabytes. This writes
one with the real file names, key names and config schema (spec 1 and 2) and the
tiny sizes of the parity fixtures, so it goes through the same converter and
loaders as the real weights. Everything comes from this file and the tokenizer
files under `assets/tiny/`; nothing is read from `tests/` and torch is not used.

Weights are float32, drawn from one numpy Generator per component (seeded by
`seed` and the folder name, so one component's draws never shift another's), and
scaled so the pipeline stays finite and not degenerate: linear and conv weights
fan-in scaled, norms near 1, small biases, log-scale Snake parameters near 0.
"""

from __future__ import annotations

import json
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from .errors import AceStepError
from .files import building_dir
from .names import BASE_DIT as BASE_DIR
from .names import DEFAULT_DIT as TURBO_DIR
from .names import LM_PREFIX, VAE_DIR
from .names import TEXT_ENCODER as TEXT_ENCODER_DIR
from .tiny_weights import (
    Draw,
    dit_condition_side,
    dit_decoder,
    qwen3_tensors,
    silence_latent,
    vae_decoder,
    vae_encoder,
)

LM_DIR = f"{LM_PREFIX}0.6B"

# The fixture LM's audio codes (the real LM has 65535; the tiny DiT's FSQ has 64000 but the LM only names these).
NUM_AUDIO_CODES = 2048

# The parity fixtures' tiny sizes (cases.json `tiny_configs`), with the real configs' other fields.
VAE_CONFIG = {
    "_class_name": "AutoencoderOobleck",
    "_diffusers_version": "0.34.0",
    "audio_channels": 2,
    "channel_multiples": [1, 1, 1, 1, 2],
    "decoder_channels": 16,
    "decoder_input_channels": 64,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "encoder_hidden_size": 128,
    "sampling_rate": 48000,
}

DIT_CONFIG = {
    "architectures": ["AceStepConditionGenerationModel"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "audio_acoustic_hidden_dim": 64,
    "data_proportion": 0.5,
    "dtype": "float32",
    "fsq_dim": 64,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5],
    "fsq_input_num_quantizers": 1,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 64,
    "in_channels": 192,
    "initializer_range": 0.02,
    "intermediate_size": 192,
    "layer_types": ["sliding_attention", "full_attention"] * 2,
    "max_position_embeddings": 32768,
    "model_type": "acestep",
    "num_attention_heads": 4,
    "num_attention_pooler_hidden_layers": 2,
    "num_audio_decoder_hidden_layers": 4,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "num_lyric_encoder_hidden_layers": 2,
    "num_timbre_encoder_hidden_layers": 2,
    "patch_size": 2,
    "pool_window_size": 5,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 8,
    "text_hidden_dim": 32,
    "timbre_fix_frame": 750,
    "timbre_hidden_dim": 64,
    "timestep_mu": -0.4,
    "timestep_sigma": 1.0,
    "use_cache": True,
    "use_sliding_window": True,
    "vocab_size": 64003,
}
DIT_VARIANTS = {  # folder -> the fields that tell turbo from base
    TURBO_DIR: {
        "is_turbo": True,
        "model_version": "turbo",
        "auto_map": {
            "AutoConfig": "configuration_acestep_v15.AceStepConfig",
            "AutoModel": "modeling_acestep_v15_turbo.AceStepConditionGenerationModel",
        },
    },
    BASE_DIR: {
        "is_turbo": False,
        "model_version": "base",
        "auto_map": {
            "AutoConfig": "configuration_acestep_v15.AceStepConfig",
            "AutoModel": "modeling_acestep_v15_base.AceStepConditionGenerationModel",
        },
    },
}

_QWEN3_COMMON = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 512,
    "dtype": "float32",
    "eos_token_id": 514,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 96,
    "model_type": "qwen3",
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
}


def _qwen3_config(architecture: str, n_layers: int, max_positions: int, vocab_size: int, **extra) -> dict:
    return {
        **_QWEN3_COMMON,
        "architectures": [architecture],
        "layer_types": ["full_attention"] * n_layers,
        "max_position_embeddings": max_positions,
        "max_window_layers": n_layers,
        "num_hidden_layers": n_layers,
        "vocab_size": vocab_size,
        **extra,
    }


# 538 = 512 byte-level BPE tokens + the 26 Qwen3 added tokens. The LM's table has 2661 rows for its 2586 tokens
# (538 + NUM_AUDIO_CODES), as the fixture's: rows no token names must not matter to a reader.
TEXT_ENCODER_CONFIG = _qwen3_config("Qwen3Model", 2, 32768, 538)
LM_CONFIG = _qwen3_config("Qwen3ForCausalLM", 3, 40960, 2661, pad_token_id=512)
LM_GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 512, "eos_token_id": 514, "pad_token_id": 512}


def text_tokenizer_files() -> dict[str, bytes]:
    folder = resources.files("mlx_acestep") / "assets" / "tiny" / "tokenizer"
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.is_file()}


def _dump(data: dict, newline: bool = True, sort_keys: bool = False) -> bytes:
    # The formatting transformers and tokenizers write (so the derived files match theirs byte for byte).
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + ("\n" if newline else "")).encode()


def _lm_tokenizer_files(text_files: dict[str, bytes], n_codes: int) -> dict[str, bytes]:
    """The text tokenizer plus `<|audio_code_0|>` ... as plain (non-special) added tokens with consecutive ids."""
    added = json.loads(text_files["added_tokens.json"])
    first = max(added.values()) + 1
    codes = {f"<|audio_code_{i}|>": first + i for i in range(n_codes)}
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": False}

    fast = json.loads(text_files["tokenizer.json"])
    fast["added_tokens"] += [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": False,
        }
        for t, i in codes.items()
    ]  # tokenizers' key order
    config = json.loads(text_files["tokenizer_config.json"])
    config["added_tokens_decoder"].update({str(i): {"content": t, **flags} for t, i in codes.items()})
    return {
        **text_files,
        "added_tokens.json": _dump({**added, **codes}, sort_keys=True),
        "tokenizer.json": _dump(fast, newline=False),
        "tokenizer_config.json": _dump(config),
    }


# --- Writing the root.


def _rng(seed: int, component: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(component.encode())])


def _write_folder(
    folder: Path,
    configs: dict[str, dict],
    tensors: dict[str, dict[str, np.ndarray]],
    files: dict[str, bytes] | None = None,
) -> None:
    folder.mkdir()
    for name, config in configs.items():
        (folder / name).write_bytes(_dump(config, sort_keys=True))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    for name, state in tensors.items():
        save_file(state, str(folder / name), metadata={"format": "pt"})  # "pt": what transformers expects to read


def _drawn(seed: int, component: str, *parts) -> dict[str, np.ndarray]:
    """Run the layout functions `parts` (each `(fn, cfg)` or `(fn, cfg, prefix)`) on one component's generator."""
    d = Draw(_rng(seed, component))
    for fn, *args in parts:
        fn(d, *args)
    return d.out


def _build(root: Path, seed: int) -> None:
    vae = _drawn(seed, VAE_DIR, (vae_encoder, VAE_CONFIG), (vae_decoder, VAE_CONFIG))
    _write_folder(root / VAE_DIR, {"config.json": VAE_CONFIG}, {"diffusion_pytorch_model.safetensors": vae})

    # One silence latent for both DiTs: it is a VAE latent, not a property of the DiT variant.
    silence = {"silence_latent": silence_latent(_rng(seed, "silence_latent"), DIT_CONFIG["timbre_hidden_dim"])}
    for folder, variant in DIT_VARIANTS.items():
        config = {**DIT_CONFIG, **variant}
        dit = _drawn(seed, folder, (dit_decoder, config), (dit_condition_side, config))
        _write_folder(
            root / folder, {"config.json": config}, {"model.safetensors": dit, "silence_latent.safetensors": silence}
        )

    text_files = text_tokenizer_files()
    encoder = _drawn(seed, TEXT_ENCODER_DIR, (qwen3_tensors, TEXT_ENCODER_CONFIG, ""))
    _write_folder(
        root / TEXT_ENCODER_DIR, {"config.json": TEXT_ENCODER_CONFIG}, {"model.safetensors": encoder}, text_files
    )

    lm = _drawn(seed, LM_DIR, (qwen3_tensors, LM_CONFIG, "model"))
    _write_folder(
        root / LM_DIR,
        {"config.json": LM_CONFIG, "generation_config.json": LM_GENERATION_CONFIG},
        {"model.safetensors": lm},
        _lm_tokenizer_files(text_files, NUM_AUDIO_CODES),
    )


def build_tiny_checkpoint(root: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny random-weight checkpoint root at `root` (original upstream layout); return it.

    The root is built in a hidden folder beside `root` and renamed into place, so a failure leaves
    nothing behind. `root` may be an empty folder; an existing non-empty one is refused.
    """
    root = Path(root)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise AceStepError(f"seed must be a non-negative integer, got {seed!r}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AceStepError(f"{root}: already exists and is not an empty folder")
    if root.is_dir():  # an empty folder: replaced by the built one
        root.rmdir()
    try:
        with building_dir(root) as staging:
            _build(staging, seed)
    except OSError as e:
        raise AceStepError(f"{root}: cannot write the tiny checkpoint ({e.strerror or e})") from None
    return root
