"""From what the user asks for to the packed encoder states the DiT cross-attends to.

One call turns a batch of requests (caption, lyrics, metas, language, task
instruction, optional reference latents) into `encoder_hidden_states`
`[B, L, E]` and its mask, as the reference handler assembles them (spec 3.2,
3.3, 5.1, 5.4):

- caption prompt -> tokenizer (256 tokens) -> Qwen3 text encoder, run without
  an attention mask (causal over the right-padded batch, as the reference);
- lyric prompt -> tokenizer (2048 tokens) -> the text encoder's embedding table only;
- reference latents -> a timbre window of 750 frames per clip, or the checkpoint's
  silence latent when an item has none;
- condition encoder -> [lyric | timbre | caption] with valid tokens first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..models.dit import AceStepModel
from .prompts import CAPTION_MAX_TOKENS, LYRIC_MAX_TOKENS, Metas, PromptTokenizer, caption_prompt, lyric_prompt
from ..models.text_encoder import Qwen3TextEncoder

LatentClip = Union[mx.array, np.ndarray]


@dataclass
class ConditionInput:
    """One batch item.

    `reference_latents` are VAE latents `[T, C]` (or `[1, T, C]`) of a reference
    recording, or a list of such clips; None means "no reference" and uses the
    silence latent, as the reference does.
    """

    caption: str
    lyrics: str = "[Instrumental]"
    metas: Metas | str | None = None
    language: str = "unknown"
    instruction: str | None = None  # None: text2music's; see prompts.instruction() for the others
    reference_latents: LatentClip | Sequence[LatentClip] | None = None


@dataclass
class EncodedConditions:
    encoder_hidden_states: mx.array  # [B, L, E]
    encoder_attention_mask: mx.array  # [B, L] bool, a prefix of ones (the DiT ignores it)
    text_hidden_states: mx.array  # [B, Lt, text_hidden], the text encoder's output
    text_attention_mask: mx.array  # [B, Lt] bool
    lyric_hidden_states: mx.array  # [B, Ll, text_hidden], token embeddings
    lyric_attention_mask: mx.array  # [B, Ll] bool


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


def tokenize_items(tokenizer: PromptTokenizer, items: Sequence[ConditionInput]) -> PromptTokens:
    """Format each item's caption and lyric prompts and tokenize the batch (256 / 2048 tokens)."""
    captions, lyrics = [], []
    for n, item in enumerate(items):
        if not isinstance(item.caption, str) or not item.caption.strip():
            raise AceStepError(f"item {n}: the caption is empty; describe the music (genre, mood, instruments)")
        if not isinstance(item.lyrics, str):
            raise AceStepError(f"item {n}: lyrics must be a string, got {type(item.lyrics).__name__}")
        captions.append(caption_prompt(item.caption, item.metas, item.instruction))
        lyrics.append(lyric_prompt(item.lyrics, item.language))
    return PromptTokens(*tokenizer.batch(captions, CAPTION_MAX_TOKENS), *tokenizer.batch(lyrics, LYRIC_MAX_TOKENS))


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


class ConditionBuilder:
    """The text encoder, its tokenizer and the DiT's condition encoder, with the silence latent."""

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        text_encoder: Qwen3TextEncoder,
        dit: AceStepModel,
        silence_latent: mx.array,
        timbre_frames: int | None = None,
    ):
        """`timbre_frames` defaults to the DiT config's `timbre_fix_frame` (750 = 30 s)."""
        timbre_frames = timbre_frames or dit.config.timbre_fix_frame
        if silence_latent.ndim != 3 or silence_latent.shape[1] < timbre_frames:
            raise AceStepError(
                f"the silence latent {tuple(silence_latent.shape)} is shorter than the {timbre_frames}-frame timbre window"
            )
        self.tokenizer, self.text_encoder, self.dit = tokenizer, text_encoder, dit
        self.silence_latent, self.timbre_frames = silence_latent, timbre_frames

    @classmethod
    def from_folders(cls, text_encoder_dir: str | Path, dit_dir: str | Path, timbre_frames: int | None = None):
        """Load from converted folders (`mlx-acestep convert`): Qwen3-Embedding-0.6B/ and acestep-v15-*/."""
        from ..loading import load_component, load_silence_latent

        return cls(
            PromptTokenizer(text_encoder_dir),
            load_component(text_encoder_dir, "text_encoder"),
            load_component(dit_dir, "dit"),
            load_silence_latent(dit_dir),
            timbre_frames,
        )

    @property
    def dtype(self):
        return self.dit.dtype

    def tokenize(self, items: Sequence[ConditionInput]) -> PromptTokens:
        return tokenize_items(self.tokenizer, items)

    def references(self, items: Sequence[ConditionInput], seed: int = 0) -> tuple[mx.array, np.ndarray]:
        return reference_clips(items, self.silence_latent, self.timbre_frames, self.dtype, seed)

    def __call__(self, items: ConditionInput | Sequence[ConditionInput], seed: int = 0) -> EncodedConditions:
        """Encode a batch (ragged prompts and references are fine). `seed` picks the timbre slices."""
        if isinstance(items, ConditionInput):
            items = [items]
        if not items:
            raise AceStepError("nothing to encode: the batch is empty")
        text_ids, text_mask, lyric_ids, lyric_mask = self.tokenize(items)
        refer, order = self.references(items, seed)
        text_hidden = self.text_encoder(mx.array(text_ids))  # no mask: causal, as the reference
        lyric_hidden = self.text_encoder.embed(mx.array(lyric_ids))
        text_mask, lyric_mask = mx.array(text_mask), mx.array(lyric_mask)
        states, mask = self.dit.encoder(
            text_hidden.astype(self.dtype), text_mask, lyric_hidden.astype(self.dtype), lyric_mask, refer, mx.array(order)
        )
        return EncodedConditions(states, mask, text_hidden, text_mask, lyric_hidden, lyric_mask)
