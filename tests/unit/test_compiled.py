"""Every compiled path against its eager formulation (`mlx_acestep.compiling`), and the switch that picks one.

APG, CFG, the sampler update and the VAE window are equal bit for bit on MLX's CPU backend (the fused kernels do
the same float operations in the same order), so those tests assert exact equality. ADG's sin / cos / arctan2 are
a fused kernel's scalar functions against eager's vectorised ones: an element now and then differs in its last
bit (measured at most 2.0e-7 of the largest value, over 30 seeds, float32 and bfloat16 inputs).
"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep import compiling
from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.guidance import ADG, APG, CFG, adg, apg, cfg
from mlx_acestep.errors import AceStepError
from mlx_acestep.models.vae.windows import compiled_window


def _draws(n, shape, seed=0, dtype=mx.float32):
    rng = np.random.default_rng(seed)
    return [mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype) for _ in range(n)]


def _both(run):
    """`run()` eager, then compiled, each as numpy (float32)."""
    out = []
    for on in (False, True):
        with compiling.use_compiled(on):
            result = run()
            out.append([np.array(a.astype(mx.float32)) for a in (result if isinstance(result, tuple) else (result,))])
    return out


def _assert_equal(eager, compiled):
    assert len(eager) == len(compiled)
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(c, e)


ADG_TOLERANCE = 1e-6  # of the largest value: 5x the measured last-bit differences (module docstring)


def _assert_close(eager, compiled, tolerance=ADG_TOLERANCE):
    assert len(eager) == len(compiled)
    for e, c in zip(eager, compiled):
        assert np.abs(c - e).max() <= tolerance * np.abs(e).max()


# --- guidance and the sampler update ------------------------------------------------------------------------


def test_compiled_apg_carries_momentum_over_steps():
    draws = _draws(12, (2, 30, 8))

    def run():
        rule, outs = APG(4.3), []
        for k in range(6):
            outs.append(rule(None, draws[2 * k], draws[2 * k + 1], 1.0 - k / 6))
        return (*outs, rule.buffer.running)

    eager, compiled = _both(run)
    _assert_equal(eager, compiled)
    # the momentum moved: the last step differs from a run without the buffer
    no_momentum = np.array(apg(draws[10], draws[11], 4.3, None))
    assert not np.allclose(eager[5], no_momentum)


@pytest.mark.parametrize("threshold", [2.5, 0.0])
def test_compiled_apg_without_buffer(threshold):
    v_c, v_u = _draws(2, (1, 40, 8), seed=1)
    _assert_equal(*_both(lambda: apg(v_c, v_u, 6.0, None, threshold, eta=0.5)))


def test_compiled_cfg():
    v_c, v_u = _draws(2, (2, 30, 8), seed=2)
    eager, compiled = _both(lambda: CFG(7.0)(None, v_c, v_u, 0.5))
    _assert_equal(eager, compiled)
    np.testing.assert_allclose(eager[0], np.array(v_u) + 7.0 * (np.array(v_c) - np.array(v_u)), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_compiled_adg_over_times_and_its_fallback_at_zero(dtype):
    x, v_c, v_u = _draws(3, (2, 30, 8), seed=3, dtype=dtype)
    near = v_c + 0.01 * v_u  # nearly parallel estimates: the small-angle branch (sin theta <= 1e-3)
    for t in (1.0, 0.5, 0.02, 1e-4):
        _assert_close(*_both(lambda: adg(x, v_c, v_u, t, 4.3)))
        _assert_close(*_both(lambda: adg(x, v_c, near, t, 4.3)))
    wide_c, wide_u = v_c.astype(mx.float32), v_u.astype(mx.float32)
    eager, compiled = _both(lambda: ADG(4.3).corrector(x, wide_c, wide_u, 0.0))  # t = 0: plain CFG
    _assert_equal(eager, compiled)
    np.testing.assert_array_equal(eager[0], np.array(cfg(wide_c, wide_u, 4.3)))


@pytest.mark.parametrize("method", ["ode", "sde"])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_compiled_sampler_update(method, dtype):
    flow = FlowMatching.shifted(6, 3.0, method=method)
    draws = _draws(18, (1, 25, 8), seed=4, dtype=dtype)

    def run():
        x, outs = draws[0], []
        for k in range(flow.steps):
            x = flow.step(x, draws[3 * k + 1], k, lambda k: draws[3 * k + 2])
            outs.append(x)
        return tuple(outs)

    _assert_equal(*_both(run))


@pytest.mark.parametrize("switch", ["on", "off"])
def test_compile_switch_in_the_environment(monkeypatch, switch):
    """`off` runs the Python rule at every call; `on` traces it once for the shape, the per-step t an input (a
    closed-over t would give every step the first one's result)."""
    calls = []
    arctan2 = mx.arctan2

    def counted(*args, **kwargs):
        calls.append(1)
        return arctan2(*args, **kwargs)

    monkeypatch.setenv(compiling.ENV, switch)
    monkeypatch.setattr(mx, "arctan2", counted)
    shape = (1, 7, 5) if switch == "on" else (1, 6, 5)  # a shape no other test traced
    x, v_c, v_u = _draws(3, shape, seed=5)
    times = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1)
    outs = [np.array(adg(x, v_c, v_u, t, 4.3)) for t in times]
    # MLX (0.32) traces the first function compiled in a process twice, at its first and second calls
    assert len(calls) <= 2 if switch == "on" else len(calls) == len(times)
    monkeypatch.setattr(mx, "arctan2", arctan2)
    with compiling.use_compiled(False):
        _assert_close([np.array(adg(x, v_c, v_u, t, 4.3)) for t in times], outs)


# --- the VAE window -----------------------------------------------------------------------------------------


def test_compiled_vae_window(load_converted, formulation):
    """On the CPU fast path (its side stream, its evaluation points dropped inside the trace) and on the plain
    formulation Metal runs; 40-frame windows are past the size where the fast path splits over two streams."""
    vae = load_converted("vae")
    z = mx.array(np.random.default_rng(6).standard_normal((1, 56, 64)).astype(np.float32))
    eager, compiled = _both(lambda: vae.decode_chunked(z, chunk=40, overlap=8))
    _assert_equal(eager, compiled)
    with compiling.use_compiled(False):
        assert compiled_window(vae) == vae.decode
    with compiling.use_compiled(True):
        assert compiled_window(vae) != vae.decode


def test_compiled_vae_encode_window(load_converted, formulation):
    vae = load_converted("vae")
    frames = 3 if formulation else 24  # the plain encoder is slow on a CPU; 24 frames split over two streams
    x = mx.array((0.3 * np.random.default_rng(7).standard_normal((1, frames * 1920 + 77, 2))).astype(np.float32))
    _assert_equal(*_both(lambda: vae.encode_moments_chunked(x, chunk=16, overlap=4)))


def test_an_error_inside_a_compiled_window_leaves_the_vae_whole(converted):
    """MLX leaves a trace's placeholders in the module's weights when the traced function raises."""
    from mlx_acestep.loading import load_component

    vae = load_component(converted / "vae", "vae", parts=("decoder",))
    z = mx.array(np.random.default_rng(8).standard_normal((1, 5, 64)).astype(np.float32))
    expected = np.array(vae.decode(z))
    with compiling.use_compiled(True):
        with pytest.raises(AceStepError, match="decoder-only"):
            vae.encode_moments_chunked(mx.zeros((1, 4 * 1920, 2)))
        np.testing.assert_array_equal(np.array(vae.decode_chunked(z)), expected)
