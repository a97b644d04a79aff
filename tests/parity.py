"""The fixture-driven parity harness.

A fixture folder (default `tests/fixtures/parity`, or `$MLX_ACESTEP_FIXTURES`)
holds `cases.json`, `cases/<case>.safetensors` (inputs `in.*`, outputs `out.*`)
and `checkpoints/` in the original upstream layout. The harness converts the
checkpoints with the project's converter, loads them with the project's
loader, runs each case through the matching runner and compares every output
with the tolerance of its kind. Nothing here knows a shape, seed or file name
of one particular fixture set: runners are chosen from the case's component
and input names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mlx_acestep.safetensors_io import read_safetensors

DEFAULT_FIXTURES = Path(__file__).parent / "fixtures" / "parity"


def fixtures_dir() -> Path:
    return Path(os.environ.get("MLX_ACESTEP_FIXTURES", DEFAULT_FIXTURES))


def load_cases(root: Path) -> dict[str, dict]:
    return json.loads((root / "cases.json").read_text())["cases"]


def load_case_tensors(root: Path, case: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    tensors = read_safetensors(root / case["file"])
    inputs = {k[3:]: np.array(v) for k, v in tensors.items() if k.startswith("in.")}
    outputs = {k[4:]: np.array(v) for k, v in tensors.items() if k.startswith("out.")}
    return inputs, outputs


# --- tolerances ----------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """max|a-b| <= rel_max * max|ref| + atol, and optionally mean|a-b| <= rel_mean * max|ref|."""

    rel_max: float
    atol: float = 0.0
    rel_mean: float | None = None


# Issue 2: VAE within 1e-4 of max|ref|. The reference's own fp32 noise on these
# cases is <= 1.3e-6 of max|ref| (fixtures README), so this is ~100x that.
VAE = Tolerance(rel_max=1e-4)
# Single-module forwards (text encoder, condition encoder, ...): issue 3 asks for 1e-4 of
# max|ref|; the reference's own noise there is <= 5e-7 of max|ref|.
MODULE = Tolerance(rel_max=1e-4)


def compare(name: str, ours: np.ndarray, ref: np.ndarray, tol: Tolerance, exact: bool) -> tuple[bool, str, float]:
    """Return (ok, message, max error relative to max|ref|)."""
    if tuple(ours.shape) != tuple(ref.shape):
        return False, f"{name}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}", float("inf")
    if exact:
        bad = int(np.sum(ours != ref))
        return bad == 0, f"{name}: {bad} of {ref.size} values differ", 0.0 if bad == 0 else float("inf")
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref))) or 1.0
    max_err, mean_err = float(diff.max()), float(diff.mean())
    ok = max_err <= tol.rel_max * scale + tol.atol
    if tol.rel_mean is not None:
        ok = ok and mean_err <= tol.rel_mean * scale
    msg = f"{name}: max|diff| {max_err:.3e} ({max_err / scale:.2e} of max|ref| {scale:.3g}), mean {mean_err:.3e}"
    return ok, msg, max_err / scale


# --- runners -------------------------------------------------------------------


@dataclass
class Runner:
    component: str  # converted component folder (a glob pattern) to load
    run: Callable[..., dict[str, np.ndarray]]  # (model or folder, inputs, case) -> outputs
    tolerance: Tolerance
    injected: tuple[str, ...] = ()  # outputs that are really inputs (the reference's noise draw)
    wants_folder: bool = False  # pass the converted folder instead of the loaded model


def _tokenizers(folder, inp, case):
    """The padded caption/lyric batches from the case's prompt strings, and its tokenizer round trips."""
    from mlx_acestep.prompts import CAPTION_MAX_TOKENS, LYRIC_MAX_TOKENS, PromptTokenizer

    tok = PromptTokenizer(folder)
    for item in case.get("text_tokenizer", []):
        ids = tok.tokenizer(item["text"])["input_ids"]
        assert ids == item["ids"], f"text tokenizer round trip differs for {item['text'][:40]!r}"
    text_ids, text_mask = tok.batch(case["strings"]["text_prompts"], CAPTION_MAX_TOKENS)
    lyric_ids, lyric_mask = tok.batch(case["strings"]["lyric_prompts"], LYRIC_MAX_TOKENS)
    return {
        "text_token_ids": text_ids,
        "text_attention_mask": text_mask,
        "lyric_token_ids": lyric_ids,
        "lyric_attention_mask": lyric_mask,
    }


def _vae_decode(vae, inp, case=None):
    import mlx.core as mx

    z = mx.array(inp["latents"]).transpose(0, 2, 1)  # [B, 64, T] -> [B, T, 64]
    return {"waveform": np.array(vae.decode(z)).transpose(0, 2, 1)}


