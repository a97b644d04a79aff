"""What a `generate` run records beside each file (`NAME.json`) and inside it (tags), and reading it back.

The sidecar holds what a person wants to know (caption, lyrics, seed, model, DiT, dtype, sampler settings, task
and inputs, adapters, the planner's choices, the version) and, under `"replay"`, the command line's parameters
with this item's seed: `mlx-acestep generate --from-metadata NAME.json` (or the audio file, whose comment tag
holds the same JSON) runs it again; options given beside it override the recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import __version__
from ..errors import AceStepError
from ..names import AUDIO_FORMATS, COVER_TASKS, REGION_TASKS

FORMAT = 1
# Where the files go and how the run treats the disk are this run's own: a replay never takes them from a file
# (which may come from someone else), only the settings that made the music.
NOT_REPLAYED = ("output", "overwrite", "from_metadata", "prompt_file", "lyrics_file", "fmt", "cache_dir", "reconvert")
PATHS = ("model", "src_audio", "ref_audio")  # recorded absolute, so a replay works from any folder
WAV_COMMENT_LIMIT = 2045  # bytes of a WAV INFO comment libsndfile keeps (a longer one it drops, silently)
# What a sidecar written before a flag existed ran with, where the flag's default has since changed: all came in
# 0.5: DCW (none before), the chunk mask mode (explicit before), the planner's codes prompt (February's before).
BEFORE_FIELD = {"dcw": False, "chunk_mask_mode": "explicit", "lm_codes_prompt": "february"}


def replay_params(params: dict, seed: int, retake_seed: int | None = None) -> dict:
    """The parameters that reproduce one item: its own seed (and retake seed), batch 1, the caption and lyrics as
    text."""
    from ..adapters import parse_lora_spec

    out = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if k not in NOT_REPLAYED}
    for key in PATHS:
        if out.get(key) and out[key] != "tiny" and Path(out[key]).expanduser().exists():  # "tiny" is the model, first
            out[key] = str(Path(out[key]).expanduser().resolve())
    out["loras"] = [f"{Path(p).expanduser().resolve()}:{s!r}" for p, s in map(parse_lora_spec, out.get("loras") or [])]
    out.update(seed=seed, batch=1)
    if retake_seed is not None:
        out["retake_seed"] = retake_seed
    return out


def replayable(recorded: dict, ctx, source) -> dict:
    """The recorded parameters a replay takes, each checked against its flag's type (a file can hold anything)."""
    params = {p.name: p for p in ctx.command.params}
    out = {}
    for name, value in recorded.items():
        if name not in params or name in NOT_REPLAYED:
            continue  # another version's field, or one a replay never takes
        param = params[name]
        if param.multiple and value is not None and not isinstance(value, (list, tuple)):
            value = [value]
        try:
            if param.multiple and value is not None and any(v is None for v in value):
                raise ValueError("an empty item")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and param.is_flag:
                raise ValueError("expected true or false")
            if isinstance(value, float) and isinstance(param.type, click.types.IntParamType) and not value.is_integer():
                raise ValueError("expected a whole number")
            out[name] = param.type_cast_value(ctx, value) if value is not None else None
        except Exception as e:  # noqa: BLE001 — click's casts raise what the value makes them raise
            message = e.format_message() if isinstance(e, click.BadParameter) else str(e)
            raise AceStepError(f"{source}: recorded {name} {value!r} is not valid ({message})") from None
    return out


