"""A batch spread over the ranks of `mlx.launch` (`mx.distributed`): each rank renders a contiguous block of the
items and every rank gets the whole result back, so `generate --batch 8` on two Macs writes the files one Mac would.

An item is the same wherever it renders: its noise comes from its own seed, and what the batch draws once (the
source's posterior, the timbre clips' order, the songwriter's sample) from the batch's first seed on every rank.
What cannot be split is one song: its DiT steps run one after another on one rank."""

from __future__ import annotations

import io

import numpy as np

from .. import distributed
from ..errors import AceStepError
from ..limits import SAMPLE_RATE
from .results import GenerationResult
from .seeds import resolve_seeds


def spreads(request, stream) -> bool:
    """Whether this run is shared by the ranks (a stream writes as it decodes: it renders on one machine)."""
    return stream is None and request.batch_size > 1 and distributed.size() > 1


def check_share(thinking: bool, duration) -> None:
    if thinking and duration is None:
        raise AceStepError(
            f"across {distributed.size()} ranks give a duration (or no thinking): the planner's choice for the "
            "first song sets the batch's length, and the other ranks would wait for it"
        )


def generate_spread(generate, request, thinking, duration, settings, adapters, callback) -> GenerationResult:
    """`generate` (the pipeline's own) on this rank's block of the batch; the blocks gathered in order."""
    batch = request.batch_size
    seeds = distributed.from_leader(resolve_seeds(request.seed, batch))  # rank 0's random draws, on every rank
    retakes = request.retake_seed
    if retakes is not None:
        retakes = distributed.from_leader(resolve_seeds(retakes, batch, "retake_seed"))
    mine = distributed.block(batch)
    part = None
    if not len(mine):  # more ranks than items: this one only joins the batch's collectives
        if thinking:
            batch_padding(None, 0)
    else:
        share = request.replace(
            seed=[seeds[i] for i in mine],
            batch_size=len(mine),
            retake_seed=None if retakes is None else [retakes[i] for i in mine],
        )
        reporting = callback if distributed.is_leader() else None  # rank 0 reports
        part = generate(share, thinking, duration, settings, adapters, reporting, None, seeds[0])
    with distributed.collective("gathering the batch"):
        parts = _gather(part)
    return _joined(parts, seeds, part, request)


def batch_padding(tokens, pad_id: int):
    """A share's prompt tokens padded to the whole batch's longest (the condition the DiT attends to keeps its
    padding, so an item's song depends on it). Only planned items differ in length: `prepare` calls this, on
    every rank, when the planner ran."""
    from ..conditioning.inputs import PromptTokens

    longest = [0, 0] if tokens is None else [tokens.text_ids.shape[1], tokens.lyric_ids.shape[1]]
    with distributed.collective("padding the batch's prompts"):
        longest = [max(column) for column in zip(*distributed.gather_json(longest))]
    if tokens is None:
        return None

    def pad(ids, mask, length):
        extra = length - ids.shape[1]
        return np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id), np.pad(mask, ((0, 0), (0, extra)))

    return PromptTokens(*pad(tokens.text_ids, tokens.text_mask, longest[0]), *pad(*tokens[2:], longest[1]))


def _gather(part: GenerationResult | None) -> list[dict]:
    """Every rank's share: its arrays (`np.savez` bytes) and the rest as JSON."""
    info, arrays = None, {}
    if part is not None:
        info = {
            "duration": part.duration,
            "seconds": part.seconds,
            "peak": part.peak_memory,
            "metadata": part.metadata,
        }
        arrays = {"audio": part.audio, "latents": part.latents}
        if part.codes is not None:
            arrays["codes"] = np.asarray(part.codes)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    infos = distributed.gather_json(info)
    blobs = distributed.gather_bytes(buffer.getvalue())
    out = []
    for info, blob in zip(infos, blobs):
        if info is not None:
            with np.load(io.BytesIO(blob), allow_pickle=False) as held:
                out.append({**info, **{k: held[k] for k in held.files}})
    return out


def _joined(parts: list[dict], seeds: list[int], first, request) -> GenerationResult:
    """One result of the whole batch: the items in order, and for the time and memory of each phase the slowest
    rank's (the batch took as long as its slowest share)."""
    phases = {k for p in parts for k in p["seconds"]}
    peaks = {k for p in parts for k in p["peak"]}
    rendered = None if first is None else first.request
    if rendered is not None:  # the request as a single machine renders it, with what the planner wrote
        rendered = rendered.replace(seed=request.seed, batch_size=request.batch_size, retake_seed=request.retake_seed)
    return GenerationResult(
        audio=np.concatenate([p["audio"] for p in parts]),
        sample_rate=SAMPLE_RATE,
        seeds=seeds,
        duration=parts[0]["duration"],
        seconds={k: max(p["seconds"].get(k, 0.0) for p in parts) for k in sorted(phases)},
        peak_memory={k: max(p["peak"].get(k, 0) for p in parts) for k in sorted(peaks)},
        latents=np.concatenate([p["latents"] for p in parts]),
        metadata=[m for p in parts for m in p["metadata"]],
        codes=np.concatenate([p["codes"] for p in parts]) if "codes" in parts[0] else None,
        sheets=first.sheets if first is not None else [],
        request=rendered,
    )
