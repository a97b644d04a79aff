"""The planner as a songwriter and a listener, on the pipeline: `create_sample` (a song from one sentence),
`format_sample` (a user's caption and lyrics tidied), `understand` (a recording described), each a `SongSheet`
(`planner/tasks.py`); and generation that writes the song first (`sample=`, upstream's `sample_mode`) or tidies the
draft first (`format=True`, upstream's `use_format`).

They run on the pipeline's thread with the planner loaded as thinking loads it; `callback` gets `Progress("write",
tokens written, the budget)` (and `"encode"` while `understand` encodes the recording) and may cancel.
"""

from __future__ import annotations

import functools

import numpy as np

from ..conditioning.prompts import LANGUAGES
from ..conditioning.sources import read_audio
from ..errors import AceStepError
from ..limits import DEFAULT_LM_TEMPERATURE, DEFAULT_LM_TOP_P
from ..names import DEFAULT_LM, INSTRUMENTAL, LM_SIZES, NO_USER_INPUT
from ..planner import tasks
from .request import REQUEST, normalize_key, normalize_time_signature
from .residency import PhaseMeter
from .results import reporter
from .seeds import resolve_seeds


def check_writing(pipe, request) -> None:
    """What a request that writes the song first (sample, format) needs: the planner, a language it knows."""
    if request.sample is not None or request.format:
        check_planner(pipe, "sample" if request.sample is not None else "format")
        _language(request.language)


def check_planner(pipe, what: str) -> None:
    """A model without the planner LM says which planner to add."""
    if pipe.folders.lm is None:
        raise AceStepError(
            f"{what} needs the planner LM, and this model has none: load one with lm='{DEFAULT_LM}' (on the command "
            f"line --lm {DEFAULT_LM}; {', '.join(LM_SIZES)} exist)"
        )


def _language(language: str | None) -> str | None:
    if language is None or language.strip().lower() in ("", "unknown"):
        return None
    if language.strip().lower() not in LANGUAGES:
        raise AceStepError(f"unknown language {language!r} (a code such as en, zh, ja, fr, de; or unknown)")
    return language.strip().lower()


def _options(pipe, task: str, temperature, top_p, seed) -> dict:
    temperature = tasks.TEMPERATURES[task] if temperature is None else REQUEST.check("lm_temperature", temperature)
    return dict(
        temperature=temperature,
        top_p=REQUEST.check("lm_top_p", top_p),
        seed=resolve_seeds(seed, 1)[0],
        max_duration=pipe.max_seconds,
    )


def _run(pipe, task_fn, report, options: dict, meter: PhaseMeter | None = None, *args, **kwargs):
    """`task_fn(planner, ...)` with the planner loaded (on the pipeline's thread); its tokens reported as "write"."""

    def run(planner):
        sheet = task_fn(planner, *args, callback=functools.partial(report, "write"), **options, **kwargs)
        report("write", len(sheet.tokens), len(sheet.tokens))
        return sheet

    return pipe.residency.run("planner", run, meter)


def create_sample(
    pipe, query: str = "", *, instrumental=False, language=None, temperature=None, top_p=1.0, seed=None, callback=None
) -> tasks.SongSheet:
    """A song from one sentence: caption, lyrics, bpm, key, time signature, duration and language (upstream's
    `create_sample`). An empty query lets the planner invent one (upstream's `NO USER INPUT`); `language` fixes the
    language it writes in; `instrumental` asks for a song without vocals. Defaults as upstream's: temperature 0.85,
    no top-p; `seed` None draws one (the sheet records it)."""
    check_planner(pipe, "create_sample")
    REQUEST.check("caption", query)
    options = _options(pipe, "create", temperature, top_p, seed)
    language = _language(language)
    report = reporter(callback, pipe._worker.cancel)
    return pipe._worker.run(
        lambda: _run(pipe, tasks.create_sample, report, options, None, query, bool(instrumental), language)
    )


def format_sample(
    pipe,
    caption: str,
    lyrics: str = "",
    *,
    bpm=None,
    duration=None,
    key=None,
    time_signature=None,
    language=None,
    temperature=None,
    top_p=1.0,
    seed=None,
    callback=None,
) -> tasks.SongSheet:
    """The caption and lyrics tidied into the structured form the DiT was trained on, with the metadata the planner
    chooses (upstream's `format_sample`); the values given are kept verbatim."""
    check_planner(pipe, "format_sample")
    given = dict(
        bpm=REQUEST.check("bpm", bpm),
        duration=None if duration is None else int(REQUEST.check("duration", duration)),
        keyscale=normalize_key(key),
        timesignature=normalize_time_signature(time_signature),
        language=_language(language),
    )
    texts = (REQUEST.check("caption", caption), REQUEST.check("lyrics", lyrics))
    options = _options(pipe, "format", temperature, top_p, seed)
    report = reporter(callback, pipe._worker.cancel)
    return pipe._worker.run(lambda: _run(pipe, tasks.format_sample, report, options, None, *texts, **given))


def _recording(audio) -> np.ndarray:
    wave = read_audio(audio, "recording")
    if np.all(np.abs(wave) < 1e-6):  # upstream refuses it too: there is nothing to describe
        raise AceStepError("the recording is silent")
    return wave


