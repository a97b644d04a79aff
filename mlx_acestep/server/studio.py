"""The studio page: `GET /` serves a browser page (plain HTML, CSS and ES modules shipped in `server/studio/`, no
build step, nothing fetched from elsewhere) that works through the same REST routes every other client uses, and
`GET /v1/studio/settings` tells it the fields' defaults, ranges and choices, so that the page repeats none of them.

Why plain modules: the page is a few hundred lines of wiring over fetch, EventSource, <audio> and one <canvas>; a
framework would add a build step and a compiled bundle to review for no feature the page needs.
"""

from __future__ import annotations

from pathlib import Path

from ..audio import WRITABLE
from ..conditioning.prompts import LANGUAGES
from ..limits import BPM, GUIDANCE, MAX_BATCH, SAMPLE_RATE, SECONDS, SHIFT, STEPS, TURBO_STEP_RANGE
from ..names import KEYSCALES, TASKS, TIME_SIGNATURES, TRACKS
from ..pipeline.request import MODEL_DEFAULTS
from .protocol import envelope
from .values import FALLBACK_SECONDS, REST_DEFAULTS, default_format, writable_formats

STATIC = Path(__file__).parent / "studio"
# Everything the page loads comes from this server (the media are blob: URLs of fetched audio, so that a key in the
# Authorization header reaches /v1/audio): a browser refuses anything else, a CDN included.
POLICY = (
    "default-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; connect-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def settings(pipe) -> dict:
    """The form's defaults, ranges and choices for `pipe`'s DiT, from the one place each is written."""
    family = getattr(pipe, "family", "turbo")
    sampler = MODEL_DEFAULTS.get(family, MODEL_DEFAULTS["turbo"])
    steps = TURBO_STEP_RANGE if family == "turbo" else STEPS
    return {
        "model": {"name": pipe.name, "family": family, "planner": pipe.folders.lm is not None},
        "sample_rate": SAMPLE_RATE,  # the songs' (the page decodes them at it, for the waveform and the WAV export)
        "defaults": REST_DEFAULTS
        | {"audio_duration": FALLBACK_SECONDS, "shift": sampler.shift, "guidance_scale": sampler.guidance}
        | {"audio_format": default_format(WRITABLE)},  # not mp3 where this libsndfile cannot write it
        "limits": {
            "audio_duration": list(SECONDS),
            "bpm": list(BPM),
            "batch_size": [1, MAX_BATCH],
            "inference_steps": list(steps),
            "shift": list(SHIFT),
            "guidance_scale": list(GUIDANCE),
        },
        "choices": {
            "audio_format": writable_formats(WRITABLE),
            "vocal_language": sorted(LANGUAGES),
            "key_scale": list(KEYSCALES),
            "time_signature": list(TIME_SIGNATURES),
            "task_type": list(TASKS),
            "track": list(TRACKS),
        },
    }


def studio_routes(app, server) -> None:
    from fastapi.responses import FileResponse
    from starlette.staticfiles import StaticFiles

    headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    @app.get("/v1/studio/settings")
    async def studio_settings():
        """Open like /health: the limits of the protocol, nothing of anyone's jobs."""
        return envelope(settings(server.pipe))

    app.mount("/studio", StaticFiles(directory=STATIC), name="studio")
