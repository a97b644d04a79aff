"""Golden flow-edit runs from upstream's own `flowedit_generate_audio` (`acestep/models/common/flow_edit_pipeline.py`,
the loop in `flow_edit.py`) on the tiny fixture turbo and base checkpoints.

The source condition is the February fixture case's (`turbo_generate_ode`, whose inputs `base_generate_apg` shares),
its `src_latents` the context; the target swaps in other caption and lyric states; the song being edited is a seeded
draw. Upstream's per-step forward noise (`draw_fwd_noise`) is replaced by seeded draws, stored as `in.fwd_noise` in
the order the loop takes them, so our run can take the same ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# 8 steps at shift 3: [1, .955, .9, .833, .75, .643, .5, .3]; n_min 0.25 / n_max 0.75 edit steps 2-5, then 6-7 target
WINDOW = {"edit_n_min": 0.25, "edit_n_max": 0.75}
STABILISED = {"velocity_norm_threshold": 0.4, "velocity_ema_factor": 0.3}
# base: guidance only for t in [0.2, 0.8], so inside the window two steps run unguided and two guided (APG momentum)
GUIDED = {"diffusion_guidance_scale": 7.0, "cfg_interval_start": 0.2, "cfg_interval_end": 0.8}
# turbo: the service always passes its guidance scale, which turbo's flowedit_generate_audio forces to 1 (left out,
# the pipeline's default of 15 would run CFG against the null embedding instead)
TURBO = {"diffusion_guidance_scale": 7.0}
CASES = {
    "turbo": {
        "window_avg1": {**WINDOW, "edit_n_avg": 1, **TURBO},
        "window_avg2": {**WINDOW, "edit_n_avg": 2, **TURBO},
        # no target-only steps after the window
        "whole": {"edit_n_min": 0.0, "edit_n_max": 1.0, "edit_n_avg": 1, **TURBO},
        "clamp_ema": {"edit_n_min": 0.125, "edit_n_max": 0.625, "edit_n_avg": 2, **STABILISED, **TURBO},
    },
    "base": {
        "apg_window_avg2": {**WINDOW, "edit_n_avg": 2, **GUIDED},
        "apg_clamp_ema": {**WINDOW, "edit_n_avg": 2, **GUIDED, **STABILISED},
    },
}


def flow_edit_cases(root: Path, fixtures: Path, reference_model) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch
    from acestep.models.common import flow_edit  # the reference's own loop (on the path reference_model adds)
    from safetensors.numpy import load_file

    case = json.loads((fixtures / "cases.json").read_text())["cases"]["turbo_generate_ode"]
    inputs = {k[3:]: v for k, v in load_file(str(fixtures / case["file"])).items() if k.startswith("in.")}
    rng = np.random.default_rng([2026, 26, 8])
    edited = {
        "song": rng.standard_normal(inputs["src_latents"].shape).astype(np.float32),
        "target_text_hidden_states": rng.standard_normal(inputs["text_hidden_states"].shape).astype(np.float32),
        "target_lyric_hidden_states": rng.standard_normal(inputs["lyric_hidden_states"].shape).astype(np.float32),
    }
    drawn: list[np.ndarray] = []

    def draw(shape, generator, device, dtype):  # upstream's draw_fwd_noise, seeded here and recorded
        drawn.append(rng.standard_normal(tuple(shape)).astype(np.float32))
        return torch.from_numpy(drawn[-1])

    flow_edit.draw_fwd_noise = draw
    cases = {}
    for family, runs in CASES.items():
        model, silence = reference_model(root, fixtures, family)
        if family == "base":
            check_base(model, silence, fixtures)
        given = {k: torch.from_numpy(v) for k, v in inputs.items() if k not in ("noise", "src_latents")}
        for label, options in runs.items():
            drawn.clear()
            with torch.no_grad():
                out = model.flowedit_generate_audio(
                    **given,
                    target_text_hidden_states=torch.from_numpy(edited["target_text_hidden_states"]),
                    target_text_attention_mask=given["text_attention_mask"],
                    target_lyric_hidden_states=torch.from_numpy(edited["target_lyric_hidden_states"]),
                    target_lyric_attention_mask=given["lyric_attention_mask"],
                    src_latents=torch.from_numpy(edited["song"]),
                    ctx_src_latents=torch.from_numpy(inputs["src_latents"]),
                    silence_latent=silence,
                    seed=0,
                    infer_steps=8,
                    shift=3.0,
                    use_progress_bar=False,
                    **options,
                )
            args = {"steps": 8, "shift": 3.0, **options}
            meta = {
                "component": "flow_edit",
                "reference_entry_point": f"AceStepConditionGenerationModel.flowedit_generate_audio(..., {args}) "
                f"[{family} modeling file], draw_fwd_noise replaced by the stored draws",
                "args": {"family": family, **args},
            }
            tensors = {
                **{f"in.{k}": v for k, v in inputs.items() if k != "noise"},
                **{f"in.{k}": v for k, v in edited.items()},
                "in.fwd_noise": np.stack(drawn),
                "out.target_latents": out["target_latents"].numpy(),
            }
            cases[f"flow_edit_{family}_{label}"] = (meta, tensors)
    return cases


def check_base(model, silence, fixtures: Path) -> None:
    """The reference's base sampler reproduces the February case `base_generate_apg`, so a broken setup stops here."""
    import torch
    from safetensors.numpy import load_file

    case = json.loads((fixtures / "cases.json").read_text())["cases"]["base_generate_apg"]
    tensors = load_file(str(fixtures / case["file"]))
    given = {k[3:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("in.")}
    noise = given.pop("noise")
    model.prepare_noise = lambda context, seed: noise
    with torch.no_grad():
        out = model.generate_audio(
            **given,
            silence_latent=silence,
            seed=0,
            infer_steps=8,
            diffusion_guidance_scale=7.0,
            shift=3.0,
            infer_method="ode",
            dcw_enabled=False,
            use_progress_bar=False,
        )["target_latents"].numpy()
    golden = tensors["out.target_latents"]
    if np.abs(out - golden).max() > 1e-5 * np.abs(golden).max():
        raise SystemExit("the reference's base sampler does not reproduce base_generate_apg: check its setup")
