"""Half-precision VAE: error against our float32 path on the fixture shapes, as SNR.

The floor is the reference's own error in that precision on the same inputs (diffusers' AutoencoderOobleck
loaded in bfloat16 / float16 against itself in float32) less 3 dB: ours may be at most twice the reference's
error power. Measured (ours / reference) on the visible fixture set: bfloat16 ~36-37 dB, float16 ~54 dB.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import copy_vae_root, require, snr_db
from parity import load_cases

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.loading import load_component
from mlx_acestep.safetensors_io import read_safetensors

DTYPES = ("bfloat16", "float16")
MARGIN_DB = 3.0


def reference_snr(fixtures, dtype, z, x) -> dict[str, float]:
    """diffusers' own half-precision SNR for decode and encode mean on the same inputs."""
    torch = require("torch")
    diffusers = require("diffusers")
    runs = {}
    for label in ("float32", dtype):
        vae = diffusers.AutoencoderOobleck.from_pretrained(
            str(fixtures / "checkpoints" / "vae"), torch_dtype=getattr(torch, label)
        ).eval()
        with torch.no_grad():
            zt = torch.from_numpy(np.array(z)).transpose(1, 2).to(vae.dtype)
            xt = torch.from_numpy(np.array(x)).transpose(1, 2).to(vae.dtype)
            runs[label] = (vae.decode(zt).sample.float().numpy(), vae.encode(xt).latent_dist.mean.float().numpy())
    return {what: snr_db(runs[dtype][i], runs["float32"][i]) for i, what in enumerate(("decode", "encode mean"))}


@pytest.fixture(scope="module")
def vae_inputs(fixtures):
    cases = load_cases(fixtures)
    dec = next(c for c in cases.values() if c["component"] == "vae" and set(c["inputs"]) == {"latents"})
    enc = next(c for c in cases.values() if c["component"] == "vae" and set(c["inputs"]) == {"audio"})
    z = np.array(read_safetensors(fixtures / dec["file"])["in.latents"]).transpose(0, 2, 1)
    x = np.array(read_safetensors(fixtures / enc["file"])["in.audio"]).transpose(0, 2, 1)
    # Half-precision matmuls have no BLAS path on the CPU: keep the shapes small.
    return mx.array(z[:1, :8]), mx.array(x[:1, : 8 * 1920])


@pytest.fixture(scope="module")
def src_root(fixtures, tmp_path_factory):
    return copy_vae_root(fixtures, tmp_path_factory.mktemp("dtypes") / "src")


def run(root, dst, dtype, z, x):
    convert_checkpoints(root, dst, ConvertOptions(dtype=dtype))
    vae = load_component(dst / "vae")
    assert vae.dtype == getattr(mx, dtype)
    mean, _ = vae.encode_moments(x)
    return np.array(vae.decode(z)), np.array(mean)


@pytest.mark.live
@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_snr(dtype, vae_inputs, src_root, fixtures, tmp_path):
    z, x = vae_inputs
    ref_wave, ref_mean = run(src_root, tmp_path / "f32", "float32", z, x)
    wave, mean = run(src_root, tmp_path / dtype, dtype, z, x)
    assert wave.dtype == np.float32 and np.isfinite(wave).all() and np.isfinite(mean).all()
    theirs = reference_snr(fixtures, dtype, z, x)
    for what, ours, ref in (("decode", wave, ref_wave), ("encode mean", mean, ref_mean)):
        snr, floor = snr_db(ours, ref), theirs[what] - MARGIN_DB
        PARITY_ERRORS.append((f"vae {dtype} SNR dB", what, snr, floor))  # reported in the summary
        assert snr >= floor, (
            f"{dtype} {what}: SNR {snr:.1f} dB < {floor:.1f} dB (the reference's {theirs[what]:.1f} dB - 3)"
        )


@pytest.mark.parametrize("plain", [False, True], ids=["cpu-kernels", "plain"])
def test_float16_snake_survives_betas_below_minus_11(plain):
    """1 / exp(beta) overflows float16 for beta below about -11 (exp(12) = 162755 > 65504) while sin(a x)^2 / b
    is still an ordinary value; the float16 Snake must then match the float32 one (the reference's half path
    computes the reciprocal in float16 and returns inf). Both the CPU kernel and the plain formulation."""
    from mlx_acestep import kernels
    from mlx_acestep.kernels.oobleck import snake as cpu_snake
    from mlx_acestep.models.vae.oobleck import Snake1d

    snake = Snake1d(4)
    snake.alpha = mx.array([0.0, 0.5, -0.5, 0.0])
    snake.beta = mx.array([-12.0, -14.0, -11.5, 0.0])
    x = mx.array(np.linspace(-0.01, 0.01, 64 * 4, dtype=np.float32).reshape(1, 64, 4))  # sin(a x)^2 / b up to ~1e2
    want = np.array(snake(x))
    assert np.isfinite(want).all() and np.abs(want).max() > 65504 * 1e-4
    with kernels.use_plain(plain):
        got = np.array(
            (snake(x.astype(mx.float16)) if plain else cpu_snake(snake, [x.astype(mx.float16)])[0]).astype(mx.float32)
        )
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3)  # float16 rounding of input and output
