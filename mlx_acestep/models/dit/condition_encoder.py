"""Condition encoder (spec 3.3): text projector, lyric encoder, timbre encoder, packing.

Module and attribute names mirror the reference (`encoder.lyric_encoder.layers.0.self_attn.q_proj`, ...)
so checkpoint keys map one to one.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ...errors import AceStepError
from ..layers import EncoderStack
from .config import AceStepConfig


class AceStepLyricEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.text_hidden_dim, cfg.num_lyric_encoder_hidden_layers)

    def __call__(self, inputs_embeds: mx.array, attention_mask: mx.array) -> mx.array:
        """`[B, L, text_hidden]` lyric embeddings + `[B, L]` mask -> `[B, L, hidden]` (padded rows computed too)."""
        return self.run_layers(self.embed_tokens(inputs_embeds), attention_mask)


class AceStepTimbreEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.timbre_hidden_dim, cfg.num_timbre_encoder_hidden_layers)
        self.special_token = mx.zeros((1, 1, cfg.encoder_widths()["hidden"]))

    def __call__(self, packed: mx.array, order: mx.array) -> tuple[mx.array, mx.array]:
        """`[N, T, 64]` reference latents + `[N]` batch index per clip -> (`[B, max_clips, hidden]`, `[B, max_clips]` int mask)."""
        if packed.ndim != 3 or order.ndim != 1 or order.shape[0] != packed.shape[0]:
            raise AceStepError(f"reference latents {tuple(packed.shape)} and order {tuple(order.shape)} do not match")
        h = self.embed_tokens(packed)
        if self.cfg.is_xl:  # XL reads a learned CLS token; 2B reads frame 0 of the clip
            h = mx.concatenate(
                [mx.broadcast_to(self.special_token.astype(h.dtype), (h.shape[0], 1, h.shape[2])), h], axis=1
            )
        pooled = self.run_layers(h, None)[:, 0]
        return unpack_by_order(pooled, np.array(order).astype(np.int64))


def unpack_by_order(rows: mx.array, order: np.ndarray) -> tuple[mx.array, mx.array]:
    """Group rows per batch item (in order of appearance) into `[B, max_count, D]`, zero-filled, with a mask."""
    if order.size == 0 or order.min() < 0:
        raise AceStepError("reference order must be non-negative batch indices")
    batch = int(order.max()) + 1
    counts = np.bincount(order, minlength=batch)
    max_count = int(counts.max())
    slot = np.zeros_like(order)
    seen = np.zeros(batch, dtype=np.int64)
    for n, b in enumerate(order):
        slot[n], seen[b] = seen[b], seen[b] + 1
    source = np.full(batch * max_count, -1, dtype=np.int64)
    source[order * max_count + slot] = np.arange(order.size)
    valid = source >= 0
    gathered = rows[mx.array(np.where(valid, source, 0).astype(np.int32))]
    out = mx.where(mx.array(valid)[:, None], gathered, mx.zeros_like(gathered))
    return out.reshape(batch, max_count, -1), mx.array(valid.reshape(batch, max_count).astype(np.int64))


def pack_sequences(h1: mx.array, h2: mx.array, m1: mx.array, m2: mx.array) -> tuple[mx.array, mx.array]:
    """cat([h1, h2]) with valid tokens first (stable), padded tokens kept at the end; mask = prefix of ones."""
    h = mx.concatenate([h1, h2], axis=1)
    mask = np.concatenate([np.array(m1).astype(bool), np.array(m2).astype(bool)], axis=1)
    order = np.argsort(~mask, axis=1, kind="stable")
    h = mx.take_along_axis(h, mx.array(order.astype(np.int32))[:, :, None], axis=1)
    lengths = mask.sum(axis=1)
    return h, mx.array(np.arange(mask.shape[1])[None, :] < lengths[:, None])


class AceStepConditionEncoder(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.text_projector = nn.Linear(cfg.text_hidden_dim, cfg.encoder_widths()["hidden"], bias=False)
        self.lyric_encoder = AceStepLyricEncoder(cfg)
        self.timbre_encoder = AceStepTimbreEncoder(cfg)

    def __call__(
        self,
        text_hidden_states: mx.array,
        text_attention_mask: mx.array,
        lyric_hidden_states: mx.array,
        lyric_attention_mask: mx.array,
        refer_packed: mx.array,
        refer_order: mx.array,
    ) -> tuple[mx.array, mx.array]:
        """-> (encoder_hidden_states `[B, Ll + clips + Lt, hidden]`, mask `[B, ...]` bool, a prefix of ones)."""
        text = self.text_projector(text_hidden_states)
        lyric = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_packed, refer_order)
        if timbre.shape[0] != text.shape[0]:
            raise AceStepError(f"reference clips cover {timbre.shape[0]} batch items, the captions {text.shape[0]}")
        h, mask = pack_sequences(lyric, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(h, text, mask, text_attention_mask)
