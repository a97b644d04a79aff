"""Preprocessing, once per clip: the tensors generation would use, cached on disk.

Each clip is VAE-encoded to 25 Hz latents (the engine's seeded posterior draw, as generation encodes a source),
and its caption, lyrics and metadata go through the engine's text2music condition step (prompt -> Qwen3 -> lyric
and timbre encoders -> packed `encoder_hidden_states`), with the clip's whole duration in the `# Metas` block as
the reference's preprocessing writes it. Each phase's modules are loaded once for all the clips that need it and
freed after. The cache file is keyed by the audio's bytes, the text, the model folders and the seed, so editing
a caption re-encodes only that clip.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..checkpoint import Checkpoint
from ..conditioning.inputs import ConditionInput, tokenize_items
from ..conditioning.prompts import Metas, instruction
from ..conditioning.sources import read_audio
from ..engine import ConditionJob
from ..errors import AceStepError
from ..files import atomic_file
from ..limits import VAE_CHUNK, VAE_OVERLAP, seconds_of
from ..safetensors_io import read_safetensors
from .dataset import Clip

CHUNK_CLIPS = 8


def _cache_key(clip: Clip, model: str, seed: int) -> str:
    digest = hashlib.sha256()
    with open(clip.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    text = json.dumps([clip.caption, clip.lyrics, clip.bpm, clip.key, clip.time_signature, clip.language, model, seed])
    digest.update(text.encode())
    return digest.hexdigest()[:24]


def clip_item(clip: Clip, frames: int) -> ConditionInput:
    """The text2music batch item of this clip's request, its whole length in the metadata."""
    from ..pipeline.request import normalize_key, normalize_time_signature

    metas = Metas(
        duration=seconds_of(frames),
        bpm=clip.bpm,
        timesignature=normalize_time_signature(clip.time_signature),
        keyscale=normalize_key(clip.key),
    )
    return ConditionInput(clip.caption, clip.lyrics, metas, clip.language, instruction("text2music"))


def clip_condition(checkpoint: Checkpoint, engine, text_encoder, dit, clip: Clip, frames: int) -> mx.array:
    """The packed condition `[L, E]` generation builds for this clip's text2music request over `frames`."""
    item = clip_item(clip, frames)
    text = engine.encode_text(text_encoder, tokenize_items(checkpoint.tokenizer, [item]))
    job = ConditionJob([item], frames, timbre_frames=checkpoint.config.timbre_fix_frame)
    return engine.condition(dit, text, job)[0][0]


def encode_clips(checkpoint: Checkpoint, clips: list[Clip], seed: int, engine=None, tick=None) -> list[dict]:
    """{"target_latents" [T, 64], "encoder_hidden_states" [L, E]} per clip, one phase at a time for all of them;
    `tick()` after each clip of each phase."""
    engine, tick = engine or checkpoint.engine(), tick or (lambda: None)
    vae, latents = checkpoint.load("vae_encoder"), []
    for clip in clips:
        latents.append(engine.encode_audio(vae, read_audio(clip.path), seed, VAE_CHUNK, VAE_OVERLAP))
        tick()
    del vae
    # the text encoder and the condition encoder together: a clip's text states are used at once, never kept
    modules, states = (checkpoint.load("text_encoder"), checkpoint.load("condition")), []
    for clip, x in zip(clips, latents):
        states.append(clip_condition(checkpoint, engine, *modules, clip, x.shape[0]))
        tick()
    return [{"target_latents": x, "encoder_hidden_states": s} for x, s in zip(latents, states)]


def preprocess(
    checkpoint: Checkpoint,
    clips: list[Clip],
    folder: Path,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    engine=None,
) -> list[dict]:
    """Per clip {"target_latents" [T, 64], "encoder_hidden_states" [L, E], "caption"}, from the cache when it has them."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AceStepError(
            f"{folder}: cannot keep the preprocessed clips there ({e.strerror or e}); give a writable --cache-dir"
        ) from None
    # the latents come from the VAE, the condition from the text encoder and the DiT's condition encoder: each is
    # its own cache entry, so all three paths are in the key
    folders = checkpoint.folders
    made_by = json.dumps([str(folders.vae), str(folders.text_encoder), str(folders.dit)])
    files = [folder / f"{_cache_key(clip, made_by, seed)}.safetensors" for clip in clips]
    todo = [n for n, file in enumerate(files) if not file.is_file()]
    mine = _my_share(todo)  # across ranks: the clips no rank has cached, split between them
    done = [2 * (len(clips) - len(todo))]  # this rank's bar, two phases per clip: the cached clips and its own share
    total = done[0] + 2 * len(mine)

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    if progress is not None:
        progress(done[0], total)
    # a few clips at a time through both phases, each kept as soon as it is done: an interrupted run loses at most
    # one chunk, and each module is still loaded once per chunk, not once per clip
    for first in range(0, len(mine), CHUNK_CLIPS):
        chunk = mine[first : first + CHUNK_CLIPS]
        for n, tensors in zip(chunk, encode_clips(checkpoint, [clips[n] for n in chunk], seed, engine, tick)):
            _save(files[n], {k: np.array(v.astype(mx.float32)) for k, v in tensors.items()}, folder)
        gc.collect()
        mx.clear_cache()  # the encoders' buffers go before training (or the next chunk) needs the memory
    _share_cache(files, folder)
    out = []
    for clip, file in zip(clips, files):
        tensors = read_safetensors(file)
        out.append(
            {
                "target_latents": mx.array(tensors["target_latents"]),
                "encoder_hidden_states": mx.array(tensors["encoder_hidden_states"]),
                "caption": clip.caption,
            }
        )
    return out


def _save(file: Path, tensors: dict, folder: Path) -> None:
    from safetensors.numpy import save

    try:
        with atomic_file(file) as tmp:
            tmp.write_bytes(save(tensors))
    except OSError as e:
        raise AceStepError(
            f"{folder}: cannot keep the preprocessed clips there ({e.strerror or e}); give a writable --cache-dir"
        ) from None


# Across ranks (mlx.launch): each rank encodes its share of the clips into its own cache folder (on one machine the
# ranks share it), then the clips a rank lacks are sent to it over the group and kept in its cache. Its own cache,
# not a network folder, because two Macs rarely share one; kept, so a later run (or a --resume at another world
# size) finds every clip on every machine.


def _my_share(todo: list[int]) -> list[int]:
    """This rank's share of the clips that no rank has cached (every rank's `todo` is gathered first)."""
    from .. import distributed

    if distributed.size() == 1:
        return todo
    with distributed.collective("preprocessing"):
        lacking = [set(t) for t in distributed.gather_json(todo)]
    nobody = sorted(set.intersection(*lacking))
    return [n for k, n in enumerate(nobody) if k % distributed.size() == distributed.rank()]


def _share_cache(files: list[Path], folder: Path) -> None:
    """Each clip a rank lacks, from the first rank that has it, written to the lacking rank's cache."""
    from .. import distributed

    if distributed.size() == 1:
        return
    with distributed.collective("sharing the preprocessed clips"):
        have = [set(h) for h in distributed.gather_json([n for n, f in enumerate(files) if f.is_file()])]
        wanted = [n for n in range(len(files)) if any(n not in h for h in have)]
        owner = {n: min(r for r, h in enumerate(have) if n in h) for n in wanted}
        mine = {n: read_safetensors(files[n]) for n in wanted if owner[n] == distributed.rank()}
        received = distributed.exchange_tensors(mine, wanted)
    for n in wanted:
        if not files[n].is_file():  # on one machine another rank may have written it meanwhile
            _save(files[n], received[n], folder)
