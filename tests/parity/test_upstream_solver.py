"""Heun, the velocity norm clamp and the velocity EMA against upstream's own turbo `generate_audio` at 6d467e4
(`scripts/make_upstream_fixtures.py`): each alone and all together, DCW off, the noise injected."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import rel_err

from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.sampler import TurboSettings, sample_turbo
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_silence_latent

ROOT = Path(__file__).parent.parent / "fixtures" / "upstream"
RUNS = {
    k: v
    for k, v in json.loads((ROOT / "cases.json").read_text())["cases"].items()
    if v["component"] == "acestep-v15-turbo:solver"
}
TOLERANCE = 1e-4  # as the February sampler cases; measured 4.8e-7 to 1.5e-6


def settings_of(args: dict) -> TurboSettings:
    return TurboSettings(
        shift=args["shift"],
        solver=args.get("sampler_mode", "euler"),
        velocity_norm_threshold=args.get("velocity_norm_threshold", 0.0),
        velocity_ema_factor=args.get("velocity_ema_factor", 0.0),
    )


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_solver_options_match_upstreams_generate_audio(name, converted, load_converted):
    from parity import CONDITION_INPUTS, _mx
    from safetensors.numpy import load_file

    case = RUNS[name]
    tensors, args = load_file(str(ROOT / case["file"])), case["args"]
    inp = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    model = load_converted("acestep-v15-turbo")
    prepared = model.prepare_condition(
        *_mx(inp, *CONDITION_INPUTS), load_silence_latent(converted / "acestep-v15-turbo")
    )
    condition = (prepared.encoder_hidden_states, prepared.context_latents)

    def run(settings):
        return np.array(sample_turbo(model.decoder, *condition, settings, noise=mx.array(inp["noise"])))

    err = rel_err(run(settings_of(args)), tensors["out.target_latents"])
    PARITY_ERRORS.append((f"upstream {name}", "target_latents", err, TOLERANCE))
    assert err <= TOLERANCE, err
    assert rel_err(run(TurboSettings(shift=args["shift"])), tensors["out.target_latents"]) > 30 * TOLERANCE


def test_heun_is_for_the_ode_and_unknown_samplers_are_refused():
    with pytest.raises(AceStepError, match="the heun sampler runs the ODE only"):
        FlowMatching(FlowMatching.turbo().times, "sde", solver="heun")
    with pytest.raises(AceStepError, match=r"unknown sampler 'rk4' \(choose euler or heun\)"):
        FlowMatching(FlowMatching.turbo().times, solver="rk4")
