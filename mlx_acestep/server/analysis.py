"""/release_task's modes that answer without audio, as upstream's API runs them (`acestep/api/
job_analysis_runtime.py:38-114`, the first one asked for in this order) and lists them in /query_result
(`jobs/local_cache_updates.py:53-114`):

- `extract_codes_only`: the source audio's 5 Hz codes (VAE, then the DiT's FSQ tokenizer), the one result item
  `{"status_message": "Audio Codes Extraction Success", "audio_codes": "<|audio_code_N|>...", ...}`;
- `full_analysis_only`: those codes described by the planner (its `understand` task, temperature 0.3), the one
  item `{"status_message": "Full Hardware Analysis Success", bpm, keyscale, ..., "audio_codes"}`;
- `analysis_only`: the planner's metadata for the caption and lyrics (its first phase alone), one ordinary item
  with `file` "" and `dit_model` "None (Analysis Only)".

What upstream lets fail after the task was queued (no source, no planner) is refused here with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import FieldError
from ..fields import is_int
from ..pipeline.request import REQUEST
from ..planner.tasks import codes_input
from .protocol import REST_DEFAULTS, ProtocolError, as_float, flag, seeds, sent, text

MODES = ("extract_codes_only", "full_analysis_only", "analysis_only")


def analysis_job(f: dict, files: dict, pipe) -> Analysis | None:
    """The analysis a body asks for (`f`: its fields by upstream's names), None for a generation; what it lacks
    (a source, the planner) or a wrong value is a `ProtocolError`."""
    try:
        mode = next((mode for mode in MODES if flag(f.get(mode), False, mode)), None)
        return None if mode is None else analysis(f, mode, files, pipe)
    except FieldError as e:
        raise ProtocolError(e.render({})) from None


@dataclass
class Analysis:
    """One analysis job: run on the worker's thread instead of a generation; `run` returns /query_result's items."""

    mode: str
    source: Path | None
    caption: str
    lyrics: str
    temperature: float | None
    top_p: float | None
    seed: int | None  # the VAE's draw and the planner's (None: random)

    def run(self, pipe, progress) -> list[dict]:
        callback = progress if self.mode != "analysis_only" else None
        if self.mode == "extract_codes_only":
            codes = codes_input(pipe.audio_codes(self.source, seed=self.seed, callback=callback))
            empty = {"audio_paths": [], "raw_audio_paths": [], "first_audio_path": None, "metas": {}}
            return [{"status_message": "Audio Codes Extraction Success", "audio_codes": codes} | empty]
        if self.mode == "full_analysis_only":
            return [full_analysis(pipe.understand(self.source, seed=self.seed, callback=callback))]
        options = dict(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        metas = pipe.think(self.caption, self.lyrics, **options)
        lm = pipe.folders.lm.name
        return [analysis_only(metas, self.caption, self.lyrics, lm)]


def full_analysis(sheet) -> dict:
    metas = sheet.metadata()
    return {
        "status_message": "Full Hardware Analysis Success",
        "bpm": sheet.bpm,
        "keyscale": sheet.keyscale,
        "timesignature": sheet.timesignature,
        "duration": sheet.duration,
        "genre": None,  # the planner's genres are not kept (planner/understand.py)
        "prompt": sheet.caption,
        "lyrics": sheet.lyrics,
        "language": sheet.language or "unknown",
        "metas": metas,
        "audio_codes": codes_input(sheet.codes),
        "audio_paths": [],
    }


def analysis_only(metas: dict, caption: str, lyrics: str, lm: str) -> dict:
    """The item upstream's cache writes for an analysis_only result (its `metas` read from the LM's metadata)."""
    return {
        "file": "",
        "prompt": metas.get("caption") or caption,
        "lyrics": lyrics,
        "metas": {
            "bpm": metas.get("bpm"),
            "duration": metas.get("duration"),
            "genres": metas.get("genres", ""),
            "keyscale": metas.get("keyscale", ""),
            "timesignature": metas.get("timesignature", ""),
            "prompt": metas.get("prompt", ""),
            "lyrics": metas.get("lyrics", ""),
        },
        "generation_info": "Analysis Only Mode Complete",
        "seed_value": "",
        "lm_model": lm,
        "dit_model": "None (Analysis Only)",
    }


def analysis(f: dict, mode: str, files: dict, pipe) -> Analysis:
    """The job of an analysis body, or a `ProtocolError` for what it lacks (a source, the planner)."""
    source = files.get("src_audio")
    if mode != "analysis_only" and source is None:
        raise ProtocolError(f"{mode} needs the source audio: upload src_audio or give src_audio_path")
    if mode != "extract_codes_only" and pipe.folders.lm is None:
        raise ProtocolError(f"{mode} needs the planner LM, and this server runs none (serve --lm)")
    temperature, top_p = sent(f.get("lm_temperature"), as_float), sent(f.get("lm_top_p"), as_float)
    if isinstance(top_p, float) and not 0 < top_p < 1:  # upstream filters with 0 < top_p < 1 only (off otherwise)
        top_p = 1.0
    for name, value in (("lm_temperature", temperature), ("lm_top_p", top_p)):
        if value is not None:
            REQUEST.check(name, value)
    caption, lyrics = text(f.get("prompt"), "", "prompt"), text(f.get("lyrics"), "", "lyrics")
    seed = seeds(f.get("seed"), 1, flag(f.get("use_random_seed"), REST_DEFAULTS["use_random_seed"], "use_random_seed"))
    seed = seed[0] if isinstance(seed, list) else seed
    if seed is not None and not is_int(seed):
        raise ProtocolError(f"seed must be a whole number, got {f['seed']!r}")
    return Analysis(mode, source, caption, lyrics, temperature, top_p, seed)
