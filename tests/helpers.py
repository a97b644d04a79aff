"""Small shared helpers for tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest


def require(module: str):
    """Import a live reference (torch, diffusers, transformers, peft) for a test.

    Locally a missing one skips the test; in CI (`CI=true`) it fails it: a broken test extra must not turn the
    live comparisons into a row of quiet skips.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        try:
            return __import__(module)
        except ImportError as e:
            pytest.fail(f"the live reference {module!r} is missing in CI ({e}); install the test extra")
    return pytest.importorskip(module)


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ours - ref) ** 2), 1e-300)))


def copy_vae_root(fixtures: Path, dst: Path) -> Path:
    """A checkpoint root holding only the fixture VAE (fast to convert)."""
    (dst / "vae").mkdir(parents=True)
    for f in (fixtures / "checkpoints" / "vae").iterdir():
        shutil.copy(f, dst / "vae" / f.name)
    return dst


# DIFFUSERS-MAPPING rule 2: original attention segment -> diffusers segment.
ATTENTION_RENAMES = {
    ".q_proj.": ".to_q.",
    ".k_proj.": ".to_k.",
    ".v_proj.": ".to_v.",
    ".o_proj.": ".to_out.0.",
    ".q_norm.": ".norm_q.",
    ".k_norm.": ".norm_k.",
}
CONDITION_ENCODER_ARGS = (
    "hidden_size",
    "intermediate_size",
    "text_hidden_dim",
    "timbre_hidden_dim",
    "num_lyric_encoder_hidden_layers",
    "num_timbre_encoder_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rope_theta",
    "rms_norm_eps",
    "sliding_window",
    "layer_types",
)


def rename_segments(key: str, table: dict[str, str]) -> str:
    for a, b in table.items():
        key = key.replace(a, b)
    return key


def diffusers_condition_encoder(config: dict, state: dict, silence_latent):
    """diffusers' AceStepConditionEncoder loaded strictly from an original-layout DiT state dict.

    `silence_latent` is the original channel-first `[1, C, T]` tensor (mapping rule 4).
    """
    import torch
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    ref = AceStepConditionEncoder(**{k: config[k] for k in CONDITION_ENCODER_ARGS}).eval()
    mapped = {
        rename_segments(k[len("encoder.") :], ATTENTION_RENAMES): v
        for k, v in state.items()
        if k.startswith("encoder.")
    }
    mapped["null_condition_emb"] = state["null_condition_emb"]
    ref.silence_latent = torch.as_tensor(silence_latent).transpose(1, 2).contiguous()  # re-registered at its length
    mapped["silence_latent"] = ref.silence_latent
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in mapped.items()}, strict=True)
    return ref


# diffusers module -> original prefix (DIFFUSERS-MAPPING rule 1) and its patch-conv names (rule 3).
DIFFUSERS_PREFIXES = {
    "transformer": "decoder.",
    "condition_encoder": "encoder.",
    "audio_tokenizer": "tokenizer.",
    "audio_token_detokenizer": "detokenizer.",
}
PATCH_RENAMES = {"proj_in_conv.": "proj_in.1.", "proj_out_conv.": "proj_out.1."}


def _init_args(cls, config: dict, encoder_side: bool) -> dict:
    import inspect

    names = set(inspect.signature(cls.__init__).parameters)
    args = {k: v for k, v in config.items() if k in names}
    if encoder_side:  # XL: the encoder-side modules have their own widths (absent on 2B)
        for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
            if config.get(f"encoder_{k}") is not None:
                args[k] = config[f"encoder_{k}"]
    return args


def diffusers_dit_checkpoint(config: dict, folder, seed: int = 0, silence_frames: int = 900) -> dict:
    """Random diffusers ACE-Step modules for `config`, written to `folder` as an original-layout DiT checkpoint.

    Returns the four diffusers modules (eval mode) and the silence latent tensor `[1, T, C]`.
    """
    import json

    import torch
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    classes = {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer,
    }
    modules, state = {}, {}
    for name, cls in classes.items():
        module = cls(**_init_args(cls, config, encoder_side=name != "transformer")).eval()
        with torch.no_grad():
            for key, p in module.named_parameters():
                if (
                    key.endswith("norm.weight")
                    or "norm_" in key
                    or "layernorm" in key
                    or key.endswith(("norm_q.weight", "norm_k.weight"))
                ):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.add_(0.02 * torch.randn_like(p))
        modules[name] = module
        for key, value in module.state_dict().items():
            if key == "silence_latent":
                continue
            key = rename_segments(rename_segments(key, {b: a for a, b in ATTENTION_RENAMES.items()}), PATCH_RENAMES)
            state[key if key == "null_condition_emb" else DIFFUSERS_PREFIXES[name] + key] = value.contiguous()
    silence = torch.randn(1, silence_frames, config["timbre_hidden_dim"])
    with torch.no_grad():
        modules["condition_encoder"].silence_latent = silence
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    # Every field the modules were built with, as a real config.json lists them (the defaults of the given ones too).
    full = dict(config)
    for module in modules.values():
        full.update(
            {k: v for k, v in dict(module.config).items() if not k.startswith("_") and k not in full and v is not None}
        )
    (folder / "config.json").write_text(json.dumps({**full, "model_type": "acestep"}))
    torch.save(silence.transpose(1, 2).contiguous(), folder / "silence_latent.pt")  # channel-first, as shipped
    return {**modules, "silence_latent": silence}
