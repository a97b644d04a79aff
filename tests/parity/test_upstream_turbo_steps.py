"""Turbo's variable schedule against upstream's own turbo `generate_audio(infer_steps=N)` at 6d467e4 (since April
2026 upstream honours the steps on turbo: `1 - i/N` shifted by the exact shift, no snapping;
modeling_acestep_v15_turbo.py:1966-1979). DCW off, the noise injected."""

import pytest
from upstream import TurboRun, cases, check, load

from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.sampler import TurboSettings

RUNS = cases("acestep-v15-turbo:steps")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_turbo_steps_match_upstreams_generate_audio(name, converted, load_converted, formulation):
    inputs, outputs, args = load(RUNS[name])
    run = TurboRun(inputs, converted, load_converted)
    ours = run(TurboSettings(shift=args["shift"], steps=args["steps"]))
    check(name, ours, outputs["target_latents"], plain=run(TurboSettings(shift=args["shift"])), label=formulation)


def test_eight_steps_at_a_table_shift_is_the_table():
    """What upstream's handler runs by default (it always passes its 8 steps) is the February table, exactly."""
    for shift in (1.0, 2.0, 3.0):
        assert FlowMatching.turbo(shift, steps=8).times == FlowMatching.turbo(shift).times
    assert FlowMatching.turbo(2.5, steps=8).times != FlowMatching.turbo(2.5).times  # the exact shift, not 3
