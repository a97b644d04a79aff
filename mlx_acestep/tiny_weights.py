"""The tiny checkpoint's tensors (`tiny.py` builds the root): each component's weights in the real key layout,
drawn in call order from one generator, scaled so the pipeline stays finite and not degenerate."""

from __future__ import annotations

import numpy as np

# 600 s at 25 latent frames/s, as the real silence_latent.pt: every duration up to 600 s has a source.
SILENCE_FRAMES = 15000

# Draw scales. Embedding tables feed a tied LM head: 0.2 keeps its logits of order 1.
NORM_NOISE, BIAS_STD, EMBED_STD, SNAKE_STD = 0.1, 0.02, 0.2, 0.2
# Weight-norm gains: the convs inside a residual unit keep each of the 15 residual branches small; the output
# convs bring the latent mean to about unit scale and the waveform mostly within [-1, 1].
RESIDUAL_GAIN, LATENT_GAIN, WAVEFORM_GAIN = 0.5, 0.25, 0.1


class Draw:
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


def attention(d: Draw, name: str, cfg: dict, width: int) -> None:
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    d.linear(f"{name}.q_proj", heads * hd, width)
    d.linear(f"{name}.k_proj", kv * hd, width)
    d.linear(f"{name}.v_proj", kv * hd, width)
    d.linear(f"{name}.o_proj", width, heads * hd)
    d.norm(f"{name}.q_norm", hd)
    d.norm(f"{name}.k_norm", hd)


def mlp(d: Draw, name: str, width: int, inner: int) -> None:
    d.linear(f"{name}.gate_proj", inner, width)
    d.linear(f"{name}.up_proj", inner, width)
    d.linear(f"{name}.down_proj", width, inner)


def layer_stack(d: Draw, name: str, cfg: dict, n_layers: int) -> None:
    """`{name}.layers.{i}.*` (pre-norm attention + SwiGLU) and the final `{name}.norm`."""
    width, prefix = cfg["hidden_size"], f"{name}." if name else ""
    for i in range(n_layers):
        layer = f"{prefix}layers.{i}"
        d.norm(f"{layer}.input_layernorm", width)
        attention(d, f"{layer}.self_attn", cfg, width)
        d.norm(f"{layer}.post_attention_layernorm", width)
        mlp(d, f"{layer}.mlp", width, cfg["intermediate_size"])
    d.norm(f"{prefix}norm", width)


def qwen3_tensors(d: Draw, cfg: dict, prefix: str) -> None:
    """Qwen3Model keys (`prefix` "model" for Qwen3ForCausalLM); a tied LM head stores no `lm_head`."""
    d.normal(
        f"{prefix}.embed_tokens.weight" if prefix else "embed_tokens.weight",
        (cfg["vocab_size"], cfg["hidden_size"]),
        EMBED_STD,
    )
    layer_stack(d, prefix, cfg, cfg["num_hidden_layers"])


# --- DiT checkpoint (spec 2.1): decoder., encoder., tokenizer., detokenizer., null_condition_emb.


def timestep_embedding(d: Draw, name: str, width: int) -> None:
    d.linear(f"{name}.linear_1", width, 256, bias=True)
    d.linear(f"{name}.linear_2", width, width, bias=True)
    d.linear(f"{name}.time_proj", 6 * width, width, bias=True)


def dit_decoder(d: Draw, cfg: dict) -> None:
    w, p, latent = cfg["hidden_size"], cfg["patch_size"], cfg["audio_acoustic_hidden_dim"]
    d.normal("decoder.proj_in.1.weight", (w, cfg["in_channels"], p), (cfg["in_channels"] * p) ** -0.5)
    d.normal("decoder.proj_in.1.bias", (w,), BIAS_STD)
    timestep_embedding(d, "decoder.time_embed", w)
    timestep_embedding(d, "decoder.time_embed_r", w)
    d.linear("decoder.condition_embedder", w, w, bias=True)
    for i in range(cfg["num_hidden_layers"]):
        layer = f"decoder.layers.{i}"
        d.normal(f"{layer}.scale_shift_table", (1, 6, w), w**-0.5)
        d.norm(f"{layer}.self_attn_norm", w)
        attention(d, f"{layer}.self_attn", cfg, w)
        d.norm(f"{layer}.cross_attn_norm", w)
        attention(d, f"{layer}.cross_attn", cfg, w)
        d.norm(f"{layer}.mlp_norm", w)
        mlp(d, f"{layer}.mlp", w, cfg["intermediate_size"])
    d.norm("decoder.norm_out", w)
    d.normal("decoder.scale_shift_table", (1, 2, w), w**-0.5)
    # ConvTranspose1d [in, out, k] with kernel = stride: each output frame sees `w` inputs.
    d.normal("decoder.proj_out.1.weight", (w, latent, p), w**-0.5)
    d.normal("decoder.proj_out.1.bias", (latent,), BIAS_STD)


