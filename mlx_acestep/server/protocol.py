"""The reference's REST protocol (`acestep-api`, shared/spec/UPSTREAM-API.md): field lookup with its aliases
and nested metadata objects, its lenient type coercion, the envelope, and the mapping of a task onto this
project's one `GenerationRequest` (so every rule is the CLI's and the API's)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ..limits import TURBO_STEP_RANGE
from ..names import INSTRUMENTAL, REGION_TASKS
from .sample_mode import song_writing

NESTED = ("param_obj", "metas", "meta", "metadata", "user_metadata", "userMetadata")
ALIASES = {
    "prompt": ("prompt", "caption"),
    "lyrics": ("lyrics",),
    "audio_duration": ("audio_duration", "duration", "audioDuration", "target_duration", "targetDuration"),
    "bpm": ("bpm",),
    "key_scale": ("key_scale", "keyscale", "keyScale", "key"),
    "time_signature": ("time_signature", "timesignature", "timeSignature"),
    "vocal_language": ("vocal_language", "vocalLanguage", "language"),
    "batch_size": ("batch_size",),
    "inference_steps": ("inference_steps", "inferenceSteps"),
    "guidance_scale": ("guidance_scale", "guidanceScale"),
    "shift": ("shift",),
    "infer_method": ("infer_method", "inferMethod"),
    "seed": ("seed",),
    "use_random_seed": ("use_random_seed", "useRandomSeed"),
    "task_type": ("task_type", "taskType"),
    "src_audio_path": ("src_audio_path", "ctx_audio_path", "sourceAudioPath", "srcAudioPath", "ctxAudioPath"),
    "reference_audio_path": ("reference_audio_path", "ref_audio_path", "referenceAudioPath", "refAudioPath"),
    "repainting_start": ("repainting_start",),
    "repainting_end": ("repainting_end",),
    "audio_cover_strength": ("audio_cover_strength", "audioCoverStrength"),
    "thinking": ("thinking",),
    "lm_temperature": ("lm_temperature",),
    "lm_cfg_scale": ("lm_cfg_scale",),
    "lm_top_p": ("lm_top_p",),
    "lm_negative_prompt": ("lm_negative_prompt",),
    "audio_format": ("audio_format",),
    "model": ("model", "model_name", "modelName", "dit_model", "ditModel"),
    "track": ("track",),  # extensions: the extract/lego track and complete's tracks (upstream has only `instruction`)
    "tracks": ("tracks",),
    "sample_mode": ("sample_mode", "sampleMode"),
    "sample_query": ("sample_query", "sampleQuery", "description", "desc"),
    "use_format": ("use_format", "useFormat", "format"),
    "analysis_only": ("analysis_only", "analysisOnly"),
    "full_analysis_only": ("full_analysis_only", "fullAnalysisOnly"),
    "use_adg": ("use_adg",),
    "cover_noise_strength": ("cover_noise_strength", "coverNoiseStrength"),
    "sampler_mode": ("sampler_mode", "samplerMode"),
    "velocity_norm_threshold": ("velocity_norm_threshold", "velocityNormThreshold"),
    "velocity_ema_factor": ("velocity_ema_factor", "velocityEmaFactor"),
    "dcw_enabled": ("dcw_enabled", "dcwEnabled"),  # upstream's REST fields since PR #1282 (August 2026)
    "dcw_mode": ("dcw_mode", "dcwMode"),
    "dcw_scaler": ("dcw_scaler", "dcwScaler"),
    "dcw_high_scaler": ("dcw_high_scaler", "dcwHighScaler"),
    "dcw_wavelet": ("dcw_wavelet", "dcwWavelet"),
    "chunk_mask_mode": ("chunk_mask_mode", "chunkMaskMode"),
    # flow-edit: upstream's GenerationParams names (inference.py:182-187); its REST at 6d467e4 has none of them
    "flow_edit_morph": ("flow_edit_morph", "flowEditMorph"),
    "flow_edit_source_caption": ("flow_edit_source_caption", "flowEditSourceCaption"),
    "flow_edit_source_lyrics": ("flow_edit_source_lyrics", "flowEditSourceLyrics"),
    "flow_edit_n_min": ("flow_edit_n_min", "flowEditNMin"),
    "flow_edit_n_max": ("flow_edit_n_max", "flowEditNMax"),
    "flow_edit_n_avg": ("flow_edit_n_avg", "flowEditNAvg"),
}
# A request field -> the REST field a client sent it as, so an error names what the client wrote.
REST_NAMES = {
    "caption": "prompt",
    "duration": "audio_duration",
    "key": "key_scale",
    "language": "vocal_language",
    "steps": "inference_steps",
    "guidance": "guidance_scale",
    "method": "infer_method",
    "task": "task_type",
    "repaint_start": "repainting_start",
    "repaint_end": "repainting_end",
    "cover_strength": "audio_cover_strength",
    "negative_prompt": "lm_negative_prompt",
    "sampler": "sampler_mode",
    "dcw": "dcw_enabled",
    "flow_edit": "flow_edit_morph",
    "src_audio": "src_audio_path",
    "ref_audio": "reference_audio_path",
}

# Upstream features this server does not have: asking for one is an error, never a silent plain generation.
UNSUPPORTED = ("analysis_only", "full_analysis_only", "use_adg")


# ACE-Step 1.0's task names, which older clients still send. Upstream 1.5 runs a name it does not know with the
# text2music instruction and the source audio, when one is sent, as the context's raw latents, not a cover
# (core/generation/handler/task_utils.py:99, generate_music_request.py:177-178, conditioning_masks.py:66-68): that
# is cover-nofsq here (whose instruction is cover's), or text2music without a source.
LEGACY_TASKS = ("audio2audio", "retake", "edit", "extend")


class ProtocolError(Exception):
    """A request this server refuses (HTTP 4xx with the envelope): the message is the envelope's `error`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def envelope(data=None, error: str | None = None, code: int = 200) -> dict:
    return {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": None}


def _nested(body: dict) -> list[dict]:
    sources = [body]
    for name in NESTED:
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ProtocolError(f"{name} is not a JSON object") from None
        if isinstance(value, dict) and value:
            sources.append(value)
            if name != "param_obj":  # the first non-empty metadata object only, as upstream
                break
    return sources


def lookup(body: dict) -> dict:
    """Each known field's first non-null value: the top level, then param_obj, then the metadata object."""
    found = {}
    for source in _nested(body):
        for field, aliases in ALIASES.items():
            if field in found:
                continue
            for alias in aliases:
                if source.get(alias) is not None:
                    found[field] = source[alias]
                    break
    return found


def as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def as_float(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else float("nan")  # NaN reaches the request, which names it


def sent(value, parse):
    """A number a client sent, parsed; one that does not parse as it was sent, so the request refuses it naming the
    field (upstream answers a malformed number with an error too, never with the default); None when absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = parse(value)
    return value if number is None else number


_NUMBERS = {  # REST field -> request field, for the plain numbers a client may send
    "shift": "shift",
    "lm_temperature": "lm_temperature",
    "lm_cfg_scale": "lm_cfg_scale",
    "lm_top_p": "lm_top_p",
    "repainting_start": "repaint_start",
    "audio_cover_strength": "cover_strength",
    "cover_noise_strength": "cover_noise_strength",
    "velocity_norm_threshold": "velocity_norm_threshold",
    "velocity_ema_factor": "velocity_ema_factor",
    "dcw_scaler": "dcw_scaler",
    "dcw_high_scaler": "dcw_high_scaler",
}


def as_bool(value, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "y", "on")


def request_fields(body: dict, family: str, inputs: dict[str, Path]) -> tuple[dict, str]:
    """The `GenerationRequest` fields of a task body, and its audio format (wav or flac).

    `inputs` are the source / reference files already resolved (uploads, or paths inside the allowed folder).
    """
    f = lookup(body)
    for name in UNSUPPORTED:
        if as_bool(f.get(name), False):
            raise ProtocolError(
                f"{name} is not supported by this server (mlx-acestep serve); see the README's route table"
            )
    lyrics = str(f.get("lyrics") or "")
    if lyrics.strip().lower() in ("", "[inst]", "[instrumental]"):
        lyrics = INSTRUMENTAL
    duration = as_float(f.get("audio_duration"))
    seed = as_int(f.get("seed"))
    random_seed = as_bool(f.get("use_random_seed"), True) and (seed is None or seed < 0)
    fields = dict(
        caption=str(f.get("prompt") or ""),
        lyrics=lyrics,
        duration=None if duration is None or (duration == duration and duration <= 0) else duration,
        seed=None if random_seed or seed is None or seed < 0 else seed,
        batch_size=sent(f.get("batch_size"), as_int) or 2,  # upstream's default
        bpm=sent(f.get("bpm"), as_int),
        key=str(f["key_scale"]) if f.get("key_scale") not in (None, "") else None,
        time_signature=str(f["time_signature"]) if f.get("time_signature") not in (None, "") else None,
        language=str(f.get("vocal_language") or "en"),
        method=str(f.get("infer_method") or "ode"),
        thinking=as_bool(f.get("thinking"), False),
        task=task_name(f, inputs),
    )
    steps = sent(f.get("inference_steps"), as_int)
    if family == "turbo":  # no CFG there (upstream's default scale would only warn); its service clamps the steps
        fields["steps"] = min(max(steps, 1), TURBO_STEP_RANGE[1]) if isinstance(steps, int) else steps
    else:
        fields["steps"] = steps
        fields["guidance"] = sent(f.get("guidance_scale"), as_float)
    fields |= {name: sent(f.get(field), as_float) for field, name in _NUMBERS.items()}
    if f.get("dcw_enabled") not in (None, ""):  # absent: the model's default, as upstream
        fields["dcw"] = as_bool(f.get("dcw_enabled"), False)
    if f.get("sampler_mode") not in (None, ""):
        fields["sampler"] = str(f["sampler_mode"])
    for name in ("dcw_mode", "dcw_wavelet", "chunk_mask_mode"):
        if f.get(name) not in (None, ""):
            fields[name] = str(f[name])
    if fields["task"] not in REGION_TASKS:  # upstream's clients send it with every task; it means nothing there
        fields.pop("chunk_mask_mode", None)
    end = as_float(f.get("repainting_end"))
    if end is not None and end > 0:
        fields["repaint_end"] = end
    if f.get("lm_negative_prompt"):
        fields["negative_prompt"] = str(f["lm_negative_prompt"])
    if f.get("track"):
        fields["track"] = str(f["track"])
    if f.get("tracks"):
        tracks = f["tracks"]
        if not isinstance(tracks, (str, list, tuple)):
            raise ProtocolError(f"tracks must be a list or a comma-separated string, got {tracks!r}")
        fields["tracks"] = [t.strip() for t in tracks.split(",")] if isinstance(tracks, str) else list(tracks)
    fields |= flow_edit_fields(f)
    if "src_audio" in inputs:
        fields["src_audio"] = str(inputs["src_audio"])
    if "ref_audio" in inputs:
        fields["ref_audio"] = str(inputs["ref_audio"])
    song_writing(f, fields, as_bool)
    fmt = "wav" if str(f.get("audio_format") or "").lower() == "wav" else "flac"  # mp3 and the rest: FLAC
    return {k: v for k, v in fields.items() if v is not None or k in ("duration", "seed")}, fmt


def task_name(f: dict, inputs) -> str:
    """The task a body's `task_type` names (`f`: its fields), a legacy name mapped as upstream runs it."""
    task = str(f.get("task_type") or "text2music")
    if task in LEGACY_TASKS:
        return "cover-nofsq" if "src_audio" in inputs else "text2music"
    return task


def flow_edit_fields(f: dict) -> dict:
    """Flow-edit's request fields, only with `flow_edit_morph` on (upstream's clients send the rest always). A text
    sent is the source's, even empty (as upstream encodes it)."""
    if not as_bool(f.get("flow_edit_morph"), False):
        return {}
    out = {"flow_edit": True}
    for name in ("flow_edit_source_caption", "flow_edit_source_lyrics"):
        if f.get(name) is not None:
            out[name] = str(f[name])
    for name in ("flow_edit_n_min", "flow_edit_n_max", "flow_edit_n_avg"):
        out[name] = sent(f.get(name), as_int if name == "flow_edit_n_avg" else as_float)
    return out


def input_paths(body: dict) -> dict[str, str]:
    """The source / reference paths a body names (checked against the allowed folder by the app)."""
    f = lookup(body)
    out = {}
    if f.get("src_audio_path"):
        out["src_audio"] = str(f["src_audio_path"])
    if f.get("reference_audio_path"):
        out["ref_audio"] = str(f["reference_audio_path"])
    return out
