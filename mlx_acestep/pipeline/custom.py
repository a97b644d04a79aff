"""A request's custom sampling and conditioning, upstream's `GenerationParams` fields that the CLI has no flag for:
the guidance kind (`use_adg`), the guidance interval (`cfg_interval_start` / `_end`), a custom schedule
(`timesteps`), the planner's top-k and the DiT conditioned on given 5 Hz codes (`audio_codes`, the VST3 plugin's
custom-conditioning mode). Their rules live here, once; `GenerationRequest` calls `check_custom`.

    GenerationRequest("lofi", guidance_kind="adg", cfg_interval=(0.1, 0.9), timesteps=[1.0, 0.6, 0.3, 0.0])
    GenerationRequest("", empty_caption=True, audio_codes="<|audio_code_17|><|audio_code_912|>...")
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

from ..diffusion.schedules import base_timesteps, turbo_timesteps
from ..errors import AceStepError, RequestError
from ..fields import Field, is_int, is_number
from ..limits import MIN_FRAMES, seconds_of
from ..names import GUIDANCE_KINDS

FIELDS = (
    Field("guidance_kind", "choice", choices=GUIDANCE_KINDS, what="guidance"),
    Field("lm_top_k", "integer", 0, 1_000_000),
)
CODE = re.compile(r"<\|audio_code_(\d+)\|>")


def parse_codes(value) -> tuple[int, ...] | None:
    """`<|audio_code_N|>...` text (upstream's form; whitespace between tokens allowed) or whole numbers -> a tuple;
    empty -> None (no codes, as upstream)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        rest = CODE.sub(" ", text)
        if rest.strip():
            bad = rest.strip().split()[0]
            raise RequestError("audio_codes", f"@name@ must be <|audio_code_N|> tokens only, found {bad[:40]!r}")
        return tuple(int(n) for n in CODE.findall(text))
    try:
        items = list(value)
    except TypeError:
        raise RequestError(
            "audio_codes", f"@name@ must be <|audio_code_N|> text or whole numbers, got {value!r}"
        ) from None
    if not all(is_int(c) and c >= 0 for c in items):
        raise RequestError("audio_codes", "@name@ must be whole numbers from 0")
    return tuple(int(c) for c in items) or None


def _numbers(name: str, value, low: float = 0.0, high: float = 1.0) -> tuple[float, ...]:
    try:
        items = list(value)
    except TypeError:
        raise RequestError(name, f"@name@ must be a list of numbers, got {value!r}") from None
    if not all(is_number(v) and math.isfinite(v) and low <= v <= high for v in items):
        raise RequestError(name, f"@name@ must be numbers from {low:g} to {high:g}, got {items!r}")
    return tuple(float(v) for v in items)


def check_custom(request) -> None:
    """Normalise and check the custom fields (their type, range and what they go with); what depends on the model
    family is `check_schedule`'s (`FIELDS` are checked with the request's others)."""
    interval = _numbers("cfg_interval", request.cfg_interval)
    if len(interval) != 2 or interval[0] > interval[1]:
        raise RequestError("cfg_interval", f"@name@ must be (start, end) with start <= end, got {interval}")
    object.__setattr__(request, "cfg_interval", interval)
    if request.timesteps is not None:
        object.__setattr__(request, "timesteps", _numbers("timesteps", request.timesteps) or None)
    codes = parse_codes(request.audio_codes)
    object.__setattr__(request, "audio_codes", codes)
    if codes is None:
        return
    if request.task != "text2music" or request.flow_edit:  # upstream's text2music becomes a cover of the codes
        raise RequestError("audio_codes", "@name@ are for text2music (the DiT renders them as a cover's hints)")
    if request.thinking:
        raise RequestError("thinking", "@name@ writes the codes itself: give audio_codes or thinking, not both")


def check_schedule(request, family: str) -> None:
    """A custom schedule the model family cannot run (turbo: 1 to 20 times, snapped to its tables; base / SFT: at
    least two, strictly decreasing), refused before any work."""
    if request.timesteps is None:
        return
    try:
        if family == "turbo":
            turbo_timesteps(timesteps=list(request.timesteps))
        else:
            base_timesteps(len(request.timesteps) - 1, timesteps=list(request.timesteps))
    except AceStepError as e:
        raise RequestError("timesteps", f"@name@: {e}") from None


def custom_settings(request, settings):
    """The sampler settings with the request's schedule and guidance (turbo has no guidance to change)."""
    if request.timesteps is None and request.guidance_kind == "apg" and request.cfg_interval == (0.0, 1.0):
        return settings
    changes = {"timesteps": None if request.timesteps is None else list(request.timesteps)}
    if not hasattr(settings, "guidance") and (request.guidance_kind, request.cfg_interval) != ("apg", (0.0, 1.0)):
        warnings.warn("turbo models run without guidance: guidance_kind and cfg_interval are ignored", stacklevel=3)
    if hasattr(settings, "guidance"):
        changes |= {"guidance": request.guidance_kind, "cfg_interval": request.cfg_interval}
        if request.timesteps is not None:  # upstream: the schedule's length is the step count
            changes["steps"] = len(request.timesteps) - 1
    return dataclasses.replace(settings, **changes)


def check_codebook(request, size: int) -> None:
    """Codes the DiT's codebook does not hold, refused (upstream clamps them to its last code with a warning)."""
    if request.audio_codes is not None and max(request.audio_codes) >= size:
        raise RequestError("audio_codes", f"@name@ go up to {size - 1} on this model, got {max(request.audio_codes)}")


def codes_seconds(codes) -> float:
    """The length a song rendered from `codes` has (upstream: the detokenized codes' frames, at least MIN_FRAMES)."""
    from ..planner.lm import CODES_PER_SECOND  # here: the planner's module loads mlx-lm

    return max(seconds_of(MIN_FRAMES), len(codes) / CODES_PER_SECOND)


def check_planned_length(seconds: float) -> None:
    """The planner writes int(seconds * 5) codes (upstream's target_codes): a clip shorter than one code has none to
    write; upstream would render it without hints, here it is refused before the planner loads."""
    from ..planner.lm import CODES_PER_SECOND

    if int(seconds * CODES_PER_SECOND) < 1:
        raise RequestError(
            "duration",
            f"@name@ {seconds:g} s is shorter than one planner code ({1 / CODES_PER_SECOND:g} s): give a longer "
            "clip or turn thinking off",
        )
