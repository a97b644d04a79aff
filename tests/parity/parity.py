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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_acestep.safetensors_io import read_safetensors

DEFAULT_FIXTURES = Path(__file__).parents[1] / "fixtures" / "parity"


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
# Whole sampling runs (8 DiT evaluations and the guidance between them). Measured here: 1.2e-6 (pipeline) to
# 7.8e-6 (base APG, Metal path); about ten times the worst of them (issue 16: 1e-3 let a 2.4e-4 bug through).
SAMPLING = Tolerance(rel_max=1e-4)


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
    wants_silence: bool = False  # the case reads the checkpoint's silence latent (an implicit input)


def _tokenizers(folder, inp, case):
    """The padded caption/lyric batches from the case's prompt strings, and its tokenizer round trips."""
    from mlx_acestep.conditioning.prompts import PromptTokenizer
    from mlx_acestep.limits import CAPTION_TOKENS, LYRIC_TOKENS

    tok = PromptTokenizer(folder)
    for item in case.get("text_tokenizer", []):
        ids = tok.tokenizer(item["text"])["input_ids"]
        assert ids == item["ids"], f"text tokenizer round trip differs for {item['text'][:40]!r}"
    text_ids, text_mask = tok.batch(case["strings"]["text_prompts"], CAPTION_TOKENS)
    lyric_ids, lyric_mask = tok.batch(case["strings"]["lyric_prompts"], LYRIC_TOKENS)
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


def _mx(inp, *names):
    import mlx.core as mx

    return [mx.array(inp[n].astype(np.int32) if inp[n].dtype == np.int64 else inp[n]) for n in names]


def _audio_tokenize(model, inp, case, silence):
    latents, mask = _mx(inp, "hidden_states", "attention_mask")
    quantized, indices, mask_5hz, pooled = model.tokenizer.tokenize(latents, silence, mask)
    return {
        "quantized": np.array(quantized),
        "indices": np.array(indices),
        "attention_mask_5hz": np.array(mask_5hz),
        "pooled": np.array(pooled),
    }


def _fsq_from_indices(model, inp, case=None):
    (indices,) = _mx(inp, "indices")
    return {"quantized": np.array(model.tokenizer.quantizer.from_indices(indices))}


def _detokenize(model, inp, case=None):
    (quantized,) = _mx(inp, "quantized")
    return {"lm_hints_25hz": np.array(model.detokenizer(quantized))}


def _codes_to_hints(model, inp, case=None):
    (indices,) = _mx(inp, "indices")
    return {"lm_hints_25hz": np.array(model.codes_to_hints(indices))}


def _dit_decoder(model, inp, case=None):
    x, t, r, states, context = _mx(
        inp, "hidden_states", "timestep", "timestep_r", "encoder_hidden_states", "context_latents"
    )
    return {"velocity": np.array(model.decoder(x, t, r, context, model.decoder.cross_key_values(states)))}


CONDITION_INPUTS = (
    "text_hidden_states",
    "text_attention_mask",
    "lyric_hidden_states",
    "lyric_attention_mask",
    "refer_audio_acoustic_hidden_states_packed",
    "refer_audio_order_mask",
    "src_latents",
    "chunk_masks",
    "is_covers",
)


def _prepare_condition(model, inp, case, silence):
    prepared = model.prepare_condition(*_mx(inp, *CONDITION_INPUTS), silence)
    return {
        "encoder_hidden_states": np.array(prepared.encoder_hidden_states),
        "encoder_attention_mask": np.array(prepared.encoder_attention_mask),
        "context_latents": np.array(prepared.context_latents),
    }


def entry_point_args(case: dict) -> dict[str, str]:
    """The keyword arguments written in the case's reference call (`shift=3.0`, `timesteps=torch.tensor([...])`, ...)."""
    import re

    text = case.get("reference_entry_point", "")
    args = {
        m.group(1): m.group(2) for m in re.finditer(r"(\w+)=((?:torch\.tensor\()?\[[^\]]*\]\)?|'[^']*'|[^,)\s]+)", text)
    }
    return {k: v.strip("'") for k, v in args.items()}


