"""The 5 Hz planner LM (`acestep-5Hz-lm-*`, a Qwen3ForCausalLM) on mlx-lm's Qwen3.

The model is mlx-lm's own `qwen3.Model` (keys `model.*`, tied `lm_head`), so a
converted folder also loads with `mlx_lm.load`. What mlx-lm's forward lacks is a
key-padding mask: the reference batches [conditional, unconditional] prompts
left-padded and masks the pads as keys only, with positions 0..L-1 on every row
(no position ids are passed: a reference quirk, spec 8.5). `logits()` adds that
mask on top of the causal one and keeps it across KV-cached steps.
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.qwen3 import Model, ModelArgs

from ..errors import AceStepError
from .text_encoder import qwen3_args


def planner_args(config: dict, source: str = "config.json") -> ModelArgs:
    return qwen3_args(config, source)


class PlannerLM(Model):
    # 4-bit output logits move the argmax of the audio codes: the embedding (the tied head) and any separate
    # head stay at 8 bits at least.
    QUANTIZE_KEEP: tuple[str, ...] = ()
    QUANTIZE_AT_LEAST_8 = ("embed_tokens", "lm_head")

    def sanitize(self, weights: dict) -> dict:
        """mlx-lm's Qwen3 names (`model.*`, a tied `lm_head` dropped); some official files leave out the
        `model.` prefix (the reference's own MLX loader re-prefixes them), so it is added where missing."""
        weights = {
            k if k.startswith("model.") or k.startswith("lm_head.") else f"model.{k}": v for k, v in weights.items()
        }
        return super().sanitize(weights)

    @staticmethod
    def source_name(key: str) -> str:
        return f"'{key}'"

    def logits(self, input_ids: mx.array, cache=None, key_mask: mx.array | None = None) -> mx.array:
        """`[B, L]` ids -> `[B, L, vocab]` logits. `key_mask` `[B, K]` covers every key so far (cache + these ids)."""
        return self.head()(self.hidden(input_ids, cache, key_mask))

    def hidden(self, input_ids: mx.array, cache=None, key_mask: mx.array | None = None) -> mx.array:
        """The final normed hidden states `[B, L, hidden]` (see `logits`)."""
        if input_ids.ndim != 2:
            raise AceStepError(f"token ids must be [batch, length], got {tuple(input_ids.shape)}")
        if key_mask is None:
            return self.model(input_ids, cache=cache)
        h = self.model.embed_tokens(input_ids)
        length, keys = input_ids.shape[1], key_mask.shape[1]
        past = keys - length
        causal = mx.arange(past, keys)[:, None] >= mx.arange(keys)[None]  # query i sees keys up to past + i
        mask = causal[None, None] & key_mask.astype(mx.bool_)[:, None, None, :]
        for layer, c in zip(self.model.layers, cache or [None] * len(self.model.layers)):
            h = layer(h, mask, c)
        return self.model.norm(h)

    def head(self, start: int = 0, stop: int | None = None):
        """The output projection over vocabulary rows [start, stop) only, as a function of the hidden states.

        The codes phase needs the audio-code rows alone: on the real LM that skips 70% of the head, a
        third of a 0.6B model's weight reads per token. Rows of a quantized table slice like a plain one
        (groups run along the hidden size)."""
        layer = self.model.embed_tokens if self.args.tie_word_embeddings else self.lm_head
        stop = self.args.vocab_size if stop is None else stop
        if (start, stop) == (0, self.args.vocab_size):
            return layer.as_linear if self.args.tie_word_embeddings else layer
        weight = layer["weight"][start:stop]
        if "scales" not in layer:
            return lambda h: h @ weight.T
        scales, biases = layer["scales"][start:stop], layer.get("biases")
        biases = None if biases is None else biases[start:stop]
        return lambda h: mx.quantized_matmul(
            h,
            weight,
            scales=scales,
            biases=biases,
            transpose=True,
            group_size=layer.group_size,
            bits=layer.bits,
            mode=layer.mode,
        )
