"""Heun, the velocity norm clamp and the velocity EMA against upstream's own turbo `generate_audio` at 6d467e4
(`scripts/make_upstream_fixtures.py`): each alone and all together, DCW off, the noise injected."""

import pytest
from upstream import TurboRun, cases, check, load

from mlx_acestep.diffusion.dcw import DCW
from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.sampler import TurboSettings
from mlx_acestep.errors import AceStepError

RUNS = cases("acestep-v15-turbo:solver")


def settings_of(args: dict) -> TurboSettings:
    dcw = DCW("double", args["dcw_scaler"], args["dcw_high_scaler"]) if args.get("dcw_enabled") else None
    return TurboSettings(
        shift=args["shift"],
        dcw=dcw,
        solver=args.get("sampler_mode", "euler"),
        velocity_norm_threshold=args.get("velocity_norm_threshold", 0.0),
        velocity_ema_factor=args.get("velocity_ema_factor", 0.0),
    )


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_solver_options_match_upstreams_generate_audio(name, converted, load_converted, formulation):
    inputs, outputs, args = load(RUNS[name])
    run = TurboRun(inputs, converted, load_converted)
    check(
        name,
        run(settings_of(args)),
        outputs["target_latents"],
        plain=run(TurboSettings(shift=args["shift"])),
        label=formulation,
    )


def test_heun_is_for_the_ode_and_unknown_samplers_are_refused():
    with pytest.raises(AceStepError, match="the heun sampler runs the ODE only"):
        FlowMatching(FlowMatching.turbo().times, "sde", solver="heun")
    with pytest.raises(AceStepError, match=r"unknown sampler 'rk4' \(choose euler or heun\)"):
        FlowMatching(FlowMatching.turbo().times, solver="rk4")
