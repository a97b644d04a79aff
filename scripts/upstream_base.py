"""Golden runs of upstream's base `generate_audio` (`acestep/models/base/modeling_acestep_v15_base.py`; SFT's file
runs the same loop) with the newer sampler options, on the tiny fixture base checkpoint, from the inputs and noise
of the February fixture cases `base_generate_apg` (APG 7, shift 3, two items) and `base_generate_adg` (ADG 4, shift
1, CFG only up to t = 0.7, one item), eight steps, the noise injected. Each February case is reproduced with the
options off first (and DCW off: the signature's default is on), so a broken reference setup stops here."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

# the February cases' own reference calls (their entry points in the fixtures' cases.json)
GUIDED = {
    "apg": ("base_generate_apg", {"diffusion_guidance_scale": 7.0, "use_adg": False, "shift": 3.0}),
    "adg": (
        "base_generate_adg",
        {"diffusion_guidance_scale": 4.0, "use_adg": True, "shift": 1.0, "cfg_interval_end": 0.7},
    ),
}
STEPS = 8
DCW_STRONG = {"dcw_scaler": 0.6, "dcw_high_scaler": 0.4}  # strong enough that a misplaced correction shows
OPTIONS = {  # case -> (guidance, upstream's options)
    "dcw_double": ("apg", {"dcw_enabled": True, "dcw_mode": "double", **DCW_STRONG}),
    "dcw_low": ("adg", {"dcw_enabled": True, "dcw_mode": "low", **DCW_STRONG}),
    # APG's corrector is plain CFG; ADG's is ADG but at t = 0 (CFG), its interval checked at the step's end
    "heun": ("apg", {"sampler_mode": "heun"}),
    "heun_adg": ("adg", {"sampler_mode": "heun"}),
    "clamp": ("apg", {"velocity_norm_threshold": 0.4}),
    "ema": ("apg", {"velocity_ema_factor": 0.3}),
    "heun_clamp_ema": ("apg", {"sampler_mode": "heun", "velocity_norm_threshold": 0.4, "velocity_ema_factor": 0.3}),
    # which velocity DCW's clean estimate takes under Heun
    "heun_dcw": ("apg", {"sampler_mode": "heun", "dcw_enabled": True, "dcw_mode": "double", **DCW_STRONG}),
    "cover_noise_0.4": ("apg", {"cover_noise_strength": 0.4}),
    "retake_0.35": ("apg", {"retake_seed": 1, "retake_variance": 0.35}),
}


def reference_model(root: Path, fixtures: Path, family: str):
    """Upstream's model of `family` (turbo or base) with the fixture checkpoint's weights, and its silence latent
    `[1, T, 64]`."""
    sys.path.insert(0, str(root))
    import torch
    from safetensors.numpy import load_file

    config = importlib.import_module(f"acestep.models.{family}.configuration_acestep_v15").AceStepConfig
    modeling = importlib.import_module(f"acestep.models.{family}.modeling_acestep_v15_{family}")
    folder = fixtures / "checkpoints" / f"acestep-v15-{family}"
    model = modeling.AceStepConditionGenerationModel(config(**json.loads((folder / "config.json").read_text())))
    model = model.eval()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "inv_freq" not in k]:
        raise SystemExit(f"the fixture checkpoint does not fit the reference: {missing[:5]} {unexpected[:5]}")
    silence = torch.from_numpy(load_file(str(folder / "silence_latent.safetensors"))["silence_latent"]).transpose(1, 2)
    return model, silence


def february_case(fixtures: Path, name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A February fixture case's inputs and golden `target_latents`."""
    from safetensors.numpy import load_file

    case = json.loads((fixtures / "cases.json").read_text())["cases"][name]
    tensors = load_file(str(fixtures / case["file"]))
    return {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}, tensors["out.target_latents"]


def check_reproduces(out: np.ndarray, golden: np.ndarray, name: str) -> None:
    if np.abs(out - golden).max() > 1e-5 * np.abs(golden).max():
        raise SystemExit(f"the reference with the new options off does not reproduce {name}: check its setup")


def base_cases(root: Path, fixtures: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch

    model, silence = reference_model(root, fixtures, "base")
    other = {}  # per guidance: the retake's draw (seed 1), as the turbo cases draw it

    def run(guidance: str, **options) -> np.ndarray:
        inputs = february_case(fixtures, GUIDED[guidance][0])[0]
        given = {k: torch.from_numpy(v) for k, v in inputs.items() if k != "noise"}
        noises = {0: inputs["noise"], 1: other[guidance]}
        model.prepare_noise = lambda context, seed: torch.from_numpy(noises[seed])
        with torch.no_grad():
            out = model.generate_audio(
                **given,
                silence_latent=silence,
                seed=0,
                infer_steps=STEPS,
                infer_method="ode",
                use_progress_bar=False,
                **{"dcw_enabled": False, **GUIDED[guidance][1], **options},
            )
        return out["target_latents"].numpy()

    for guidance, (name, _) in GUIDED.items():
        inputs, golden = february_case(fixtures, name)
        other[guidance] = np.random.default_rng([2026, 1]).standard_normal(inputs["noise"].shape).astype(np.float32)
        check_reproduces(run(guidance), golden, name)
    cases = {}
    for label, (guidance, options) in OPTIONS.items():
        inputs = february_case(fixtures, GUIDED[guidance][0])[0]
        args = {"infer_steps": STEPS, "infer_method": "ode", "dcw_enabled": False, **GUIDED[guidance][1], **options}
        tensors = {**{f"in.{k}": v for k, v in inputs.items()}, "out.target_latents": run(guidance, **options)}
        if "retake_seed" in options:
            tensors["in.retake_noise"] = other[guidance]
        meta = {
            "component": "acestep-v15-base:sampler",
            "reference_entry_point": f"generate_audio(..., {args}), noise injected (base modeling file)",
            "args": args,
        }
        cases[f"base_{label}"] = (meta, tensors)
    return cases