def sampler_settings(case: dict):
    """Sampler settings from the reference call the case records; the reference's defaults where it is silent."""
    import re

    from mlx_acestep.diffusion.sampler import BaseSettings, TurboSettings

    args = entry_point_args(case)
    listed = re.search(r"\[([^\]]*)\]", args.get("timesteps", ""))
    timesteps = [float(v) for v in listed.group(1).split(",") if v.strip()] if listed else None
    method = args.get("infer_method", "ode")
    if "base" in case["component"] or "sft" in case["component"]:
        steps = int(args["infer_steps"]) if "infer_steps" in args else case["outputs"]["debug_step_t"]["shape"][0]
        return BaseSettings(
            steps=steps,
            shift=float(args.get("shift", 1.0)),
            guidance_scale=float(args.get("diffusion_guidance_sale", 7.0)),
            guidance="adg" if args.get("use_adg") == "True" else "apg",
            method=method,
            timesteps=timesteps,
            cfg_interval=(float(args.get("cfg_interval_start", 0.0)), float(args.get("cfg_interval_end", 1.0))),
        )
    return TurboSettings(shift=float(args.get("shift", 3.0)), timesteps=timesteps, method=method)


def _generate(model, inp, case, silence):
    from mlx_acestep.diffusion.sampler import BaseSettings, sample_base, sample_turbo

    prepared = model.prepare_condition(*_mx(inp, *CONDITION_INPUTS), silence)
    (noise,) = _mx(inp, "noise")
    renoise = list(_mx(inp, "sde_noise")[0]) if "sde_noise" in inp else None
    settings = sampler_settings(case)
    args = (model.decoder, prepared.encoder_hidden_states, prepared.context_latents)
    if isinstance(settings, BaseSettings):
        x0 = sample_base(*args, model.null_condition_emb, settings, noise=noise, renoise=renoise)
    else:
        x0 = sample_turbo(*args, settings, noise=noise, renoise=renoise)
    return {"target_latents": np.array(x0)}


def _pipeline(dit_folder, inp, case):
    """The whole pipeline from token ids: text encoder -> condition -> sampler -> VAE, with the case's noise.

    The converted root holds every component; the DiT variant is the one the case names. The
    reference's timbre input is the first `timbre_frames` frames of the silence latent (no reference audio).
    """
    import mlx.core as mx

    from mlx_acestep.conditioning.inputs import PromptTokens
    from mlx_acestep.limits import CAPTION_TOKENS, LYRIC_TOKENS
    from mlx_acestep.pipeline import ACEStep, ModelFolders

    root = dit_folder.parent
    pipe = ACEStep(ModelFolders(next(root.glob("Qwen3-Embedding*")), dit_folder, root / "vae"))
    tokens = PromptTokens(
        inp["text_token_ids"],
        inp["text_attention_mask"].astype(bool),
        inp["lyric_token_ids"],
        inp["lyric_attention_mask"].astype(bool),
    )
    if "text_prompts" in case:  # the pipeline's tokenizer gives the reference's ids for the recorded prompts
        ids, mask = pipe.tokenizer.batch(case["text_prompts"], CAPTION_TOKENS)
        assert np.array_equal(ids, tokens.text_ids) and np.array_equal(mask, tokens.text_mask), "caption ids differ"
        ids, mask = pipe.tokenizer.batch(case["lyric_prompts"], LYRIC_TOKENS)
        assert np.array_equal(ids, tokens.lyric_ids) and np.array_equal(mask, tokens.lyric_mask), "lyric ids differ"
    noise = mx.array(inp["noise"])
    out = pipe.generate_from_tokens(
        tokens, noise.shape[1], noise, sampler_settings(case), timbre_frames=case.get("timbre_frames")
    )
    return {
        "text_hidden_states": np.array(out.text_hidden_states),
        "lyric_hidden_states": np.array(out.lyric_hidden_states),
        "target_latents": np.array(out.latents),
        "waveform": np.array(out.waveform).transpose(0, 2, 1),  # ours [B, samples, 2], the reference's [B, 2, samples]
    }


def _lm(folder, inp, case):
    """The planner LM: logits, or the reference's greedy / CFG-greedy decoding (max_new_tokens, cfg_scale from its call)."""
    import mlx.core as mx

    from mlx_acestep.loading import load_component, read_json

    lm = load_component(folder, "lm")
    ids = mx.array(inp["input_ids"])
    if "logits" in case["outputs"]:
        return {"logits": np.array(lm.logits(ids))}
    config = read_json(folder / "config.json")
    stop = {config["eos_token_id"], config["pad_token_id"]}
    args = entry_point_args(case)
    steps = int(args["max_new_tokens"])
    if "attention_mask" in inp:
        new = cfg_greedy(lm, ids, mx.array(inp["attention_mask"]), steps, float(args["cfg_scale"]), stop)
    else:
        new = greedy(lm, ids, steps, stop)
    rows = np.repeat(np.array([new], dtype=inp["input_ids"].dtype), inp["input_ids"].shape[0], axis=0)
    return {"generated_ids": np.concatenate([inp["input_ids"], rows], axis=1)}