def run_metadata(params: dict, result, index: int, pipe, request) -> dict:
    """The sidecar of item `index` of `result`."""
    from ..pipeline.flow_edit import summary

    settings = request.sampler_settings(pipe.family)
    planner = result.metadata[index] if index < len(result.metadata) else {}
    retake_seed = _item(request.retake_seed, index)
    return {
        "format": FORMAT,
        "software": f"mlx-acestep {__version__}",
        "caption": request.caption,
        "lyrics": request.lyrics,
        "seed": result.seeds[index],
        "index": index,
        "duration": result.duration,
        "model": params.get("model"),
        "dit": pipe.name,
        "dtype": str(pipe.dtype).split(".")[-1],
        "quantize": pipe.quantize,  # the DiT folder's own record: a q8-converted folder ran q8 without --quantize
        "task": request.task,
        "inputs": {k: v for k, v in (("src_audio", request.src_audio), ("ref_audio", request.ref_audio)) if v},
        "region": [request.repaint_start, request.repaint_end] if request.job.has_region else None,
        "chunk_mask_mode": request.chunk_mask_mode if request.job.has_region else None,
        "cover_strength": request.cover_strength if request.task in COVER_TASKS else None,
        "cover_noise_strength": request.cover_noise_strength if request.task in COVER_TASKS else None,
        "sampler": {k: v for k, v in vars(settings).items() if isinstance(v, (int, float, str, type(None)))}
        | {"dcw": vars(settings.dcw) if settings.dcw else None},
        "flow_edit": summary(request, result.seeds[index], retake_seed),
        "adapters": [{"name": n, "scale": s} for n, s in pipe.loras()],
        "planner": planner,
        "written": [{k: v for k, v in s.to_dict().items() if k != "text"} for s in result.sheets],
        "replay": replay_params(params, result.seeds[index], retake_seed),
    }


def _item(seeds, index: int):
    """Item `index`'s seed of a resolved list (None when there is none)."""
    return seeds[index] if isinstance(seeds, (list, tuple)) else None


def audio_tags(meta: dict, path: str | Path) -> dict:
    """File tags: the caption as the title, the sidecar as the comment (so the file alone replays)."""
    return {"title": meta["caption"][:200], "comment": _comment(meta, Path(path)), "software": meta["software"]}


def _comment(meta: dict, path: Path) -> str:
    """The whole sidecar; in a WAV, whose INFO comment libsndfile drops whole past `WAV_COMMENT_LIMIT` bytes, the
    replay alone when the whole does not fit, and when that does not fit either (long lyrics) the sidecar's name."""
    whole = json.dumps(meta, separators=(",", ":"))
    if path.suffix.lower() != ".wav" or len(whole) <= WAV_COMMENT_LIMIT:  # ASCII: one byte a character
        return whole
    head = {k: meta[k] for k in ("format", "software", "seed")}
    replay = json.dumps(head | {"replay": meta["replay"]}, separators=(",", ":"))
    if len(replay) <= WAV_COMMENT_LIMIT:
        return replay
    return json.dumps(head | {"sidecar": path.with_suffix(".json").name}, separators=(",", ":"))


def read_metadata(path: str | Path) -> dict:
    """The recorded parameters of a sidecar JSON or of an audio file this program wrote."""
    path = Path(path)
    try:
        if path.suffix.lower().lstrip(".") in AUDIO_FORMATS:
            import soundfile as sf

            with sf.SoundFile(str(path)) as f:
                text = f.comment or ""
        else:
            text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
        if isinstance(meta, dict) and isinstance(meta.get("sidecar"), str) and "replay" not in meta:
            sidecar = path.parent / Path(meta["sidecar"]).name  # beside the audio, never elsewhere
            if not sidecar.is_file():
                raise AceStepError(f"{path}: its settings are in {sidecar.name}, which is not beside it")
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AceStepError(f"{path}: no readable mlx-acestep metadata ({e.__class__.__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("replay"), dict):
        raise AceStepError(f"{path}: not metadata written by mlx-acestep generate (no 'replay' section)")
    return meta["replay"] | older_settings(meta)


def older_settings(meta: dict) -> dict:
    """What a sidecar written before a setting existed ran with, where its default has since changed
    (`BEFORE_FIELD`); and a turbo run from before turbo counted steps ran the fixed table of the nearest shift
    whatever steps said, which is 8 steps at that shift now."""
    from ..diffusion.schedules import nearest_turbo_shift

    replay = meta["replay"]
    out = {name: old for name, old in BEFORE_FIELD.items() if name not in replay}
    if replay.get("task") not in REGION_TASKS:
        out.pop("chunk_mask_mode", None)  # the other tasks have no region to mark
    sampler = meta.get("sampler") if isinstance(meta.get("sampler"), dict) else {}
    if "shift" in sampler and "steps" not in sampler:
        out["steps"] = None
        shift = replay.get("shift")
        if isinstance(shift, (int, float)) and not isinstance(shift, bool):
            out["shift"] = float(nearest_turbo_shift(shift))
    return out
