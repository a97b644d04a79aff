"""/release_task's custom sampling and conditioning as upstream's API reads them onto this project's request fields
(`pipeline/custom.py` holds their rules): `use_adg`, `cfg_interval_start` / `_end`, `timesteps` (comma-separated,
`server_utils.py:124-132`), `lm_top_k` and `lm_top_p` (`llm_generation_inputs.py:64-65`) and `audio_code_string`
(`job_generation_setup.py:159`). Where upstream falls back to a default without a word (a `timesteps` that does not
parse), the field is refused by name. An extension: upstream's retake (`retake_seed`, `retake_variance`: its Python
API's and Gradio's names, not on its REST)."""

from __future__ import annotations

from ..errors import RequestError
from ..fields import is_number
from .values import as_float, as_int, flag, seeds, sent, text

CFG_INTERVAL = {"cfg_interval_start": 0.0, "cfg_interval_end": 1.0}  # upstream's REST defaults
TOP_P = 0.9  # upstream's top-p where a task sends none, 0, or 1 and above (llm_generation_inputs.py:65)


def custom_fields(f: dict) -> dict:
    """The request fields of a body's custom sampling (`f`: its fields by upstream's names)."""
    interval = tuple(_number(f, name, default) for name, default in CFG_INTERVAL.items())
    top_k = sent(f.get("lm_top_k"), as_int)
    if top_k is not None and not isinstance(top_k, int):
        raise RequestError("lm_top_k", f"@name@ must be a whole number, got {f['lm_top_k']!r}")
    top_p = sent(f.get("lm_top_p"), as_float)
    return dict(
        guidance_kind="adg" if flag(f.get("use_adg"), False, "use_adg") else None,
        cfg_interval=interval,
        timesteps=timesteps(f.get("timesteps")),
        lm_top_k=max(top_k or 0, 0),  # upstream: absent, 0 or less is off
        lm_top_p=TOP_P if top_p == 0 or (is_number(top_p) and top_p >= 1) else top_p,
        audio_codes=text(f.get("audio_code_string"), "", "audio_code_string").strip() or None,
        retake_variance=sent(f.get("retake_variance"), as_float),
        retake_seed=seeds(f.get("retake_seed"), None, False),
    )


def _number(f: dict, name: str, default: float) -> float:
    value = sent(f.get(name), as_float)
    if value is None:
        return default
    if not is_number(value):
        raise RequestError(name, f"@name@ must be a number, got {f[name]!r}")
    return value


def timesteps(value) -> list[float] | None:
    """Upstream's comma-separated schedule ("0.97,0.76,...,0"), or a JSON list; empty: none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
    if not isinstance(parts, list):
        raise RequestError("timesteps", f"@name@ must be comma-separated numbers, got {value!r}")
    numbers = [sent(p, as_float) for p in parts]
    if not all(is_number(n) for n in numbers):
        raise RequestError("timesteps", f"@name@ must be comma-separated numbers, got {value!r}")
    return numbers
