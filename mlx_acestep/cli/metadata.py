"""What a `generate` run records beside each file (`NAME.json`) and inside it (tags), and reading it back.

The sidecar holds what a person wants to know (caption, lyrics, seed, model, DiT, dtype, sampler settings, task
and inputs, adapters, the planner's choices, the version) and, under `"replay"`, the command line's parameters
with this item's seed: `mlx-acestep generate --from-metadata NAME.json` (or the audio file, whose comment tag
holds the same JSON) runs it again; options given beside it override the recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..errors import AceStepError

FORMAT = 1
NOT_REPLAYED = ("output", "overwrite", "from_metadata", "prompt_file", "lyrics_file", "fmt")


def replay_params(params: dict, seed: int) -> dict:
    """The parameters that reproduce one item: its own seed, batch 1, the caption and lyrics as text."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if k not in NOT_REPLAYED}
    out.update(seed=seed, batch=1)
    return out


def run_metadata(params: dict, result, index: int, pipe, request) -> dict:
    """The sidecar of item `index` of `result`."""
    settings = request.sampler_settings(pipe.family)
    planner = result.metadata[index] if index < len(result.metadata) else {}
    return {
        "format": FORMAT, "software": f"mlx-acestep {__version__}",
        "caption": request.caption, "lyrics": request.lyrics, "seed": result.seeds[index], "index": index,
        "duration": result.duration, "model": params.get("model"), "dit": pipe.name, "dtype": str(pipe.dtype).split(".")[-1],
        "quantize": params.get("quantize"), "task": request.task,
        "inputs": {k: v for k, v in (("src_audio", request.src_audio), ("ref_audio", request.ref_audio)) if v},
        "region": [request.repaint_start, request.repaint_end] if request.task in ("repaint", "lego") else None,
        "cover_strength": request.cover_strength if request.task == "cover" else None,
        "sampler": {k: v for k, v in vars(settings).items() if isinstance(v, (int, float, str, type(None)))},
        "adapters": [{"name": n, "scale": s} for n, s in pipe.loras()],
        "planner": planner, "replay": replay_params(params, result.seeds[index]),
    }


def audio_tags(meta: dict) -> dict:
    """File tags: the caption as the title, the whole sidecar as the comment (so the file alone replays)."""
    return {"title": meta["caption"][:200], "comment": json.dumps(meta, separators=(",", ":")),
            "software": meta["software"]}


def read_metadata(path: str | Path) -> dict:
    """The recorded parameters of a sidecar JSON or of an audio file this program wrote."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".wav", ".flac"):
            import soundfile as sf

            with sf.SoundFile(str(path)) as f:
                text = f.comment or ""
        else:
            text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
    except (OSError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AceStepError(f"{path}: no readable mlx-acestep metadata ({e.__class__.__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("replay"), dict):
        raise AceStepError(f"{path}: not metadata written by mlx-acestep generate (no 'replay' section)")
    return meta["replay"]