def dit_condition_side(d: Draw, cfg: dict) -> None:
    w, latent = cfg["hidden_size"], cfg["audio_acoustic_hidden_dim"]
    d.linear("encoder.text_projector", w, cfg["text_hidden_dim"])
    d.linear("encoder.lyric_encoder.embed_tokens", w, cfg["text_hidden_dim"], bias=True)
    layer_stack(d, "encoder.lyric_encoder", cfg, cfg["num_lyric_encoder_hidden_layers"])
    d.linear("encoder.timbre_encoder.embed_tokens", w, cfg["timbre_hidden_dim"], bias=True)
    d.normal("encoder.timbre_encoder.special_token", (1, 1, w), 1.0)
    layer_stack(d, "encoder.timbre_encoder", cfg, cfg["num_timbre_encoder_hidden_layers"])

    d.linear("tokenizer.audio_acoustic_proj", w, latent, bias=True)
    d.linear("tokenizer.attention_pooler.embed_tokens", w, w, bias=True)
    d.normal("tokenizer.attention_pooler.special_token", (1, 1, w), 1.0)
    layer_stack(d, "tokenizer.attention_pooler", cfg, cfg["num_attention_pooler_hidden_layers"])
    n_levels = len(cfg["fsq_input_levels"])
    d.linear("tokenizer.quantizer.project_in", n_levels, cfg["fsq_dim"], bias=True)
    d.linear("tokenizer.quantizer.project_out", cfg["fsq_dim"], n_levels, bias=True)

    d.linear("detokenizer.embed_tokens", w, w, bias=True)
    d.normal("detokenizer.special_tokens", (1, cfg["pool_window_size"], w), 1.0)
    layer_stack(d, "detokenizer", cfg, cfg["num_attention_pooler_hidden_layers"])
    d.linear("detokenizer.proj_out", latent, w, bias=True)
    d.normal("null_condition_emb", (1, 1, w), 1.0)


def silence_latent(rng: np.random.Generator, channels: int) -> np.ndarray:
    """Channel-first [1, C, T]: one vector held over time plus a little noise, like a VAE latent of silence."""
    level = 0.5 * rng.standard_normal((1, channels, 1), dtype=np.float32)
    return (level + 0.05 * rng.standard_normal((1, channels, SILENCE_FRAMES), dtype=np.float32)).astype(np.float32)


# --- Oobleck VAE (spec 2.3): every conv under legacy weight norm, Snake parameters [1, C, 1].


def residual_unit(d: Draw, name: str, width: int) -> None:
    d.snake(f"{name}.snake1", width)
    d.weight_norm_conv(f"{name}.conv1", (width, width, 7), width * 7, RESIDUAL_GAIN, bias=width)
    d.snake(f"{name}.snake2", width)
    d.weight_norm_conv(f"{name}.conv2", (width, width, 1), width, RESIDUAL_GAIN, bias=width)


def residual_units(d: Draw, block: str, width: int) -> None:
    for j in (1, 2, 3):  # dilations 1, 3, 9 live in the module, not in the weights
        residual_unit(d, f"{block}.res_unit{j}", width)


def vae_encoder(d: Draw, cfg: dict) -> None:
    h, mult = cfg["encoder_hidden_size"], [1, *cfg["channel_multiples"]]
    d.weight_norm_conv("encoder.conv1", (h, cfg["audio_channels"], 7), cfg["audio_channels"] * 7, bias=h)
    for i, stride in enumerate(cfg["downsampling_ratios"]):
        c_in, c_out, block = h * mult[i], h * mult[i + 1], f"encoder.block.{i}"
        residual_units(d, block, c_in)
        d.snake(f"{block}.snake1", c_in)
        d.weight_norm_conv(f"{block}.conv1", (c_out, c_in, 2 * stride), c_in * 2 * stride, bias=c_out)
    d.snake("encoder.snake1", h * mult[-1])
    d.weight_norm_conv("encoder.conv2", (h, h * mult[-1], 3), h * mult[-1] * 3, LATENT_GAIN, bias=h)


def vae_decoder(d: Draw, cfg: dict) -> None:
    c, mult, strides = cfg["decoder_channels"], [1, *cfg["channel_multiples"]], cfg["downsampling_ratios"][::-1]
    latent = cfg["decoder_input_channels"]
    d.weight_norm_conv("decoder.conv1", (c * mult[-1], latent, 7), latent * 7, bias=c * mult[-1])
    for i, stride in enumerate(strides):
        c_in, c_out, block = c * mult[len(strides) - i], c * mult[len(strides) - i - 1], f"decoder.block.{i}"
        d.snake(f"{block}.snake1", c_in)
        # ConvTranspose1d [in, out, 2s] with stride s: each output sample sees two taps per input channel.
        d.weight_norm_conv(f"{block}.conv_t1", (c_in, c_out, 2 * stride), 2 * c_in, bias=c_out)
        residual_units(d, block, c_out)
    d.snake("decoder.snake1", c)
    # No bias, as diffusers has it.
    d.weight_norm_conv("decoder.conv2", (cfg["audio_channels"], c, 7), c * 7, WAVEFORM_GAIN)


# --- Tokenizers: the text tokenizer ships as package data; the LM's adds the audio-code tokens to it.
