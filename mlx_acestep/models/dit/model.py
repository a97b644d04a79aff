"""The whole DiT checkpoint (`AceStepConditionGenerationModel`): its modules named as in `model.safetensors`,
the condition assembly the samplers consume (spec 3.8), and `sanitize`, where checkpoint names become ours.

The one remap is the pair of patch convolutions: with kernel = stride = 2 they are
plain linear maps over pairs of frames, stored as such (spec 2.5):

    decoder.proj_in.1.weight   [D, 192, 2] -> decoder.proj_in.weight  [D, 2*192]
    decoder.proj_out.1.weight  [D, 64, 2]  -> decoder.proj_out.weight [2*64, D]
    decoder.proj_out.1.bias    [64]        -> decoder.proj_out.bias   [2*64] (once per frame)
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ...errors import AceStepError
from .condition_encoder import AceStepConditionEncoder
from .config import AceStepConfig
from .decoder import AceStepDiTModel
from .fsq import AceStepAudioTokenizer, AudioTokenDetokenizer


@dataclass
class PreparedCondition:
    encoder_hidden_states: mx.array  # [B, L, E] packed condition
    encoder_attention_mask: mx.array  # [B, L] bool (the DiT ignores it)
    context_latents: mx.array  # [B, T, 128] = [src or hints | chunk mask]


PATCH_RENAMES = {
    "decoder.proj_in.1.weight": "decoder.proj_in.weight",
    "decoder.proj_in.1.bias": "decoder.proj_in.bias",
    "decoder.proj_out.1.weight": "decoder.proj_out.weight",
    "decoder.proj_out.1.bias": "decoder.proj_out.bias",
}
_SOURCE_NAMES = {v: k for k, v in PATCH_RENAMES.items()}

DIT_PARTS = ("encoder", "decoder", "tokenizer", "detokenizer", "null_condition_emb")


class AceStepModel(nn.Module):
    """`parts` builds only those top-level modules (a phase that only samples needs no condition encoder;
    folders from old diffusers converters hold no audio tokenizer)."""

    # Quantization keeps these at full precision: input projections, the FSQ projections (they decide the
    # codes), the patch maps; and these at 8 bits at least: the timestep embedders and their AdaLN projection.
    QUANTIZE_KEEP = ("embed_tokens", "quantizer", "proj_in", "proj_out", "audio_acoustic_proj")
    QUANTIZE_AT_LEAST_8 = ("time_embed",)

    def __init__(self, cfg: AceStepConfig, parts: tuple[str, ...] | None = None):
        super().__init__()
        self.config = cfg
        parts = DIT_PARTS if parts is None else parts
        unknown = set(parts) - set(DIT_PARTS)
        if unknown:
            raise AceStepError(f"unknown DiT part(s) {sorted(unknown)}; choose from {list(DIT_PARTS)}")
        if "encoder" in parts:
            self.encoder = AceStepConditionEncoder(cfg)
        if "decoder" in parts:
            self.decoder = AceStepDiTModel(cfg)
        if "tokenizer" in parts:
            self.tokenizer = AceStepAudioTokenizer(cfg)
        if "detokenizer" in parts:
            self.detokenizer = AudioTokenDetokenizer(cfg)
        if "null_condition_emb" in parts:
            self.null_condition_emb = mx.zeros((1, 1, cfg.encoder_widths()["hidden"]))
        self.parts = tuple(p for p in DIT_PARTS if p in parts)

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """An original-layout checkpoint's tensors under this module's names (lazy arrays stay lazy)."""
        out = {}
        for key, value in weights.items():
            if key.endswith("rotary_emb.inv_freq"):  # recomputed, never loaded
                continue
            name = PATCH_RENAMES.get(key, key)
            if key == "decoder.proj_in.1.weight" and value.ndim == 3:  # [D, C, K] -> [D, K*C]
                value = value.transpose(0, 2, 1).reshape(value.shape[0], -1)
            elif key == "decoder.proj_out.1.weight" and value.ndim == 3:  # [D, C, K] -> [K*C, D]
                value = value.transpose(2, 1, 0).reshape(-1, value.shape[0])
            elif key == "decoder.proj_out.1.bias":
                value = mx.tile(value, (self.config.patch_size,))
            out[name] = value
        return out

    @staticmethod
    def source_name(key: str) -> str:
        """The checkpoint tensor a key of ours comes from (for error messages)."""
        return f"'{_SOURCE_NAMES.get(key, key)}'"

    @property
    def dtype(self):
        """The compute dtype: that of the first floating-point parameter."""
        from mlx.utils import tree_flatten

        for _, v in tree_flatten(self.parameters()):
            if mx.issubdtype(v.dtype, mx.floating):
                return v.dtype
        return mx.float32

    def require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.parts]
        if missing:
            raise AceStepError(
                f"this DiT was loaded without {', '.join(missing)} (loaded: {', '.join(self.parts)}); "
                "the checkpoint or the `parts` argument leaves it out"
            )

    def codes_to_hints(self, codes: mx.array) -> mx.array:
        """5 Hz audio codes `[B, T5]` or `[B, T5, Q]` -> 25 Hz hints `[B, 5 T5, C]` (spec 5.3)."""
        self.require("tokenizer", "detokenizer")
        if codes.ndim == 2:
            codes = codes[..., None]
        size = self.tokenizer.quantizer.codebook_size
        codes = mx.clip(codes, 0, size - 1)  # as upstream: out-of-range codes are clamped
        return self.detokenizer(self.tokenizer.quantizer.from_indices(codes))

    def fsq_round_trip(self, latents: mx.array, silence_latent: mx.array) -> mx.array:
        """Latents `[B, T, C]` -> tokenize -> detokenize, cropped to T: what a cover hears of its source."""
        self.require("tokenizer", "detokenizer")
        quantized = self.tokenizer.tokenize(latents, silence_latent)[0]
        return self.detokenizer(quantized)[:, : latents.shape[1]]

    def prepare_condition(
        self,
        text_hidden_states: mx.array,
        text_attention_mask: mx.array,
        lyric_hidden_states: mx.array,
        lyric_attention_mask: mx.array,
        refer_packed: mx.array,
        refer_order: mx.array,
        src_latents: mx.array,
        chunk_masks: mx.array,
        is_covers: mx.array,
        silence_latent: mx.array,
        hints: mx.array | None = None,
    ) -> PreparedCondition:
        """Condition encoder + context latents: rows with `is_covers` take `hints` (or the FSQ round trip of `src_latents`)."""
        states, mask = self.encoder(
            text_hidden_states,
            text_attention_mask,
            lyric_hidden_states,
            lyric_attention_mask,
            refer_packed,
            refer_order,
        )
        return PreparedCondition(
            states, mask, self.context_latents(src_latents, chunk_masks, is_covers, silence_latent, hints)
        )

    def context_latents(
        self,
        src_latents: mx.array,
        chunk_masks: mx.array,
        is_covers: mx.array,
        silence_latent: mx.array,
        hints: mx.array | None = None,
    ) -> mx.array:
        b, length, channels = src_latents.shape
        if chunk_masks.shape[:2] != (b, length):
            raise AceStepError(
                f"chunk masks {tuple(chunk_masks.shape)} do not match the source latents {tuple(src_latents.shape)}"
            )
        if chunk_masks.ndim == 2:  # one value per frame, as the handler builds it before broadcasting
            chunk_masks = mx.broadcast_to(chunk_masks[..., None], (b, length, channels))
        covers = mx.array(is_covers).astype(mx.bool_).reshape(b, 1, 1)
        if hints is None:
            # Upstream computes the round trip for every row and discards it for non-cover rows; skip it when none covers.
            hints = self.fsq_round_trip(src_latents, silence_latent) if bool(covers.any()) else src_latents
        elif hints.shape[1] < length:
            raise AceStepError(f"hints cover {hints.shape[1]} frames, the target {length}")
        src = mx.where(covers, hints[:, :length].astype(src_latents.dtype), src_latents)
        return mx.concatenate([src, chunk_masks.astype(src.dtype)], axis=-1)
