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

LM_DIR = f"{LM_PREFIX}0.6B"

# 600 s at 25 latent frames/s, as the real silence_latent.pt: every duration up to 600 s has a source.
SILENCE_FRAMES = 15000
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

# Draw scales. Embedding tables feed a tied LM head: 0.2 keeps its logits of order 1.
NORM_NOISE, BIAS_STD, EMBED_STD, SNAKE_STD = 0.1, 0.02, 0.2, 0.2
# Weight-norm gains: the convs inside a residual unit keep each of the 15 residual branches small; the output
# convs bring the latent mean to about unit scale and the waveform mostly within [-1, 1].
RESIDUAL_GAIN, LATENT_GAIN, WAVEFORM_GAIN = 0.5, 0.25, 0.1


class _Draw:
    """Named float32 tensors drawn in call order from one generator: the result depends on the seed alone."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.out: dict[str, np.ndarray] = {}

    def normal(self, name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> None:
        self.out[name] = (mean + std * self.rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    def linear(self, name: str, out_dim: int, in_dim: int, bias: bool = False) -> None:
        self.normal(f"{name}.weight", (out_dim, in_dim), in_dim**-0.5)
        if bias:
            self.normal(f"{name}.bias", (out_dim,), BIAS_STD)

    def norm(self, name: str, dim: int) -> None:
        self.normal(f"{name}.weight", (dim,), NORM_NOISE, mean=1.0)

    def snake(self, name: str, dim: int) -> None:
        # diffusers' Snake1d stores log(alpha), log(beta) (logscale=True): 0 is alpha = beta = 1.
        self.normal(f"{name}.alpha", (1, dim, 1), SNAKE_STD)
        self.normal(f"{name}.beta", (1, dim, 1), SNAKE_STD)

    def weight_norm_conv(
        self, name: str, shape: tuple[int, int, int], fan_in: int, gain: float = 1.0, bias: int | None = None
    ) -> None:
        """Legacy `weight_norm` pair: v fan-in scaled, g = gain * ||v|| (norm over all axes but 0) with noise,
        so the fused weight is about gain * v but a converter that ignores g still goes wrong."""
        v = fan_in**-0.5 * self.rng.standard_normal(shape, dtype=np.float32)
        norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=(1, 2), keepdims=True))
        jitter = 1 + 0.05 * self.rng.standard_normal(norm.shape)
        self.out[f"{name}.weight_v"] = v
        self.out[f"{name}.weight_g"] = (gain * norm * jitter).astype(np.float32)
        if bias is not None:
            self.normal(f"{name}.bias", (bias,), BIAS_STD)


# --- Qwen3-style layers: the text encoder, the LM and the DiT's condition-side encoders share them.


def _attention(d: _Draw, name: str, cfg: dict, width: int) -> None:
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    d.linear(f"{name}.q_proj", heads * hd, width)
    d.linear(f"{name}.k_proj", kv * hd, width)
    d.linear(f"{name}.v_proj", kv * hd, width)
    d.linear(f"{name}.o_proj", width, heads * hd)
    d.norm(f"{name}.q_norm", hd)
    d.norm(f"{name}.k_norm", hd)


def _mlp(d: _Draw, name: str, width: int, inner: int) -> None:
    d.linear(f"{name}.gate_proj", inner, width)
    d.linear(f"{name}.up_proj", inner, width)
    d.linear(f"{name}.down_proj", width, inner)


def _layer_stack(d: _Draw, name: str, cfg: dict, n_layers: int) -> None:
    """`{name}.layers.{i}.*` (pre-norm attention + SwiGLU) and the final `{name}.norm`."""
    width, prefix = cfg["hidden_size"], f"{name}." if name else ""
    for i in range(n_layers):
        layer = f"{prefix}layers.{i}"
        d.norm(f"{layer}.input_layernorm", width)
        _attention(d, f"{layer}.self_attn", cfg, width)
        d.norm(f"{layer}.post_attention_layernorm", width)
        _mlp(d, f"{layer}.mlp", width, cfg["intermediate_size"])
    d.norm(f"{prefix}norm", width)


def _qwen3_tensors(d: _Draw, cfg: dict, prefix: str) -> None:
    """Qwen3Model keys (`prefix` "model" for Qwen3ForCausalLM); a tied LM head stores no `lm_head`."""
    d.normal(
        f"{prefix}.embed_tokens.weight" if prefix else "embed_tokens.weight",
        (cfg["vocab_size"], cfg["hidden_size"]),
        EMBED_STD,
    )
    _layer_stack(d, prefix, cfg, cfg["num_hidden_layers"])


# --- DiT checkpoint (spec 2.1): decoder., encoder., tokenizer., detokenizer., null_condition_emb.


def _timestep_embedding(d: _Draw, name: str, width: int) -> None:
    d.linear(f"{name}.linear_1", width, 256, bias=True)
    d.linear(f"{name}.linear_2", width, width, bias=True)
    d.linear(f"{name}.time_proj", 6 * width, width, bias=True)


def _dit_decoder(d: _Draw, cfg: dict) -> None:
    w, p, latent = cfg["hidden_size"], cfg["patch_size"], cfg["audio_acoustic_hidden_dim"]
    d.normal("decoder.proj_in.1.weight", (w, cfg["in_channels"], p), (cfg["in_channels"] * p) ** -0.5)
    d.normal("decoder.proj_in.1.bias", (w,), BIAS_STD)
    _timestep_embedding(d, "decoder.time_embed", w)
    _timestep_embedding(d, "decoder.time_embed_r", w)
    d.linear("decoder.condition_embedder", w, w, bias=True)
    for i in range(cfg["num_hidden_layers"]):
        layer = f"decoder.layers.{i}"
        d.normal(f"{layer}.scale_shift_table", (1, 6, w), w**-0.5)
        d.norm(f"{layer}.self_attn_norm", w)
        _attention(d, f"{layer}.self_attn", cfg, w)
        d.norm(f"{layer}.cross_attn_norm", w)
        _attention(d, f"{layer}.cross_attn", cfg, w)
        d.norm(f"{layer}.mlp_norm", w)
        _mlp(d, f"{layer}.mlp", w, cfg["intermediate_size"])
    d.norm("decoder.norm_out", w)
    d.normal("decoder.scale_shift_table", (1, 2, w), w**-0.5)
    # ConvTranspose1d [in, out, k] with kernel = stride: each output frame sees `w` inputs.
    d.normal("decoder.proj_out.1.weight", (w, latent, p), w**-0.5)
    d.normal("decoder.proj_out.1.bias", (latent,), BIAS_STD)


def _dit_condition_side(d: _Draw, cfg: dict) -> None:
    w, latent = cfg["hidden_size"], cfg["audio_acoustic_hidden_dim"]
    d.linear("encoder.text_projector", w, cfg["text_hidden_dim"])
    d.linear("encoder.lyric_encoder.embed_tokens", w, cfg["text_hidden_dim"], bias=True)
    _layer_stack(d, "encoder.lyric_encoder", cfg, cfg["num_lyric_encoder_hidden_layers"])
    d.linear("encoder.timbre_encoder.embed_tokens", w, cfg["timbre_hidden_dim"], bias=True)
    d.normal("encoder.timbre_encoder.special_token", (1, 1, w), 1.0)
    _layer_stack(d, "encoder.timbre_encoder", cfg, cfg["num_timbre_encoder_hidden_layers"])

    d.linear("tokenizer.audio_acoustic_proj", w, latent, bias=True)
    d.linear("tokenizer.attention_pooler.embed_tokens", w, w, bias=True)
    d.normal("tokenizer.attention_pooler.special_token", (1, 1, w), 1.0)
    _layer_stack(d, "tokenizer.attention_pooler", cfg, cfg["num_attention_pooler_hidden_layers"])
    n_levels = len(cfg["fsq_input_levels"])
    d.linear("tokenizer.quantizer.project_in", n_levels, cfg["fsq_dim"], bias=True)
    d.linear("tokenizer.quantizer.project_out", cfg["fsq_dim"], n_levels, bias=True)

    d.linear("detokenizer.embed_tokens", w, w, bias=True)
    d.normal("detokenizer.special_tokens", (1, cfg["pool_window_size"], w), 1.0)
    _layer_stack(d, "detokenizer", cfg, cfg["num_attention_pooler_hidden_layers"])
    d.linear("detokenizer.proj_out", latent, w, bias=True)
    d.normal("null_condition_emb", (1, 1, w), 1.0)


def _silence_latent(rng: np.random.Generator, channels: int) -> np.ndarray:
    """Channel-first [1, C, T]: one vector held over time plus a little noise, like a VAE latent of silence."""
    level = 0.5 * rng.standard_normal((1, channels, 1), dtype=np.float32)
    return (level + 0.05 * rng.standard_normal((1, channels, SILENCE_FRAMES), dtype=np.float32)).astype(np.float32)


# --- Oobleck VAE (spec 2.3): every conv under legacy weight norm, Snake parameters [1, C, 1].


def _residual_unit(d: _Draw, name: str, width: int) -> None:
    d.snake(f"{name}.snake1", width)
    d.weight_norm_conv(f"{name}.conv1", (width, width, 7), width * 7, RESIDUAL_GAIN, bias=width)
    d.snake(f"{name}.snake2", width)
    d.weight_norm_conv(f"{name}.conv2", (width, width, 1), width, RESIDUAL_GAIN, bias=width)


def _residual_units(d: _Draw, block: str, width: int) -> None:
    for j in (1, 2, 3):  # dilations 1, 3, 9 live in the module, not in the weights
        _residual_unit(d, f"{block}.res_unit{j}", width)


def _vae_encoder(d: _Draw, cfg: dict) -> None:
    h, mult = cfg["encoder_hidden_size"], [1, *cfg["channel_multiples"]]
    d.weight_norm_conv("encoder.conv1", (h, cfg["audio_channels"], 7), cfg["audio_channels"] * 7, bias=h)
    for i, stride in enumerate(cfg["downsampling_ratios"]):
        c_in, c_out, block = h * mult[i], h * mult[i + 1], f"encoder.block.{i}"
        _residual_units(d, block, c_in)
        d.snake(f"{block}.snake1", c_in)
        d.weight_norm_conv(f"{block}.conv1", (c_out, c_in, 2 * stride), c_in * 2 * stride, bias=c_out)
    d.snake("encoder.snake1", h * mult[-1])
    d.weight_norm_conv("encoder.conv2", (h, h * mult[-1], 3), h * mult[-1] * 3, LATENT_GAIN, bias=h)


def _vae_decoder(d: _Draw, cfg: dict) -> None:
    c, mult, strides = cfg["decoder_channels"], [1, *cfg["channel_multiples"]], cfg["downsampling_ratios"][::-1]
    latent = cfg["decoder_input_channels"]
    d.weight_norm_conv("decoder.conv1", (c * mult[-1], latent, 7), latent * 7, bias=c * mult[-1])
    for i, stride in enumerate(strides):
        c_in, c_out, block = c * mult[len(strides) - i], c * mult[len(strides) - i - 1], f"decoder.block.{i}"
        d.snake(f"{block}.snake1", c_in)
        # ConvTranspose1d [in, out, 2s] with stride s: each output sample sees two taps per input channel.
        d.weight_norm_conv(f"{block}.conv_t1", (c_in, c_out, 2 * stride), 2 * c_in, bias=c_out)
        _residual_units(d, block, c_out)
    d.snake("decoder.snake1", c)
    # No bias, as diffusers has it.
    d.weight_norm_conv("decoder.conv2", (cfg["audio_channels"], c, 7), c * 7, WAVEFORM_GAIN)


# --- Tokenizers: the text tokenizer ships as package data; the LM's adds the audio-code tokens to it.


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
    d = _Draw(_rng(seed, component))
    for fn, *args in parts:
        fn(d, *args)
    return d.out


def _build(root: Path, seed: int) -> None:
    vae = _drawn(seed, VAE_DIR, (_vae_encoder, VAE_CONFIG), (_vae_decoder, VAE_CONFIG))
    _write_folder(root / VAE_DIR, {"config.json": VAE_CONFIG}, {"diffusion_pytorch_model.safetensors": vae})

    # One silence latent for both DiTs: it is a VAE latent, not a property of the DiT variant.
    silence = {"silence_latent": _silence_latent(_rng(seed, "silence_latent"), DIT_CONFIG["timbre_hidden_dim"])}
    for folder, variant in DIT_VARIANTS.items():
        config = {**DIT_CONFIG, **variant}
        dit = _drawn(seed, folder, (_dit_decoder, config), (_dit_condition_side, config))
        _write_folder(
            root / folder, {"config.json": config}, {"model.safetensors": dit, "silence_latent.safetensors": silence}
        )

    text_files = text_tokenizer_files()
    encoder = _drawn(seed, TEXT_ENCODER_DIR, (_qwen3_tensors, TEXT_ENCODER_CONFIG, ""))
    _write_folder(
        root / TEXT_ENCODER_DIR, {"config.json": TEXT_ENCODER_CONFIG}, {"model.safetensors": encoder}, text_files
    )

    lm = _drawn(seed, LM_DIR, (_qwen3_tensors, LM_CONFIG, "model"))
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
