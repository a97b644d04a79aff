"""From what the user asks for to the DiT's inputs, as the reference handler assembles them (spec 3.2, 3.3, 5.1, 5.4).

A batch of `ConditionInput`s (caption, lyrics, metas, language, task instruction,
optional reference latents) goes through three steps, the same for the pipeline,
the tests and a caller of the parts:

    tokens = tokenize_items(tokenizer, items)                  # prompts -> ids
    text = encode_prompts(text_encoder, tokens)                # the text encoder
    refer, order = reference_clips(items, silence, 750, dtype) # timbre clips
    prepared = dit.prepare_condition(text.text_hidden_states, text.text_attention_mask, text.lyric_hidden_states,
                                     text.lyric_attention_mask, refer, order, src_latents, chunk_masks, is_covers, silence)

`AceStepModel.prepare_condition` (the reference's method of the same name) is the one place where the
condition is assembled. What each step does:

- caption prompt -> tokenizer (256 tokens) -> Qwen3 text encoder, run without
  an attention mask (causal over the right-padded batch, as the reference);
- lyric prompt -> tokenizer (2048 tokens) -> the text encoder's embedding table only;
- reference latents -> a timbre window of 750 frames per clip, or the checkpoint's
  silence latent when an item has none;
- condition encoder -> [lyric | timbre | caption] with valid tokens first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..limits import CAPTION_TOKENS, LYRIC_TOKENS
from ..names import INSTRUMENTAL
from .prompts import Metas, PromptTokenizer, caption_prompt, instruction, lyric_prompt

if TYPE_CHECKING:
    from ..models.dit import AceStepModel
    from ..models.text_encoder import Qwen3TextEncoder

LatentClip = mx.array | np.ndarray


@dataclass
class ConditionInput:
    """One batch item.

    `reference_latents` are VAE latents `[T, C]` (or `[1, T, C]`) of a reference
    recording, or a list of such clips; None means "no reference" and uses the
    silence latent, as the reference does.
    """

    caption: str
    lyrics: str = INSTRUMENTAL
    metas: Metas | str | None = None
    language: str = "unknown"
    instruction: str | None = None  # None: text2music's; see prompts.instruction() for the others
    reference_latents: LatentClip | Sequence[LatentClip] | None = None


def timbre_window(latents: LatentClip, frames: int = 750, rng: np.random.Generator | None = None) -> mx.array:
    """A reference clip cut to exactly `frames` latent frames, as the reference cuts its audio.

    Shorter clips are repeated until they reach the window; the result is split
    into thirds and a `frames / 3` slice is taken from each (at a random offset
    drawn from `rng`, at the start of each third without one). A clip of exactly
    `frames` frames passes through unchanged. The reference does this on the
    waveform with unseeded randomness; here it is on latents and seeded.
    """
    x = latents if isinstance(latents, mx.array) else mx.array(np.asarray(latents))
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise AceStepError(f"reference latents must be [T, C] or [1, T, C], got shape {tuple(x.shape)}")
    length = x.shape[0]
    if length == 0:
        raise AceStepError("reference latents are empty (0 frames)")
    repeats = -(-frames // length)
    total = length * repeats
    thirds = [0, total // 3, 2 * (total // 3), total]
    pieces = [frames // 3, frames // 3, frames - 2 * (frames // 3)]
    index = []
    for i, piece in enumerate(pieces):
        room = thirds[i + 1] - thirds[i] - piece
        offset = int(rng.integers(0, room + 1)) if rng is not None and room > 0 else 0
        index.append(np.arange(thirds[i] + offset, thirds[i] + offset + piece))
    source = np.concatenate(index) % length  # repeating the clip = indexing it modulo its length
    return x[mx.array(source.astype(np.int32))]


class PromptTokens(NamedTuple):
    """Caption and lyric token ids `[B, L]` (int) with their masks (bool), right-padded."""

    text_ids: np.ndarray
    text_mask: np.ndarray
    lyric_ids: np.ndarray
    lyric_mask: np.ndarray


def tokenize_items(
    tokenizer: PromptTokenizer, items: Sequence[ConditionInput], empty_caption: bool = False
) -> PromptTokens:
    """Format each item's caption and lyric prompts and tokenize the batch (256 / 2048 tokens). `empty_caption`:
    an empty caption is encoded as it is (flow-edit's source side may be given as empty, as upstream allows)."""
    if not items:
        raise AceStepError("nothing to encode: the batch is empty")
    captions, lyrics = [], []
    for n, item in enumerate(items):
        if not isinstance(item.caption, str) or not (item.caption.strip() or empty_caption):
            raise AceStepError(f"item {n}: the caption is empty; describe the music (genre, mood, instruments)")
        if not isinstance(item.lyrics, str):
            raise AceStepError(f"item {n}: lyrics must be a string, got {type(item.lyrics).__name__}")
        captions.append(caption_prompt(item.caption, item.metas, item.instruction))
        lyrics.append(lyric_prompt(item.lyrics, item.language))
    return PromptTokens(*tokenizer.batch(captions, CAPTION_TOKENS), *tokenizer.batch(lyrics, LYRIC_TOKENS))


def reference_clips(
    items: Sequence[ConditionInput], silence_latent: mx.array, frames: int, dtype: mx.Dtype, seed: int = 0
) -> tuple[mx.array, np.ndarray]:
    """(`[N, frames, C]` timbre clips, `[N]` batch index of each): every item gets at least one.

    An item without reference latents gets the first `frames` of the silence latent, as the reference.
    """
    rng = np.random.default_rng(seed)
    channels = silence_latent.shape[2]
    clips, order = [], []
    for n, item in enumerate(items):
        refs = item.reference_latents
        if refs is None:
            clips.append(silence_latent[0, :frames])
            order.append(n)
            continue
        if isinstance(refs, (mx.array, np.ndarray)):
            refs = [refs]
        if len(refs) == 0:
            raise AceStepError(f"item {n}: the list of reference latents is empty (pass None for no reference)")
        for clip in refs:
            try:
                window = timbre_window(clip, frames, rng)
            except AceStepError as e:
                raise AceStepError(f"item {n}: {e}") from None
            if window.shape[1] != channels:
                raise AceStepError(f"item {n}: reference latents have {window.shape[1]} channels, expected {channels}")
            clips.append(window)
            order.append(n)
    return mx.stack(clips).astype(dtype), np.array(order)


@dataclass
class TextStates:
    """What the text encoder makes of a batch's prompts: the caption's hidden states, the lyrics' embeddings."""

    text_hidden_states: mx.array  # [B, Lt, text_hidden], the text encoder's last hidden state
    text_attention_mask: mx.array  # [B, Lt] bool
    lyric_hidden_states: mx.array  # [B, Ll, text_hidden], token embeddings only
    lyric_attention_mask: mx.array  # [B, Ll] bool


def encode_prompts(text_encoder: Qwen3TextEncoder, tokens: PromptTokens) -> TextStates:
    """The text encoder over the caption prompts, run without a mask (causal over the right-padded batch, as the
    reference), and its embedding table over the lyric prompts."""
    text = text_encoder(mx.array(tokens.text_ids))
    lyric = text_encoder.embed(mx.array(tokens.lyric_ids))
    return TextStates(text, mx.array(tokens.text_mask), lyric, mx.array(tokens.lyric_mask))


def planned_item(plan, caption: str, lyrics: str, duration: float, language: str) -> ConditionInput:
    """The DiT's inputs after planning (spec 8.6): the LM's caption and metadata, the cover instruction
    (codes make the task a cover of the hints). The LM's language is used when the user gave none: the
    reference means to, but reads a misnamed key and keeps "unknown" (spec 8.6); this port does it."""
    meta = plan.metadata
    metas = Metas(
        duration=duration, bpm=meta.get("bpm"), timesignature=meta.get("timesignature"), keyscale=meta.get("keyscale")
    )
    if language in (None, "", "unknown"):
        language = meta.get("language") or "unknown"
    return ConditionInput(meta.get("caption") or caption, lyrics, metas, language, instruction=instruction("cover"))


def code_hints(dit: AceStepModel, codes: np.ndarray, batch: int, frames: int, silence: mx.array, dtype) -> mx.array:
    """Planner codes `[B, n]` -> 25 Hz hints `[B, frames, C]`: detokenized, padded with the silence latent's first
    frames (or cropped) to the target length (spec 5.3)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != batch or codes.shape[1] < 1:
        raise AceStepError(f"codes have shape {codes.shape}, expected [{batch}, n]")
    hints = dit.codes_to_hints(mx.array(codes.astype(np.int32))).astype(dtype)
    short = frames - hints.shape[1]
    if short > 0:
        pad = silence[:, :short].astype(dtype)
        hints = mx.concatenate([hints, mx.broadcast_to(pad, (hints.shape[0], short, pad.shape[2]))], axis=1)
    return hints[:, :frames]
