"""The samplers written from the spec (5.6, 5.7) in torch, around diffusers' `AceStepTransformer1DModel`.

diffusers' pipeline runs only the ODE with APG, so the other paths (plain CFG, the base/SFT SDE, ADG) and the
reference's reduced-precision runs have no live reference there. This is that reference: the loop and the
guidance formulas are transcribed from the spec's text, not from our sampler, and the velocity comes from
diffusers' transformer (the reference's DiT). Noise is injected; the schedule is created in the model dtype,
as the reference creates it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def reference_transformer(fixtures: Path, variant: str, dtype=None):
    """(diffusers transformer, null_condition_emb) of a fixture checkpoint, float32 unless `dtype`."""
    import torch
    from test_convert_diffusers import diffusers_modules

    folder = Path(fixtures) / "checkpoints" / f"acestep-v15-{variant}"
    config = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    silence = load_file(str(folder / "silence_latent.safetensors"))["silence_latent"]
    modules = diffusers_modules(config, state, silence)
    transformer = modules["transformer"].to(dtype or torch.float32)
    return transformer, torch.from_numpy(state["null_condition_emb"]).to(dtype or torch.float32)


def _schedule(values, dtype) -> list[float]:
    import torch

    return torch.tensor(values, dtype=torch.float64).to(dtype).tolist()  # what the reference's t.item() returns


def turbo_table(shift: int) -> list[float]:
    """Spec 5.6: table value k = s·τ/(1+(s−1)·τ), τ = 1 − k/8."""
    return [shift * (1 - k / 8) / (1 + (shift - 1) * (1 - k / 8)) for k in range(8)]


def base_table(steps: int, shift: float, dtype) -> list[float]:
    """Spec 5.7: linspace(1, 0, N+1) in the model dtype, then s·t/(1+(s−1)·t) in that dtype."""
    import torch

    t = torch.linspace(1, 0, steps + 1, dtype=dtype)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t.tolist()


def _velocity(transformer, x, t: float, states, context):
    import torch

    tt = torch.full((x.shape[0],), t, dtype=x.dtype)
    with torch.no_grad():
        return transformer(
            hidden_states=x,
            timestep=tt,
            timestep_r=tt,
            encoder_hidden_states=states,
            context_latents=context,
            return_dict=False,
        )[0]


def turbo(transformer, states, context, noise, shift=3, method="ode", renoise=None, schedule_dtype=None):
    """Spec 5.6; returns x0 as float32 numpy."""
    import torch

    dtype = next(transformer.parameters()).dtype
    times = _schedule(turbo_table(shift), schedule_dtype or dtype)
    x = torch.from_numpy(np.asarray(noise, np.float32)).to(dtype)
    states, context = _t(states, dtype), _t(context, dtype)
    for k, t in enumerate(times):
        v = _velocity(transformer, x, t, states, context)
        if k == len(times) - 1:
            x = x - t * v
        elif method == "ode":
            x = x - v * (t - times[k + 1])
        else:
            t_next = times[k + 1]
            x = t_next * _t(renoise[k], dtype) + (1 - t_next) * (x - t * v)
    return x.float().numpy()


def _apg(v_c, v_u, g, run, threshold=2.5, momentum=-0.75):
    """Spec 5.7 APG on [B, T, C], norms over time (axis 1), projection in float64; `run` is the momentum state."""
    import torch

    d = v_c - v_u
    run[0] = d + momentum * run[0]
    d = run[0]
    norm = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    d = d * torch.clamp(threshold / norm, max=1.0)
    v64, d64 = v_c.double(), d.double()
    u = v64 / torch.clamp(torch.linalg.vector_norm(v64, dim=1, keepdim=True), min=1e-12)
    d_par = (d64 * u).sum(dim=1, keepdim=True) * u
    d_orth = (d64 - d_par).to(v_c.dtype)
    return v_c + (g - 1) * d_orth


def _adg(x, v_c, v_u, t, g, clip=3.14 / 6):
    """Spec 5.7 ADG, per latent frame over the channels, angles in float64."""
    import torch

    w = max(g - 1, 0) + 1e-3
    x0_c, x0_u = (x - t * v_c).double(), (x - t * v_u).double()
    cos = (x0_c * x0_u).sum(-1, keepdim=True) / (x0_c.norm(dim=-1, keepdim=True) * x0_u.norm(dim=-1, keepdim=True))
    theta = torch.arccos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    theta_new = torch.clamp(w * theta, -clip, clip)
    unit_u = x0_u / x0_u.norm(dim=-1, keepdim=True)
    diff = x0_c - x0_u
    perp = diff - (diff * unit_u).sum(-1, keepdim=True) * unit_u
    sin = torch.sin(theta)
    perp_new = torch.where(sin > 1e-3, perp * torch.sin(theta_new) / sin, perp * w)
    x0_new = torch.cos(theta_new) * x0_c + perp_new
    return ((x.double() - x0_new) / t).to(x.dtype)


def base(
    transformer,
    null_emb,
    states,
    context,
    noise,
    steps,
    shift,
    guidance_scale,
    guidance="apg",
    method="ode",
    renoise=None,
    schedule_dtype=None,
    cfg_interval=(0.0, 1.0),
):
    """Spec 5.7: CFG doubling with null_condition_emb broadcast over the condition; returns x0 (float32 numpy)."""
    import torch

    dtype = next(transformer.parameters()).dtype
    times = base_table(steps, shift, schedule_dtype or dtype)
    x = torch.from_numpy(np.asarray(noise, np.float32)).to(dtype)
    states, context = _t(states, dtype), _t(context, dtype)
    b = x.shape[0]
    both_states = torch.cat([states, null_emb.to(dtype).expand_as(states)])
    both_context = torch.cat([context, context])
    run = [torch.zeros_like(x)]
    for k in range(steps):
        t, t_next = times[k], times[k + 1]
        if guidance_scale > 1 and cfg_interval[0] <= t <= cfg_interval[1]:
            v_both = _velocity(transformer, torch.cat([x, x]), t, both_states, both_context)
            v_c, v_u = v_both[:b], v_both[b:]
            if guidance == "apg":
                v = _apg(v_c, v_u, guidance_scale, run)
            elif guidance == "adg":
                v = _adg(x, v_c, v_u, t, guidance_scale)
            else:  # plain CFG
                v = v_u + guidance_scale * (v_c - v_u)
        else:
            v = _velocity(transformer, x, t, states, context)
        if method == "ode":
            x = x - v * (t - t_next)
        else:  # the reference's SDE re-noises to 1 − (k+1)/N, ignoring the shift
            t_to = 1 - (k + 1) / steps
            x = t_to * _t(renoise[k], dtype) + (1 - t_to) * (x - t * v)
    return x.float().numpy()


def _t(a, dtype):
    import torch

    return (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))).to(
        dtype
    )
