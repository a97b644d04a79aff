"""How /release_task reads one value: upstream's REST defaults (which are not always its Python API's), its
sentinels (-1: a random seed, an automatic duration), and a value of the wrong type refused naming the field as the
client sent it, where upstream falls back to the default without a word (`release_task_param_parser.py`).

Errors are `RequestError`s named with the REST field, so `FieldError.render(REST_NAMES)` leaves them as they are.
"""

from __future__ import annotations

import math
import secrets

from ..errors import RequestError
from ..fields import is_int, is_number

# Upstream's /release_task defaults where they are not the request's own (release_task_models.py:25-131 and the
# builder's, release_task_request_builder.py:54-99; api_server.py:115-117 for the planner's sampling): with none of
# these fields a REST task runs as it would upstream.
REST_DEFAULTS = {
    "batch_size": 2,  # job_generation_setup.py:221: None -> 2
    "inference_steps": 8,  # every model, base and SFT too
    "lm_cfg_scale": 2.5,  # api_server.py:116 (the Python API's is 2.0)
    "vocal_language": "en",
    "thinking": False,
    "use_random_seed": True,  # the seed counts only with use_random_seed false
    "audio_format": "mp3",
    "task_type": "text2music",
    "infer_method": "ode",
}
# Repaint's explicit cross-fades: upstream's REST defaults, which its handler drops for the repaint mode's own values
# (generate_music.py:382-384 since 57d463b): sent as these, they mean the mode's here too; any other value is used.
REPAINT_CROSSFADE_DEFAULTS = {"repaint_latent_crossfade_frames": 10, "repaint_wav_crossfade_sec": 0.0}
# A text2music task that neither the planner nor a source gives a length: upstream renders 120 s
# (core/generation/handler/padding_utils.py:76-88; its random 10-120 s was dropped as issue #929).
FALLBACK_SECONDS = 120.0
# Upstream's "automatic" duration: -1 is its sentinel (job_generation_setup.py:13), 0 what clients send for none.
AUTOMATIC = (0, -1)
# upstream's audio_format names -> (the file's suffix, libsndfile's subtype): wav32 is a 32-bit float WAV
# (audio_utils.py:287-296); aac goes through ffmpeg upstream, which this server does not use.
FORMAT_NAMES = {
    "wav": ("wav", None),
    "wav32": ("wav", "FLOAT"),
    "flac": ("flac", None),
    "mp3": ("mp3", None),
    "opus": ("opus", None),
}
TRUE, FALSE = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off")


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


def as_bool(value, default: bool) -> bool:
    """Upstream's lenient reading (the writing routes keep it): anything but a yes is no."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE


def sent(value, parse):
    """A number a client sent, parsed; one that does not parse as it was sent, so the request refuses it naming the
    field (upstream falls back to the default instead); None when absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = parse(value)
    return value if number is None else number


def flag(value, default: bool, name: str) -> bool:
    """A boolean as JSON (true, 1) or a form (the DAW's "false") sends it; absent or empty: `default`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    if is_int(value) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise RequestError(name, f"@name@ must be true or false, got {value!r}")


def text(value, default: str | None, name: str) -> str | None:
    """A text field: a string, or a number sent where text was meant (a key of 4); a list or an object is refused."""
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if is_number(value):
        return str(value)
    raise RequestError(name, f"@name@ must be text, got {type(value).__name__}")


def duration(value):
    """`audio_duration`: None for automatic (absent, or a sentinel); else as sent, for the request to check."""
    number = sent(value, as_float)
    return None if number is None or number in AUTOMATIC else number


def seeds(value, batch, random: bool):
    """`seed` as upstream reads it (job_generation_setup.py:68-93): ignored when `random` (use_random_seed), -1 or
    absent for random, one whole number, or a comma-separated list (its -1s dropped) padded with random seeds to
    the batch. What does not parse reaches the request as sent, which refuses it naming the field."""
    if random or value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not (isinstance(value, str) and "," in value):
        number = sent(value, as_int)
        return None if number == -1 else number
    listed = [sent(p, as_int) for p in value.split(",") if p.strip() and p.strip() != "-1"]
    if not listed or not is_int(batch):
        return listed or None
    return (listed + [secrets.randbits(32) for _ in range(batch)])[: max(batch, 1)]


def writable_formats(writable) -> list[str]:
    """The `audio_format` names whose files this server's libsndfile can write (`writable`: their suffixes)."""
    return [name for name, (suffix, _) in FORMAT_NAMES.items() if suffix in writable]


def default_format(writable) -> str:
    """Upstream's default format, or flac where this libsndfile cannot write it."""
    return REST_DEFAULTS["audio_format"] if REST_DEFAULTS["audio_format"] in writable else "flac"


def audio_format(value, writable) -> tuple[str, str | None]:
    """(the file's suffix, its libsndfile subtype) of `audio_format`; one that this server cannot write is refused."""
    name = (text(value, "", "audio_format") or default_format(writable)).strip().lower()
    if name in FORMAT_NAMES and FORMAT_NAMES[name][0] in writable:
        return FORMAT_NAMES[name]
    offered = ", ".join(writable_formats(writable))
    known = "this server's libsndfile cannot encode it" if name in FORMAT_NAMES or name == "aac" else "unknown"
    raise RequestError("audio_format", f"@name@ {name!r}: {known} (use {offered})")
