"""The reference's REST protocol (`acestep-api`, shared/spec/UPSTREAM-API.md): field lookup with its aliases
and nested metadata objects, its lenient type coercion, the envelope, and the mapping of a task onto this
project's one `GenerationRequest` (so every rule is the CLI's and the API's)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..audio import WRITABLE
from ..conditioning.prompts import instruction
from ..errors import BAD_JSON
from ..fields import is_int
from ..limits import TURBO_STEP_RANGE
from ..names import INSTRUMENTAL, REGION_TASKS, TRACKS
from .custom_fields import custom_fields
from .sample_mode import song_writing
from .values import (  # noqa: F401  (as_bool: the writing routes read upstream's lenient booleans from here)
    AUTOMATIC,
    FALLBACK_SECONDS,
    REPAINT_CROSSFADE_DEFAULTS,
    REST_DEFAULTS,
    as_bool,
    as_float,
    as_int,
    audio_format,
    duration,
    flag,
    seeds,
    sent,
    text,
)

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
    "audio_cover_strength": ("audio_cover_strength", "audioCoverStrength", "cover_strength", "coverStrength"),
    "thinking": ("thinking",),
    "lm_temperature": ("lm_temperature",),
    "lm_cfg_scale": ("lm_cfg_scale",),
    "lm_top_p": ("lm_top_p",),
    "lm_negative_prompt": ("lm_negative_prompt",),
    "audio_format": ("audio_format",),
    "model": ("model", "model_name", "modelName", "dit_model", "ditModel"),
    "instruction": ("instruction",),
    "global_caption": ("global_caption",),  # read by upstream's SFT-stems lego checkpoint only (is_lego_sft)
    "track_name": ("track_name", "trackName"),
    "track_classes": ("track_classes", "trackClasses", "instruments"),
    "track": ("track",),  # extensions: the extract/lego track and complete's tracks (upstream's: the two above)
    "tracks": ("tracks",),
    "repaint_mode": ("repaint_mode",),
    "repaint_strength": ("repaint_strength",),
    "repaint_latent_crossfade_frames": ("repaint_latent_crossfade_frames",),  # upstream: read, then dropped
    "repaint_wav_crossfade_sec": ("repaint_wav_crossfade_sec",),
    "sample_mode": ("sample_mode", "sampleMode"),
    "sample_query": ("sample_query", "sampleQuery", "description", "desc"),
    "use_format": ("use_format", "useFormat", "format"),
    "analysis_only": ("analysis_only", "analysisOnly"),
    "full_analysis_only": ("full_analysis_only", "fullAnalysisOnly"),
    "extract_codes_only": ("extract_codes_only", "extractCodesOnly"),
    "audio_code_string": ("audio_code_string", "audioCodeString", "audio_codes"),
    "timesteps": ("timesteps",),
    "cfg_interval_start": ("cfg_interval_start",),
    "cfg_interval_end": ("cfg_interval_end",),
    "lm_top_k": ("lm_top_k",),
    "use_adg": ("use_adg",),
    "retake_variance": ("retake_variance", "retakeVariance"),  # extensions: upstream's Python API / Gradio names
    "retake_seed": ("retake_seed", "retakeSeed"),
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
    # read and not used, as upstream (its LM switches and the tiled decode are always on here):
    # release_task_param_parser.py:36-41
    "use_cot_caption": ("use_cot_caption", "cot_caption", "cot-caption"),
    "use_cot_language": ("use_cot_language", "cot_language", "cot-language"),
    "constrained_decoding": ("constrained_decoding", "constrainedDecoding", "constrained"),
    "constrained_decoding_debug": ("constrained_decoding_debug", "constrainedDecodingDebug"),
    "is_format_caption": ("is_format_caption", "isFormatCaption"),
    "allow_lm_batch": ("allow_lm_batch", "allowLmBatch", "parallel_thinking"),
    "use_tiled_decode": ("use_tiled_decode", "useTiledDecode"),
}
# A request field -> the REST field a client sent it as, so an error names what the client wrote.
PATH_FIELDS = {"src_audio": "src_audio_path", "ref_audio": "reference_audio_path"}  # a file's name -> its path field
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
    **PATH_FIELDS,
    "guidance_kind": "use_adg",
    "cfg_interval": "cfg_interval_start / cfg_interval_end",
    "audio_codes": "audio_code_string",
}

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


def error_body(message: str, status: int, detail=None) -> dict:
    """An error as both kinds of client read it: upstream's FastAPI `detail` (the skill script, the DAW) and the
    envelope's `code` / `error` (studio.html), as UPSTREAM-API.md 6.2 suggests. `detail`: the message, unless given
    (a validation error's list, as FastAPI sends it)."""
    return {"detail": message if detail is None else detail} | envelope(error=message, code=status)


def _nested(body: dict) -> list[dict]:
    sources = [body]
    for name in NESTED:
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            try:
                value = json.loads(value)
            except BAD_JSON:
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


_NUMBERS = {  # REST field -> request field, for the plain numbers a client may send
    "shift": "shift",
    "lm_temperature": "lm_temperature",
    "lm_cfg_scale": "lm_cfg_scale",
    "repainting_start": "repaint_start",
    "audio_cover_strength": "cover_strength",
    "cover_noise_strength": "cover_noise_strength",
    "repaint_strength": "repaint_strength",
    "velocity_norm_threshold": "velocity_norm_threshold",
    "velocity_ema_factor": "velocity_ema_factor",
    "dcw_scaler": "dcw_scaler",
    "dcw_high_scaler": "dcw_high_scaler",
}
_CHOICES = {  # REST field -> request field, for the named choices (absent: the request's default, as upstream's)
    "sampler_mode": "sampler",
    "dcw_mode": "dcw_mode",
    "dcw_wavelet": "dcw_wavelet",
    "chunk_mask_mode": "chunk_mask_mode",
    "repaint_mode": "repaint_mode",
}


def request_fields(body: dict, family: str, inputs: dict[str, Path], notes: list | None = None) -> tuple[dict, tuple]:
    """The `GenerationRequest` fields of a task body, and its output as (file suffix, libsndfile subtype).

    `inputs` are the source / reference files already resolved (uploads, or paths inside the allowed folder). What
    the body holds that the task does not use (the DAW's placeholder upload with text2music) is left out, with a
    line in `notes`. A value of the wrong type is a `RequestError` naming the REST field.
    """
    f = lookup(body)
    notes = notes if notes is not None else []
    fields = song_fields(f) | sampler_fields(f, family) | task_fields(f, inputs, notes)
    if fields["thinking"] and fields["task"] != "text2music":  # upstream skips its LM there (inference.py:612-640)
        fields["thinking"] = False
        notes.append(f"thinking was not used: the {fields['task']} task follows its source audio")
    song_writing(f, fields, flag)
    if fields.get("duration") is None and not _plans_or_follows(fields):
        fields["duration"] = FALLBACK_SECONDS
    fmt = audio_format(f.get("audio_format"), WRITABLE)
    return {k: v for k, v in fields.items() if v is not None or k in ("duration", "seed")}, fmt


def _plans_or_follows(fields: dict) -> bool:
    """Whether a length comes from elsewhere when none is given: the planner's, or the source's."""
    writes = fields.get("sample") is not None or fields.get("format") or fields.get("thinking")
    writes = writes or fields.get("audio_codes")  # the codes' length
    return bool(writes or fields["task"] != "text2music" or fields.get("flow_edit"))


def song_fields(f: dict) -> dict:
    """What the song is: its texts, metadata, length, batch and seeds, with upstream's REST defaults."""
    lyrics = text(f.get("lyrics"), "", "lyrics")
    if lyrics.strip().lower() in ("", "[inst]", "[instrumental]"):
        lyrics = INSTRUMENTAL
    caption = text(f.get("prompt"), "", "prompt")
    batch = sent(f.get("batch_size"), as_int)
    batch = REST_DEFAULTS["batch_size"] if batch is None else batch
    random = flag(f.get("use_random_seed"), REST_DEFAULTS["use_random_seed"], "use_random_seed")
    key, signature = text(f.get("key_scale"), None, "key_scale"), text(f.get("time_signature"), None, "time_signature")
    return dict(
        caption=caption,
        empty_caption=not caption.strip(),  # `{}` is a task upstream: the DiT reads an empty caption
        lyrics=lyrics,
        duration=duration(f.get("audio_duration")),
        seed=seeds(f.get("seed"), batch, random),
        batch_size=batch,
        bpm=sent(f.get("bpm"), as_int),
        key=key or None,
        time_signature=signature or None,
        language=text(f.get("vocal_language"), "", "vocal_language") or REST_DEFAULTS["vocal_language"],
        thinking=flag(f.get("thinking"), REST_DEFAULTS["thinking"], "thinking"),
        negative_prompt=text(f.get("lm_negative_prompt"), None, "lm_negative_prompt") or None,
    )


def sampler_fields(f: dict, family: str) -> dict:
    """How it is sampled: steps, guidance, shift, the planner's sampling, upstream's newer sampler fields."""
    steps = sent(f.get("inference_steps"), as_int)
    steps = REST_DEFAULTS["inference_steps"] if steps is None else steps
    fields = {"method": text(f.get("infer_method"), "", "infer_method") or REST_DEFAULTS["infer_method"]}
    if family == "turbo":  # no CFG there (upstream's default scale would only warn); its service clamps the steps
        fields["steps"] = min(max(steps, 1), TURBO_STEP_RANGE[1]) if is_int(steps) else steps
    else:
        fields["steps"] = steps
        fields["guidance"] = sent(f.get("guidance_scale"), as_float)
    fields |= {name: sent(f.get(field), as_float) for field, name in _NUMBERS.items()}
    if fields["lm_cfg_scale"] is None:
        fields["lm_cfg_scale"] = REST_DEFAULTS["lm_cfg_scale"]
    if f.get("dcw_enabled") not in (None, ""):  # absent: the model's default, as upstream
        fields["dcw"] = flag(f.get("dcw_enabled"), False, "dcw_enabled")
    fields |= {name: text(f.get(field), "", field) or None for field, name in _CHOICES.items()}
    end = sent(f.get("repainting_end"), as_float)
    fields["repaint_end"] = None if end is None or end in AUTOMATIC else end  # upstream: -1 the source's end
    return fields | flow_edit_fields(f) | custom_fields(f)


def task_fields(f: dict, inputs: dict, notes: list) -> dict:
    """The task, its files and what it edits: upstream's `instruction`, `track_name` and `track_classes` (its
    instruction templates, job_generation_setup.py:24-65) beside this server's `track` / `tracks`."""
    task = task_name(f, inputs)
    fields = {"task": task, "instruction": instruction_field(f)}
    fields["global_caption"] = text(f.get("global_caption"), "", "global_caption")
    if f.get("track"):
        fields["track"] = text(f["track"], None, "track")
    if f.get("tracks"):
        fields["tracks"] = track_list(f["tracks"], "tracks")
    if fields["instruction"] is None and task in ("extract", "lego") and f.get("track_name") and "track" not in fields:
        fields["track"] = known_track(text(f["track_name"], "", "track_name"), "track_name")
    if fields["instruction"] is None and task == "complete" and f.get("track_classes") and "tracks" not in fields:
        fields["tracks"] = [known_track(t, "track_classes") for t in track_list(f["track_classes"], "track_classes")]
    for name, default in REPAINT_CROSSFADE_DEFAULTS.items():
        value = sent(f.get(name), as_int if name.endswith("frames") else as_float)
        fields[name] = None if value == default else value
    if task not in REGION_TASKS:  # upstream's clients send these with every task; they mean nothing there
        fields |= dict(chunk_mask_mode=None, repaint_latent_crossfade_frames=None, repaint_wav_crossfade_sec=None)
    uses_source = task != "text2music" or flag(f.get("flow_edit_morph"), False, "flow_edit_morph")
    if "src_audio" in inputs and not uses_source:  # upstream drops it (inference.py:839-846); the DAW uploads one
        notes.append("the source audio sent with this text2music task was not used (text2music starts from silence)")
    elif "src_audio" in inputs:
        fields["src_audio"] = str(inputs["src_audio"])
    if "ref_audio" in inputs:
        fields["ref_audio"] = str(inputs["ref_audio"])
    return fields


def instruction_field(f: dict) -> str | None:
    """A client's own instruction line (the DAW's "Generate a segment of the VOCALS track ..."), read as upstream:
    empty or its default (text2music's) means the task's own, with its track."""
    given = text(f.get("instruction"), "", "instruction").strip()
    return None if not given or given == instruction("text2music") else given


def track_list(value, name: str) -> list[str]:
    """Tracks as a list, or one string: comma-separated (a form's list arrives so: JS joins an array with commas)."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value]
    raise ProtocolError(f"{name} must be a list or a comma-separated string, got {value!r}")


def known_track(name: str, field: str) -> str:
    """Upstream's track names are upper-cased into its instruction; the model knows these twelve."""
    track = name.strip().lower()
    if track not in TRACKS:
        raise ProtocolError(f"{field}: unknown track {name!r} (choose from {', '.join(TRACKS)})")
    return track


def task_name(f: dict, inputs) -> str:
    """The task a body's `task_type` names (`f`: its fields), a legacy name mapped as upstream runs it."""
    task = text(f.get("task_type"), "", "task_type") or REST_DEFAULTS["task_type"]
    if task in LEGACY_TASKS:
        return "cover-nofsq" if "src_audio" in inputs else "text2music"
    if (
        task == "cover"
        and "src_audio" not in inputs
        and text(f.get("audio_code_string"), "", "audio_code_string").strip()
    ):
        # a cover of given codes (ace-step-ui's audio-codes cover): upstream decodes the codes into the target
        # whatever the task (conditioning_target.py:77-86), as its text2music with codes, which it makes a cover
        return "text2music"
    return task


def flow_edit_fields(f: dict) -> dict:
    """Flow-edit's request fields, only with `flow_edit_morph` on (upstream's clients send the rest always). A text
    sent is the source's, even empty (as upstream encodes it)."""
    if not flag(f.get("flow_edit_morph"), False, "flow_edit_morph"):
        return {}
    out = {"flow_edit": True}
    for name in ("flow_edit_source_caption", "flow_edit_source_lyrics"):
        if f.get(name) is not None:
            out[name] = text(f[name], "", name)
    for name in ("flow_edit_n_min", "flow_edit_n_max", "flow_edit_n_avg"):
        out[name] = sent(f.get(name), as_int if name == "flow_edit_n_avg" else as_float)
    return out


def input_paths(body: dict) -> dict[str, str]:
    """The source / reference paths a body names (checked against the allowed folder by the app)."""
    f = lookup(body)
    return {name: str(f[field]) for name, field in PATH_FIELDS.items() if f.get(field)}
