"""The diffusion core on its own, with fake velocities in place of a DiT: the schedules, the step rules, the
loop's corrections and guidance objects. (The parity cases run the same core against the reference's goldens.)"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.diffusion.flow import FlowMatching, StepNoise, interpolate
from mlx_acestep.diffusion.guidance import APG, CFG, NoGuidance, make_guidance
from mlx_acestep.diffusion.loop import denoise
from mlx_acestep.errors import AceStepError

SHAPE = (2, 9, 4)


def exact_velocity(x0):
    """The velocity of the straight path from x0: v = (x_t - x0) / t, what a perfect DiT predicts."""
    return lambda x, t, k, previous=None: ((x - x0) / t,) * 2


@pytest.mark.parametrize(
    "flow",
    [FlowMatching.turbo(3.0), FlowMatching.turbo(1.0), FlowMatching.shifted(7, 3.0), FlowMatching.shifted(1)],
    ids=["turbo-3", "turbo-1", "base-7-shift-3", "base-1"],
)
def test_a_perfect_velocity_lands_on_the_clean_latents_on_every_schedule(flow):
    x0 = mx.random.normal(SHAPE, key=mx.random.key(1))
    steps = list(denoise(exact_velocity(x0), flow, StepNoise(SHAPE, mx.float32, flow.steps, mx.random.key(2))))
    assert [s.k for s in steps] == list(range(flow.steps)) and flow.times[-1] == 0
    np.testing.assert_allclose(np.array(steps[-1].x), np.array(x0), atol=1e-5)


def test_the_turbo_table_ends_at_zero_and_its_sde_draws_one_noise_per_step_but_the_last():
    flow = FlowMatching.turbo(3.0, method="sde")
    assert flow.times[:3] == pytest.approx((1.0, 0.954545, 0.9), abs=1e-6) and len(flow.times) == 9
    assert flow.draws == 7
    drawn = []

    def fresh(k):
        drawn.append(k)
        return mx.zeros(SHAPE)

    x = mx.ones(SHAPE)
    for k in range(flow.steps):
        x = flow.step(x, mx.zeros(SHAPE), k, fresh)
    assert drawn == list(range(7))
    # re-noised with zero noise and zero velocity: x0 = x each step, then (1 - t') x0 at the next time
    t = flow.times
    expected = np.prod([1 - t[k + 1] for k in range(7)])
    np.testing.assert_allclose(np.array(x), expected, rtol=1e-6)


def test_base_sde_renoises_to_one_minus_k_over_n_whatever_the_shift():
    flow = FlowMatching.shifted(4, shift=3.0, method="sde")
    assert flow.renoise_to == pytest.approx((0.75, 0.5, 0.25, 0.0))
    assert flow.times[1] != pytest.approx(0.75)  # the schedule itself is shifted


def test_an_unknown_method_is_refused_once_where_the_flow_is_made():
    with pytest.raises(AceStepError, match="unknown sampling method 'heun' \\(choose ode or sde\\)"):
        FlowMatching.turbo(method="heun")


def test_corrections_run_after_every_step_with_the_next_time_and_finish_at_the_end():
    seen = []

    class Record:
        def after_step(self, step):
            seen.append((step.k, step.t_next))
            # the step's clean estimate is what the step moved toward: x0 exactly, for a perfect velocity
            np.testing.assert_allclose(np.array(step.denoised), np.array(x0), atol=1e-5)
            return step.x

        def finish(self, x):
            seen.append("finish")
            return x * 0

    flow = FlowMatching.shifted(3)
    x0 = mx.ones(SHAPE)
    last = list(denoise(exact_velocity(x0), flow, StepNoise(SHAPE, mx.float32, 3), (Record(),)))[-1]
    assert seen == [(0, flow.times[1]), (1, flow.times[2]), (2, 0.0), "finish"]
    assert float(mx.abs(last.x).max()) == 0  # what finish returned is the run's result


def test_the_noise_interpolation_is_the_flow_convention():
    x0, noise = mx.array([2.0]), mx.array([-1.0])
    assert interpolate(x0, noise, 1.0).item() == -1.0 and interpolate(x0, noise, 0.0).item() == 2.0
    assert interpolate(x0, noise, 0.25).item() == pytest.approx(0.25 * -1 + 0.75 * 2)


def test_guidance_objects():
    assert isinstance(make_guidance("apg", 1.0), NoGuidance)  # a scale of 1 or less guides nothing
    g = make_guidance("cfg", 3.0, interval=(0.2, 0.8))
    assert isinstance(g, CFG) and g.active(0.5) and not g.active(0.9) and not g.active(0.1)
    cond, uncond = mx.array([[[1.0]]]), mx.array([[[0.5]]])
    assert g(None, cond, uncond, 0.5).item() == pytest.approx(0.5 + 3 * 0.5)
    a, b = make_guidance("apg", 2.0), make_guidance("apg", 2.0)
    assert isinstance(a, APG) and a.buffer is not b.buffer  # momentum is per run
    with pytest.raises(AceStepError, match="unknown guidance 'pag' \\(choose apg, adg or cfg\\)"):
        make_guidance("pag", 2.0)


def test_injected_noise_of_the_wrong_shape_is_refused():
    with pytest.raises(AceStepError, match="noise has shape \\(1, 2\\), expected \\(2, 9, 4\\)"):
        StepNoise(SHAPE, mx.float32, 3, noise=mx.zeros((1, 2)))


def test_dcw_runs_after_each_step_on_the_step_and_its_clean_estimate_before_the_other_corrections():
    from mlx_acestep.diffusion.dcw import DCW

    flow, dcw = FlowMatching.shifted(3), DCW("pix", scaler=0.5)
    x0 = mx.random.normal(SHAPE, key=mx.random.key(3))
    wobble = lambda x, t, k, previous=None: ((x - x0) / t + 0.1 * x,) * 2  # noqa: E731  (not a perfect velocity: x0 is off)
    seen = []

    class Record:
        def after_step(self, step):
            seen.append(np.array(step.x))
            return step.x

        def finish(self, x):
            return x

    steps = list(denoise(wobble, flow, StepNoise(SHAPE, mx.float32, 3, mx.random.key(4)), (dcw, Record())))
    for step, after_dcw in zip(steps, seen):
        moved = flow.step(step.x_in, step.v, step.k, None)
        want = moved + 0.5 * (moved - (step.x_in - step.v * step.t))
        np.testing.assert_allclose(after_dcw, np.array(want), atol=1e-5)


def test_repaint_injection_noises_the_source_to_the_time_the_latent_holds():
    """Upstream injects at `t_after_step` (modeling_acestep_v15_base.py:2098-2108, 2180-2184): the next time under the
    ODE, and under the base SDE its re-noise time 1 - (k+1)/N, which a shifted schedule's next time is not."""
    from mlx_acestep.diffusion.edits import EditHooks
    from mlx_acestep.diffusion.flow import interpolate

    source, seen = mx.full(SHAPE, 2.0), []
    keep = mx.ones((*SHAPE[:2], 1))  # everything outside the region: the injection replaces it all

    class Record:
        def after_step(self, step):
            seen.append(step)
            return step.x

        def finish(self, x):
            return x

    for method in ("sde", "ode"):
        seen.clear()
        flow = FlowMatching.shifted(4, 3.0, method=method)
        hooks = EditHooks(source=source, keep=keep, inject_fraction=1.0)
        steps = list(denoise(exact_velocity(mx.ones(SHAPE)), flow, StepNoise(SHAPE, mx.float32, 4), (Record(),)))
        want = flow.renoise_to if method == "sde" else flow.times[1:]
        for step, t in zip(steps, want):
            injected = hooks.after_step(step)
            np.testing.assert_allclose(np.array(injected), np.array(interpolate(source, step.noise, t)), atol=1e-6)
    assert FlowMatching.shifted(4, 3.0, method="sde").renoise_to[0] != FlowMatching.shifted(4, 3.0).times[1]