# The reference's own decoding loops (argmax per token, read back to the host, stop on EOS), for the LM cases;
# the pipeline's planner decodes with `mlx_acestep.planner` instead.
def greedy(lm, input_ids: mx.array, max_new_tokens: int, stop_ids: set[int]) -> list[int]:
    """Argmax decoding of one prompt with a KV cache; stops after emitting a stop id (kept in the output)."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(lm)
    logits = lm.logits(input_ids, cache)[:, -1]
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(mx.argmax(logits, axis=-1).item())
        out.append(token)
        if token in stop_ids or len(out) == max_new_tokens:
            break
        logits = lm.logits(mx.array([[token]]), cache)[:, -1]
    return out


def cfg_greedy(
    lm, input_ids: mx.array, attention_mask: mx.array, max_new_tokens: int, scale: float, stop_ids: set[int]
) -> list[int]:
    """[cond, uncond] in one batched forward per step: argmax of `u + scale (c - u)`, the token appended to both rows."""
    if input_ids.shape[0] != 2:
        raise ValueError(f"CFG decoding takes a [cond, uncond] batch of 2, got {input_ids.shape[0]}")
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(lm)
    key_mask = attention_mask.astype(mx.bool_)
    logits = lm.logits(input_ids, cache, key_mask)[:, -1].astype(mx.float32)
    out: list[int] = []
    for _ in range(max_new_tokens):
        guided = logits[1] + scale * (logits[0] - logits[1])
        token = int(mx.argmax(guided).item())
        out.append(token)
        if token in stop_ids or len(out) == max_new_tokens:
            break
        key_mask = mx.concatenate([key_mask, mx.ones((2, 1), mx.bool_)], axis=1)
        logits = lm.logits(mx.array([[token], [token]]), cache, key_mask)[:, -1].astype(mx.float32)
    return out


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
    outputs = set(case["outputs"])
    if component.startswith("acestep-5Hz-lm") and "input_ids" in inputs:
        return Runner(component, _lm, MODULE, wants_folder=True), ""
    if component.startswith("pipeline") and "waveform" in outputs:
        variant = "acestep-v15-base" if "base" in component else "acestep-v15-turbo"
        return Runner(variant, _pipeline, SAMPLING, wants_folder=True), ""
    folder = component.split(":")[0]
    encoder_runners = {
        "encoder.lyric_encoder": _lyric_encoder,
        "encoder.timbre_encoder": _timbre_encoder,
        "encoder": _condition_encoder,
    }
    part = component.split(":", 1)[1] if ":" in component else None
    if part in encoder_runners:
        return Runner(folder, encoder_runners[part], MODULE), ""
    dit_runners = {
        "tokenizer": (_audio_tokenize, True),
        "tokenizer.quantizer": (_fsq_from_indices, False),
        "detokenizer": (_detokenize, False),
        "tokenizer.quantizer+detokenizer": (_codes_to_hints, False),
        "decoder": (_dit_decoder, False),
    }
    if folder.startswith("acestep-v15") and part in dit_runners:
        run, silence = dit_runners[part]
        return Runner(folder, run, MODULE, wants_silence=silence), ""
    if folder.startswith("acestep-v15") and part is None and "noise" in inputs:
        return Runner(folder, _generate, SAMPLING, wants_silence=True), ""
    if folder.startswith("acestep-v15") and part is None and "context_latents" in outputs:
        return Runner(folder, _prepare_condition, MODULE, wants_silence=True), ""
    if folder.startswith("Qwen3-Embedding") and outputs == {"embeddings"}:
        return Runner(folder, _text_embed, MODULE), ""
    if folder.startswith("Qwen3-Embedding") and outputs == {"last_hidden_state"}:
        return Runner(folder, _text_encoder, MODULE), ""
    return None, f"no runner for component {component!r} with inputs {sorted(inputs)}"


def run_case(runner: Runner, model, inputs: dict, outputs: dict, case: dict, folder: Path) -> dict[str, np.ndarray]:
    inputs = {**inputs, **{k: outputs[k] for k in runner.injected}}
    if runner.wants_silence:
        from mlx_acestep.loading import load_silence_latent

        return runner.run(model, inputs, case, load_silence_latent(folder))
    return runner.run(model, inputs, case)
