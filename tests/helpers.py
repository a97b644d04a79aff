"""Small shared helpers for tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


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
ATTENTION_RENAMES = {".q_proj.": ".to_q.", ".k_proj.": ".to_k.", ".v_proj.": ".to_v.", ".o_proj.": ".to_out.0.",
                     ".q_norm.": ".norm_q.", ".k_norm.": ".norm_k."}
CONDITION_ENCODER_ARGS = ("hidden_size", "intermediate_size", "text_hidden_dim", "timbre_hidden_dim",
                          "num_lyric_encoder_hidden_layers", "num_timbre_encoder_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "sliding_window", "layer_types")


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
    mapped = {rename_segments(k[len("encoder."):], ATTENTION_RENAMES): v for k, v in state.items() if k.startswith("encoder.")}
    mapped["null_condition_emb"] = state["null_condition_emb"]
    ref.silence_latent = torch.as_tensor(silence_latent).transpose(1, 2).contiguous()  # re-registered at its length
    mapped["silence_latent"] = ref.silence_latent
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in mapped.items()}, strict=True)
    return ref
