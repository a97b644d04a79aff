"""Qwen3-Embedding-0.6B as ACE-Step's caption encoder, on mlx-lm's Qwen3.

Two uses, as the reference pipeline has them (spec 3.2):
- captions: the full last hidden state (after the final RMSNorm), not pooled.
  The reference calls it without an attention mask, so only the causal mask
  applies and right-padding tokens get real hidden states that end up in the
  condition sequence; an optional padding mask (causal + key padding) is
  supported for callers that want it;
- lyrics: the raw token-embedding lookup, no transformer layers.
Weight keys are mlx-lm's `Qwen3Model` keys without prefix, as the checkpoint stores them;
`sanitize` removes the `model.` prefix some exports carry and a tied `lm_head`.
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.qwen3 import ModelArgs, Qwen3Model

from ..errors import AceStepError
from .base import check_types, missing_key_error


def qwen3_args(config: dict, source: str = "config.json") -> ModelArgs:
    """mlx-lm's Qwen3 arguments; a missing key is a one-line error naming `source` and the key.

    transformers 5 writes the rope base under `rope_parameters`; older mlx-lm versions only read `rope_theta`.
    """
    rope = config.get("rope_parameters")
    if "rope_theta" not in config and isinstance(rope, dict) and "rope_theta" in rope:
        config = {**config, "rope_theta": rope["rope_theta"]}
    check_types(ModelArgs, config, source)
    try:
        return ModelArgs.from_dict(config)
    except TypeError as e:
        raise missing_key_error(source, e) from None
    except ValueError as e:
        raise AceStepError(f"{source}: invalid Qwen3 config ({e})") from None


def text_encoder_args(config: dict, source: str = "config.json") -> ModelArgs:
    return qwen3_args(config, source)


class Qwen3TextEncoder(Qwen3Model):
    # The lyric branch reads the embedding table directly: it stays at full precision when quantized.
    QUANTIZE_KEEP = ("embed_tokens",)
    QUANTIZE_AT_LEAST_8: tuple[str, ...] = ()

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for key, value in weights.items():
            name = key.removeprefix("model.")
            if self.args.tie_word_embeddings and name == "lm_head.weight":
                continue
            out[name] = value
        return out

    @staticmethod
    def source_name(key: str) -> str:
        return f"'{key}'"

    def __call__(self, input_ids: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """`[B, L]` ids -> `[B, L, hidden]` last hidden state; `attention_mask` `[B, L]` (1 = token) is optional."""
        self._check_ids(input_ids)
        h = self.embed_tokens(input_ids)
        length = input_ids.shape[1]
        mask = "causal"
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise AceStepError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(input_ids.shape)}"
                )
            causal = mx.tril(mx.ones((length, length), dtype=mx.bool_))
            mask = causal[None, None] & attention_mask.astype(mx.bool_)[:, None, None, :]
        for layer in self.layers:
            h = layer(h, mask, None)
        return self.norm(h)

    def embed(self, input_ids: mx.array) -> mx.array:
        """The raw embedding lookup the reference uses for lyrics."""
        self._check_ids(input_ids)
        return self.embed_tokens(input_ids)

    def _check_ids(self, ids: mx.array) -> None:
        if ids.ndim != 2:
            raise AceStepError(f"token ids must be [batch, length], got {tuple(ids.shape)}")
