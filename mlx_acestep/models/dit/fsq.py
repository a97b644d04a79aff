"""FSQ audio tokenizer (25 Hz latents -> 5 Hz codes) and detokenizer (5 Hz -> 25 Hz hints), spec 3.4-3.5.

Module names mirror the DiT checkpoint (`tokenizer.attention_pooler.layers.0...`,
`tokenizer.quantizer.project_in`, `detokenizer.special_tokens`, ...). The
quantizer is the symmetric residual FSQ of vector-quantize-pytorch >= 1.27.15
with one quantizer in the released models; its projections run in float32
whatever the model dtype, as the reference does.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ...errors import AceStepError
from ..layers import EncoderStack
from .config import AceStepConfig


class AttentionPooler(EncoderStack):
    """One learned token prepended to every window of `pool_window_size` frames; its output is the window's summary."""

    def __init__(self, cfg: AceStepConfig):
        hidden = cfg.encoder_widths()["hidden"]
        super().__init__(cfg, hidden, cfg.num_attention_pooler_hidden_layers)
        self.special_token = mx.zeros((1, 1, hidden))

    def __call__(self, x: mx.array) -> mx.array:
        """`[B, T5, P, H]` -> `[B, T5, H]`."""
        b, t5, p, _ = x.shape
        h = self.embed_tokens(x)
        token = mx.broadcast_to(self.special_token.astype(h.dtype)[:, None], (b, t5, 1, h.shape[-1]))
        h = mx.concatenate([token, h], axis=2).reshape(b * t5, p + 1, -1)
        return self.run_layers(h, None)[:, 0].reshape(b, t5, -1)


class ResidualFSQ(nn.Module):
    def __init__(self, dim: int, levels: list[int], num_quantizers: int = 1):
        super().__init__()
        self.levels = [int(n) for n in levels]
        self.num_quantizers = num_quantizers
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)
        self.basis = np.cumprod([1] + self.levels[:-1]).tolist()

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def _consts(self):
        levels = mx.array(self.levels, dtype=mx.float32)
        return levels, mx.array(self.basis, dtype=mx.int32)

    def _project(self, layer: nn.Linear, x: mx.array) -> mx.array:
        # float32 whatever the model dtype (the reference up-casts around the rounding)
        return x.astype(mx.float32) @ layer.weight.astype(mx.float32).T + layer.bias.astype(mx.float32)

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """`[..., dim]` -> (quantized `[..., dim]` in x's dtype, indices `[..., num_quantizers]` int32)."""
        levels, basis = self._consts()
        z = self._project(self.project_in, x)
        clamp = 1.0 + 1.0 / (levels - 1.0)
        z = mx.tanh(z / clamp) * clamp
        step = 2.0 / (levels - 1.0)
        quantized = mx.zeros_like(z)
        residual = z
        indices = []
        for i in range(self.num_quantizers):
            scale = levels ** (-float(i))
            level = mx.floor((levels - 1.0) * (mx.clip(residual / scale, -1.0, 1.0) + 1.0) / 2.0 + 0.5)
            code = (step * level - 1.0) * scale
            residual = residual - code
            quantized = quantized + code
            indices.append(mx.sum(level.astype(mx.int32) * basis, axis=-1))
        return self._project(self.project_out, quantized).astype(x.dtype), mx.stack(indices, axis=-1)

    def from_indices(self, indices: mx.array) -> mx.array:
        """Code indices `[..., num_quantizers]` -> `project_out` of the summed codes `[..., dim]`."""
        if indices.shape[-1] != self.num_quantizers:
            raise AceStepError(
                f"audio codes must end in a axis of {self.num_quantizers}, got shape {tuple(indices.shape)}"
            )
        levels, basis = self._consts()
        dtype = self.project_out.weight.dtype
        codes = mx.zeros(indices.shape[:-1] + (len(self.levels),), dtype=mx.float32)
        for i in range(self.num_quantizers):
            level = (indices[..., i : i + 1].astype(mx.int32) // basis) % levels.astype(mx.int32)
            # the reference's implicit codebook lives in the model dtype, so the code values are rounded to it
            code = (level.astype(mx.float32) * (2.0 / (levels - 1.0)) - 1.0).astype(dtype).astype(mx.float32)
            codes = codes + code * levels ** (-float(i))
        return self._project(self.project_out, codes).astype(dtype)


class AceStepAudioTokenizer(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        hidden = cfg.encoder_widths()["hidden"]
        self.pool_window_size = cfg.pool_window_size
        self.audio_acoustic_proj = nn.Linear(cfg.audio_acoustic_hidden_dim, hidden)
        self.attention_pooler = AttentionPooler(cfg)
        self.quantizer = ResidualFSQ(cfg.fsq_dim, cfg.fsq_input_levels, cfg.fsq_input_num_quantizers)

    def __call__(self, windows: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """`[B, T5, P, C]` latent windows -> (quantized, indices, pooled)."""
        pooled = self.attention_pooler(self.audio_acoustic_proj(windows))
        quantized, indices = self.quantizer(pooled)
        return quantized, indices, pooled

    def tokenize(
        self, latents: mx.array, silence_latent: mx.array, attention_mask: mx.array | None = None
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """25 Hz latents `[B, T, C]` -> (quantized `[B, T5, H]`, indices `[B, T5, Q]`, 5 Hz mask `[B, T5]`, pooled).

        T is padded to a multiple of the window with the first frames of the silence latent.
        """
        b, length, channels = latents.shape
        p = self.pool_window_size
        pad = -length % p
        if pad:
            if silence_latent.shape[1] < pad:
                raise AceStepError(
                    f"the silence latent has {silence_latent.shape[1]} frames; {pad} are needed for padding"
                )
            fill = mx.broadcast_to(silence_latent[:1, :pad].astype(latents.dtype), (b, pad, channels))
            latents = mx.concatenate([latents, fill], axis=1)
        t5 = latents.shape[1] // p
        quantized, indices, pooled = self(latents.reshape(b, t5, p, channels))
        mask = mx.ones((b, length), dtype=mx.float32) if attention_mask is None else attention_mask.astype(mx.float32)
        # a 5 Hz frame is valid when any of its frames is (the padding counts as invalid)
        mask = mx.concatenate([mask, mx.zeros((b, pad), dtype=mask.dtype)], axis=1).reshape(b, t5, p).max(axis=-1)
        return quantized, indices, mask, pooled


class AudioTokenDetokenizer(EncoderStack):
    """Each 5 Hz token is repeated to `pool_window_size` slots plus learned per-slot offsets, refined, projected to latents."""

    def __init__(self, cfg: AceStepConfig):
        hidden = cfg.encoder_widths()["hidden"]
        super().__init__(cfg, hidden, cfg.num_attention_pooler_hidden_layers)
        self.pool_window_size = cfg.pool_window_size
        self.special_tokens = mx.zeros((1, cfg.pool_window_size, hidden))
        self.proj_out = nn.Linear(hidden, cfg.audio_acoustic_hidden_dim)

    def __call__(self, quantized: mx.array) -> mx.array:
        """`[B, T5, H]` -> 25 Hz hints `[B, T5 * P, C]`."""
        b, t5, _ = quantized.shape
        p = self.pool_window_size
        h = self.embed_tokens(quantized)[:, :, None, :] + self.special_tokens.astype(quantized.dtype)[None]
        h = self.run_layers(h.reshape(b * t5, p, -1), None)
        return self.proj_out(h).reshape(b, t5 * p, -1)
