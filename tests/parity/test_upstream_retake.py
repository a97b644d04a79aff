"""Retake against upstream's own turbo `generate_audio` at 6d467e4 (`scripts/make_upstream_fixtures.py`): the
run's noise and the retake's draw injected, mixed at variance 0.35 and 1, DCW off."""

import mlx.core as mx
import numpy as np
import pytest
from upstream import TurboRun, cases, check, load

from mlx_acestep.diffusion.flow import retake
from mlx_acestep.diffusion.sampler import TurboSettings

RUNS = cases("acestep-v15-turbo:retake")


def test_the_mix_keeps_the_song_at_zero_and_becomes_the_other_at_one():
    a, b = mx.array([1.0, -2.0]), mx.array([0.5, 3.0])
    assert np.array_equal(np.array(retake(a, b, 0.0)), np.array(a))
    np.testing.assert_allclose(np.array(retake(a, b, 1.0)), np.array(b), atol=1e-7)
    mixed = np.array(retake(a, b, 0.5))  # variance-preserving: cos^2 + sin^2 = 1
    np.testing.assert_allclose(mixed, (np.array(a) + np.array(b)) / np.sqrt(2), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_retake_matches_upstreams_generate_audio(name, converted, load_converted, formulation):
    inputs, outputs, args = load(RUNS[name])
    run = TurboRun(inputs, converted, load_converted)
    noise = retake(run.noise, mx.array(inputs["retake_noise"]), args["retake_variance"])
    check(name, run(TurboSettings(shift=args["shift"]), noise), outputs["target_latents"], label=formulation)