def _codes(pipe, wave, seed: int, meter: PhaseMeter, report) -> np.ndarray:
    """The recording's 5 Hz codes on the pipeline's thread: the VAE, then the DiT's FSQ tokenizer."""

    def encode(vae):
        progress = functools.partial(report, "encode")
        return pipe.engine.encode_audio(vae, wave, seed, pipe.vae_chunk, pipe.vae_overlap, progress)

    latents = pipe.residency.run("vae_encoder", encode, meter)
    return pipe.residency.run("audio_codes", lambda dit: pipe.engine.audio_codes(dit, latents), meter)


def audio_codes(pipe, audio, *, seed=None, callback=None) -> np.ndarray:
    """A recording's 5 Hz codes `[n]` (upstream's `convert_src_audio_to_codes`): what `understand` listens to, and
    what `audio_codes=` renders. `seed`: the VAE posterior's draw (None: random)."""
    wave = _recording(audio)
    seed = resolve_seeds(seed, 1)[0]
    report = reporter(callback, pipe._worker.cancel)
    return pipe._worker.run(lambda: _codes(pipe, wave, seed, PhaseMeter(), report), wave)


def understand(pipe, audio, *, temperature=None, top_p=1.0, seed=None, callback=None) -> tasks.SongSheet:
    """What the planner hears in a recording (a file in any format and rate, or a 48 kHz `[samples, channels]`
    array; 1 to 600 s): caption, lyrics and metadata, and the 5 Hz codes it listened to (upstream's
    `convert_src_audio_to_codes`, then `understand_audio_from_codes`; temperature 0.3 as upstream's API)."""
    check_planner(pipe, "understand")
    wave = _recording(audio)
    options = _options(pipe, "understand", temperature, top_p, seed)

    def run():
        meter, report = PhaseMeter(), reporter(callback, pipe._worker.cancel)
        codes = _codes(pipe, wave, options["seed"], meter, report)
        return _run(pipe, tasks.understand_codes, report, options, meter, codes)

    return pipe._worker.run(run, wave)


def think(pipe, caption: str, lyrics: str = INSTRUMENTAL, *, temperature=None, top_p=None, top_k=0, seed=None):
    """The planner's metadata for a caption and lyrics, its first phase alone (no codes, no audio): bpm, caption,
    duration, keyscale, language, time signature, as upstream's `analysis_only` asks its LM for them
    (`generate_with_stop_condition`, infer_type "dit"). Defaults: the request's sampling."""
    check_planner(pipe, "think")
    temperature = REQUEST.check("lm_temperature", DEFAULT_LM_TEMPERATURE if temperature is None else temperature)
    top_p = REQUEST.check("lm_top_p", DEFAULT_LM_TOP_P if top_p is None else top_p)
    texts = (REQUEST.check("caption", caption), REQUEST.check("lyrics", lyrics))
    seed, top_k = resolve_seeds(seed, 1)[0], REQUEST.check("lm_top_k", top_k)
    user = dict.fromkeys(("bpm", "duration", "keyscale", "timesignature", "language"))

    def run(planner):
        result = planner.think(*texts, user, temperature, top_p, seed, pipe.max_seconds, None, top_k)
        return dict(result.metadata)

    return pipe._worker.run(lambda: pipe.residency.run("planner", run))


# -- generation that uses them -------------------------------------------------------------------------------------


def write_first(pipe, request, seed: int, meter: PhaseMeter, report) -> tuple[object, list[tasks.SongSheet]]:
    """(the request to render, the sheets written): with `sample` the planner writes the song from it, with `format`
    it tidies the caption and lyrics (after the sample's, as upstream runs both). What the request gives explicitly
    (a duration, bpm, key, time signature, language) wins over what the planner writes."""
    sheets = []
    if request.sample is None and not request.format:
        return request, sheets
    options = dict(temperature=request.lm_temperature, top_p=request.lm_top_p, seed=seed, max_duration=pipe.max_seconds)
    options["top_k"] = request.lm_top_k
    language = None if request.language == "unknown" else request.language
    with meter.phase("write"):
        if request.sample is not None:
            args = (request.sample, request.instrumental, language)
            sheet = _run(pipe, tasks.create_sample, report, options, meter, *args)
            sheets.append(sheet)
            caption = sheet.caption.strip() or request.sample.strip() or NO_USER_INPUT
            request = _apply(request, sheet, caption=caption, lyrics=sheet.lyrics.strip() or INSTRUMENTAL)
        if request.format:
            given = dict(
                bpm=request.bpm,
                duration=request.duration,
                keyscale=request.key,
                timesignature=request.time_signature,
                language=language,
            )
            sheet = _run(pipe, tasks.format_sample, report, options, meter, request.caption, request.lyrics, **given)
            sheets.append(sheet)
            texts = dict(
                caption=sheet.caption.strip() or request.caption, lyrics=sheet.lyrics.strip() or request.lyrics
            )
            request = _apply(request, sheet, **texts)
    return request, sheets


def _apply(request, sheet: tasks.SongSheet, **texts):
    """The request with the sheet's caption and lyrics, and its metadata where the request has none."""
    mine = dict(
        duration=request.duration,
        bpm=request.bpm,
        key=request.key,
        time_signature=request.time_signature,
        language=None if request.language == "unknown" else request.language,
    )
    theirs = dict(
        duration=sheet.duration,
        bpm=sheet.bpm,
        key=sheet.keyscale,
        time_signature=sheet.timesignature,
        language=sheet.language,
    )
    merged = {k: mine[k] if mine[k] is not None else theirs[k] for k in mine}
    merged["language"] = merged["language"] or "unknown"
    return request.replace(sample=None, instrumental=False, format=False, **texts, **merged)
