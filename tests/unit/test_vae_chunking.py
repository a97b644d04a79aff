"""Overlap-discard planning, and chunked == un-chunked on the fixture VAE."""

import mlx.core as mx
import numpy as np
import pytest
from helpers import rel_err

from mlx_acestep.errors import AceStepError
from mlx_acestep.models.vae.windows import plan_windows


@pytest.mark.parametrize("total,chunk,overlap", [(100, 40, 16), (7, 40, 16), (257, 256, 16), (1000, 10, 8), (31, 5, 0)])
def test_windows_tile_the_whole_length(total, chunk, overlap):
    windows = plan_windows(total, chunk, overlap)
    assert windows[0].core_start == 0 and windows[-1].core_stop == total
    for a, b in zip(windows, windows[1:]):
        assert a.core_stop == b.core_start
    for w in windows:
        assert 0 <= w.start <= w.core_start < w.core_stop <= w.stop <= total
        assert w.stop - w.start <= chunk


def test_overlap_is_halved_until_a_core_remains():
    windows = plan_windows(100, 10, 8)  # 10 - 2*8 < 0 -> overlap 4 -> core 2
    assert all(w.core_stop - w.core_start <= 2 for w in windows)


def test_bad_chunk_is_a_clear_error():
    with pytest.raises(AceStepError, match="chunk"):
        plan_windows(10, 0, 4)


def test_chunked_matches_unchunked(load_converted):
    vae = load_converted("vae")
    rng = np.random.default_rng(0)
    # overlap 12 > the decoder's ~9-frame reach, so the seams are exact
    z = mx.array(rng.standard_normal((2, 48, 64)).astype(np.float32))
    full = np.array(vae.decode(z))
    chunked = np.array(vae.decode_chunked(z, chunk=40, overlap=12))
    assert chunked.shape == full.shape == (2, 48 * 1920, 2)
    assert rel_err(chunked, full) < 1e-5

    x = mx.array((0.3 * rng.standard_normal((1, 48 * 1920 + 500, 2))).astype(np.float32))
    mean, std = vae.encode_moments(x)
    cmean, cstd = vae.encode_moments_chunked(x, chunk=40, overlap=12)
    assert cmean.shape == mean.shape == (1, 48, 64)
    assert rel_err(np.array(cmean), np.array(mean)) < 1e-5
    assert rel_err(np.array(cstd), np.array(std)) < 1e-5


def test_bad_shapes_are_clear_errors(load_converted):
    vae = load_converted("vae")
    with pytest.raises(AceStepError, match=r"latents must be \[batch, frames, 64\]"):
        vae.decode(mx.zeros((1, 64, 10)))
    with pytest.raises(AceStepError, match="too short"):
        vae.encode_moments(mx.zeros((1, 100, 2)))
    with pytest.raises(AceStepError, match="noise has shape"):
        vae.sample(mx.zeros((1, 3, 64)), mx.ones((1, 3, 64)), noise=mx.zeros((1, 4, 64)))


def test_decoder_only_vae(converted):
    from mlx_acestep.loading import load_component

    vae = load_component(converted / "vae", "vae", parts=("decoder",))
    assert "encoder" not in vae
    z = mx.zeros((1, 3, 64))
    assert vae.decode(z).shape == (1, 3 * 1920, 2)
    with pytest.raises(AceStepError, match="decoder-only"):
        vae.encode_moments(mx.zeros((1, 1920, 2)))


def test_plain_path_used_on_metal_matches_the_cpu_path(load_converted):
    """Metal runs MLX's own convolutions and sin-based Snake; here that formulation runs on the CPU."""
    from mlx_acestep import kernels

    vae = load_converted("vae")
    rng = np.random.default_rng(3)
    z = mx.array(rng.standard_normal((1, 20, 64)).astype(np.float32))
    x = mx.array((0.3 * rng.standard_normal((1, 2 * 1920 + 77, 2))).astype(np.float32))  # the plain CPU path is slow
    fast = np.array(vae.decode(z)), np.array(vae.encode_moments(x)[0])
    with kernels.use_plain():
        plain = np.array(vae.decode(z)), np.array(vae.encode_moments(x)[0])
    assert rel_err(fast[0], plain[0]) < 1e-5
    assert rel_err(fast[1], plain[1]) < 1e-5