def _vae_encode(vae, inp, case=None):
    import mlx.core as mx

    x = mx.array(inp["audio"]).transpose(0, 2, 1)  # [B, 2, N] -> [B, N, 2]
    mean, std = vae.encode_moments(x)
    sample = vae.sample(mean, std, noise=mx.array(inp["eps"]).transpose(0, 2, 1))
    return {k: np.array(v).transpose(0, 2, 1) for k, v in (("mean", mean), ("std", std), ("sample", sample))}


def _text_encoder(model, inp, case=None):
    import mlx.core as mx

    ids = mx.array(inp["input_ids"].astype(np.int32))
    mask = mx.array(inp["attention_mask"]) if "attention_mask" in inp else None
    return {"last_hidden_state": np.array(model(ids, attention_mask=mask))}


def _text_embed(model, inp, case=None):
    import mlx.core as mx

    return {"embeddings": np.array(model.embed(mx.array(inp["input_ids"].astype(np.int32))))}


def _lyric_encoder(model, inp, case=None):
    import mlx.core as mx

    out = model.encoder.lyric_encoder(mx.array(inp["inputs_embeds"]), mx.array(inp["attention_mask"]))
    return {"last_hidden_state": np.array(out)}


def _timbre_encoder(model, inp, case=None):
    import mlx.core as mx

    emb, mask = model.encoder.timbre_encoder(
        mx.array(inp["refer_audio_acoustic_hidden_states_packed"]), mx.array(inp["refer_audio_order_mask"])
    )
    return {"timbre_embs_unpack": np.array(emb), "timbre_embs_mask": np.array(mask)}


def _condition_encoder(model, inp, case=None):
    import mlx.core as mx

    h, mask = model.encoder(
        mx.array(inp["text_hidden_states"]),
        mx.array(inp["text_attention_mask"]),
        mx.array(inp["lyric_hidden_states"]),
        mx.array(inp["lyric_attention_mask"]),
        mx.array(inp["refer_audio_acoustic_hidden_states_packed"]),
        mx.array(inp["refer_audio_order_mask"]),
    )
    return {"encoder_hidden_states": np.array(h), "encoder_attention_mask": np.array(mask)}


# Components that later issues build; a case for one of them is skipped with this reason.
NOT_BUILT = [
    (":tokenizer", "FSQ audio tokenizer (issue 4)"),
    (":detokenizer", "FSQ detokenizer (issue 4)"),
    (":decoder", "DiT decoder (issue 4)"),
    ("acestep-5Hz-lm", "5 Hz planner LM (issue 6)"),
    ("pipeline", "end-to-end text2music pipeline (issue 5)"),
    ("acestep-v15", "DiT samplers and prepare_condition (issue 4)"),
]


def runner_for(case: dict) -> tuple[Runner | None, str]:
    """The runner for a case, or None with the reason (what is missing)."""
    component = case["component"]
    inputs = set(case["inputs"])
    if component == "tokenizers":  # the LM tokenizer's round trips come with the LM (issue 6)
        return Runner("Qwen3-Embedding*", _tokenizers, MODULE, wants_folder=True), ""
    if component == "vae" and inputs == {"latents"}:
        return Runner("vae", _vae_decode, VAE), ""
    if component == "vae" and inputs == {"audio"}:
        return Runner("vae", _vae_encode, VAE, injected=("eps",)), ""
    folder = component.split(":")[0]
    outputs = set(case["outputs"])
    encoder_runners = {
        "encoder.lyric_encoder": _lyric_encoder,
        "encoder.timbre_encoder": _timbre_encoder,
        "encoder": _condition_encoder,
    }
    part = component.split(":", 1)[1] if ":" in component else None
    if part in encoder_runners:
        return Runner(folder, encoder_runners[part], MODULE), ""
    if folder.startswith("Qwen3-Embedding") and outputs == {"embeddings"}:
        return Runner(folder, _text_embed, MODULE), ""
    if folder.startswith("Qwen3-Embedding") and outputs == {"last_hidden_state"}:
        return Runner(folder, _text_encoder, MODULE), ""
    for marker, what in NOT_BUILT:
        if marker in component:
            return None, f"not built yet: {what}"
    return None, f"no runner for component {component!r} with inputs {sorted(inputs)}"


def run_case(runner: Runner, model, inputs: dict, outputs: dict, case: dict) -> dict[str, np.ndarray]:
    return runner.run(model, {**inputs, **{k: outputs[k] for k in runner.injected}}, case)
