"""Will the run fit? What a run needs, estimated before anything loads, against what the device allows.

A run's peak is its largest phase: that phase's weights (with `keep_loaded` every component's) plus its
activations. Weights are the converted folders' safetensors, already at the chosen dtype and quantization. The
activations are estimates from the configs, for the duration and batch:

- planner: the KV cache over the prompt and the 5 Hz codes, conditional and unconditional rows (its CFG);
- dit: the live tensors of one layer over the song's patches (hidden ~8x, MLP 3x), CFG doubling the rows of the
  base model; off Metal the attention scores too (MLX's CPU attention materialises them);
- vae: one window of the widest decoder stage, `VAE_LIVE` tensors of it, and the whole song's waveform.

`VAE_LIVE` comes from upstream's own figure: a 600 s decode reached 31 GB at 2048-frame windows and 13 GB at 512
(issue 28), 18 GB for 1536 more frames, about twelve float32 tensors of the widest stage. The estimate is meant
to catch a run that cannot fit (the system would kill it minutes in), not to predict the peak to the megabyte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import AceStepError
from ..limits import CAPTION_TOKENS, HOP, LYRIC_TOKENS, MIN_FRAMES, PLANNER_CAPTION_TOKENS, PLANNER_SECONDS, frames_of
from ..loading import read_json
from ..models.vae.oobleck import OobleckConfig
from .memory import GB, Device, device

VAE_LIVE = 12
Q8_BITS = 8.5  # q8 at group size 64: 8 bits and a 16-bit scale and bias per 64 weights
CODES_PER_SECOND = 5


@dataclass(frozen=True)
class Run:
    """What the estimate depends on: the song's seconds, the batch, whether the planner runs, whether CFG
    doubles the DiT's rows, and the weights' bytes per component (None: not part of the run)."""

    seconds: float
    batch: int
    planner: bool
    guided: bool
    weights: dict[str, int]


def folder_bytes(folder: Path | None) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) if folder is not None else 0


def _activations(pipe, run: Run, dev: Device) -> dict[str, int]:
    """Each phase's activations in bytes."""
    frames, item = max(MIN_FRAMES, frames_of(run.seconds)), pipe.dtype.size
    cfg = pipe.config
    rows, tokens = run.batch * (2 if run.guided else 1), frames // cfg.patch_size
    dit = rows * tokens * (8 * cfg.hidden_size + 3 * cfg.intermediate_size) * item
    if not dev.metal:
        dit += rows * cfg.num_attention_heads * tokens * tokens * 4
    vae_cfg = OobleckConfig.from_dict(read_json(Path(pipe.folders.vae) / "config.json"))
    widest, rate = 0, 1  # the decoder's stages from the latents up: samples per frame x channels, the largest
    for ratio, multiple in zip(reversed(vae_cfg.downsampling_ratios), reversed(vae_cfg.channel_multiples)):
        rate *= ratio
        widest = max(widest, rate * vae_cfg.decoder_channels * multiple)
    window = min(frames, pipe.vae_chunk) + 2 * pipe.vae_overlap
    need = {"text": 0, "dit": dit, "vae": VAE_LIVE * window * widest * 4 + run.batch * frames * HOP * 2 * 4}
    if run.planner:
        lm = read_json(Path(pipe.folders.lm) / "config.json")
        context = CAPTION_TOKENS + LYRIC_TOKENS + PLANNER_CAPTION_TOKENS + int(run.seconds * CODES_PER_SECOND)
        head_dim = lm.get("head_dim") or lm["hidden_size"] // lm["num_attention_heads"]
        kv = 2 * lm["num_hidden_layers"] * lm["num_key_value_heads"] * head_dim * context * item
        need["lm"] = 2 * run.batch * (kv + lm["vocab_size"] * 4)
    return need


PHASE_WEIGHTS = {"text": "text_encoder", "dit": "dit", "vae": "vae", "lm": "lm"}


def estimate(pipe, run: Run, dev: Device) -> tuple[int, str, int]:
    """(bytes the run needs at its peak, the phase of the peak, that phase's weights)."""
    resident = sum(run.weights.values()) if pipe.keep_loaded else 0
    best = (0, "", 0)
    for phase, activations in _activations(pipe, run, dev).items():
        weights = resident or run.weights[PHASE_WEIGHTS[phase]]
        best = max(best, (weights + activations, phase, weights))
    return best


def _size(n: int) -> str:
    return f"{n / GB:.1f} GiB" if n >= GB / 10 else f"{n / 2**20:.1f} MiB"  # binary units, as measured


def _lm_size(folder: Path | None) -> float | None:
    found = re.search(r"(\d+(?:\.\d+)?)B\b", Path(folder).name) if folder is not None else None
    return float(found.group(1)) if found else None


def _alternatives(pipe, run: Run):
    """(what to pass, the run it makes): the cheaper runs of the same song a user can ask for."""
    weights = run.weights
    if not pipe.quantize and pipe.dtype.size * 8 > Q8_BITS:  # the folder's recorded mode (`Checkpoint`)
        yield (
            "--quantize q8",
            replace(run, weights={**weights, "dit": int(weights["dit"] * Q8_BITS / 8 / pipe.dtype.size)}),
        )
    lm_size = _lm_size(pipe.folders.lm)
    if run.planner and lm_size and lm_size > 0.6:
        yield "--lm 0.6B", replace(run, weights={**weights, "lm": int(weights["lm"] * 0.6 / lm_size)})
    if run.batch > 1:
        yield "--batch 1", replace(run, batch=1)


def _longest(pipe, run: Run, dev: Device) -> float | None:
    """The longest song, in whole tens of seconds, that would fit as the run stands."""
    seconds = int(run.seconds) // 10 * 10
    while seconds > PLANNER_SECONDS[0]:  # the shortest suggestion: the planner's shortest song
        seconds -= 10
        if estimate(pipe, replace(run, seconds=seconds), dev)[0] <= dev.allowed:
            return seconds
    return None


def planned_run(pipe, request, thinking: bool, duration: float | None, settings) -> Run:
    """The `Run` of a request (`duration`: the song's, or its source's); a length the planner is still to choose is
    checked at the shortest song, so only a run that cannot fit at any length is refused before it has spoken."""
    planner = thinking or request.sample is not None or request.format
    folders = pipe.folders
    weights = {name: folder_bytes(getattr(folders, name)) for name in ("text_encoder", "dit", "vae")}
    weights["lm"] = folder_bytes(folders.lm) if planner else 0
    guided = getattr(settings, "guidance_scale", 1.0) > 1.0  # the base model's CFG; turbo has none
    return Run(duration or PLANNER_SECONDS[0], request.batch_size, planner, guided, weights)


def check_fit(pipe, run: Run, dev: Device | None = None) -> None:
    """Refuse, in one line, a run whose estimate exceeds what the device allows, saying what would fit."""
    dev = dev or device()
    need, phase, weights = estimate(pipe, run, dev)
    if not dev.allowed or need <= dev.allowed:
        return
    fits = [flag for flag, other in _alternatives(pipe, run) if estimate(pipe, other, dev)[0] <= dev.allowed]
    seconds = _longest(pipe, run, dev)
    fits += [f"--duration {seconds:g} or less"] if seconds is not None else []
    what = f"what would fit: {', '.join(fits)}" if fits else "nothing smaller fits either"
    raise AceStepError(
        f"this run needs about {_size(need)} ({phase}: {_size(weights)} of weights, {_size(need - weights)} of "
        f"activations for {run.seconds:g} s x {run.batch}) and the device allows {_size(dev.allowed)}; {what} "
        "(--force to try anyway)"
    )
