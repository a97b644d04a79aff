"""Preprocessing, once per clip: the tensors generation would use, cached on disk.

Each clip is VAE-encoded to 25 Hz latents (the pipeline's own seeded posterior draw of `encode_audio`), and its
caption, lyrics and metadata go through the pipeline's own text2music condition path (prompt -> Qwen3 -> lyric
and timbre encoders -> packed `encoder_hidden_states`), with the clip's whole duration in the `# Metas` block as
the reference's preprocessing writes it. The cache file is keyed by the audio's bytes, the text, the model and
the seed, so editing a caption re-encodes only that clip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..files import atomic_file
from ..limits import seconds_of
from ..safetensors_io import read_safetensors
from .dataset import Clip


def _cache_key(clip: Clip, model: str, seed: int) -> str:
    digest = hashlib.sha256()
    with open(clip.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    text = json.dumps([clip.caption, clip.lyrics, clip.bpm, clip.key, clip.time_signature, clip.language, model, seed])
    digest.update(text.encode())
    return digest.hexdigest()[:24]


def clip_condition(pipe, clip: Clip, frames: int) -> mx.array:
    """The packed condition `[L, E]` the pipeline builds for this clip's text2music request."""
    from ..conditioning.inputs import ConditionInput
    from ..conditioning.prompts import Metas, instruction
    from ..pipeline.request import normalize_key, normalize_time_signature

    metas = Metas(
        duration=seconds_of(frames),
        bpm=clip.bpm,
        timesignature=normalize_time_signature(clip.time_signature),
        keyscale=normalize_key(clip.key),
    )
    item = ConditionInput(clip.caption, clip.lyrics, metas, clip.language, instruction("text2music"))
    states, _ = pipe.encode_condition([item], frames)
    return states[0]


def preprocess(
    pipe, clips: list[Clip], folder: Path, seed: int, progress: Callable[[int, int], None] | None = None
) -> list[dict]:
    """Per clip {"target_latents" [T, 64], "encoder_hidden_states" [L, E], "caption"}, from the cache when it has them."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AceStepError(
            f"{folder}: cannot keep the preprocessed clips there ({e.strerror or e}); give a writable --cache-dir"
        ) from None
    out = []
    for n, clip in enumerate(clips):
        # the latents come from the VAE, the condition from the text encoder and the DiT's condition encoder: each
        # is its own cache entry, so all three paths are in the key
        made_by = json.dumps([str(pipe.folders.vae), str(pipe.folders.text_encoder), str(pipe.folders.dit)])
        file = folder / f"{_cache_key(clip, made_by, seed)}.safetensors"
        if file.is_file():
            tensors = read_safetensors(file)
        else:
            latents = pipe.encode_audio(clip.path, seed=seed)
            states = clip_condition(pipe, clip, latents.shape[0])
            tensors = {
                "target_latents": np.array(latents.astype(mx.float32)),
                "encoder_hidden_states": np.array(states.astype(mx.float32)),
            }
            from safetensors.numpy import save

            try:
                with atomic_file(file) as tmp:
                    tmp.write_bytes(save(tensors))
            except OSError as e:
                raise AceStepError(
                    f"{folder}: cannot keep the preprocessed clips there ({e.strerror or e}); "
                    "give a writable --cache-dir"
                ) from None
        out.append(
            {
                "target_latents": mx.array(tensors["target_latents"]),
                "encoder_hidden_states": mx.array(tensors["encoder_hidden_states"]),
                "caption": clip.caption,
            }
        )
        if progress is not None:
            progress(n + 1, len(clips))
    return out
