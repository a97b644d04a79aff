"""Half-precision VAE: error against our float32 path on the fixture shapes, as SNR.

The floor is the reference's own error in that precision on the same inputs (diffusers' AutoencoderOobleck
loaded in bfloat16 / float16 against itself in float32) less 3 dB: ours may be at most twice the reference's
error power. Measured (ours / reference) on the visible fixture set: bfloat16 ~36-37 dB, float16 ~54 dB.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import copy_vae_root, drawn_seeds, require, snr_db
from parity import load_cases

from mlx_acestep.convert import ConvertOptions, convert_checkpoints
from mlx_acestep.loading import load_component
from mlx_acestep.safetensors_io import read_safetensors

DTYPES = ("bfloat16", "float16")
MARGIN_DB = 3.0


def reference_runs(fixtures, dtype, z, x) -> dict[str, tuple]:
    """diffusers' (decode, encode mean) in float32 and in `dtype` on the batch of drawn inputs (one call each)."""
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
            wave, mean = vae.decode(zt).sample, vae.encode(xt).latent_dist.mean
            runs[label] = (wave.float().numpy().transpose(0, 2, 1), mean.float().numpy().transpose(0, 2, 1))
    return runs


@pytest.fixture(scope="module")
def vae_shapes(fixtures):
    """The fixture cases' latent and audio, whose scale the drawn inputs take."""
    cases = load_cases(fixtures)
    dec = next(c for c in cases.values() if c["component"] == "vae" and set(c["inputs"]) == {"latents"})
    enc = next(c for c in cases.values() if c["component"] == "vae" and set(c["inputs"]) == {"audio"})
    z = np.array(read_safetensors(fixtures / dec["file"])["in.latents"]).transpose(0, 2, 1)
    x = np.array(read_safetensors(fixtures / enc["file"])["in.audio"]).transpose(0, 2, 1)
    return float(z.std()), float(np.abs(x).max())


FRAMES = 4  # half-precision convolutions have no fast path on the CPU: the shapes stay small


def drawn_inputs(seed, z_std, x_peak):
    """Latents at the fixture's scale and a chord with a little noise at its peak."""
    rng = np.random.default_rng(seed)
    z = (z_std * rng.standard_normal((1, FRAMES, 64))).astype(np.float32)
    t = np.arange(FRAMES * 1920) / 48000
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in rng.uniform(80, 2000, size=3)) / 3
    x = 0.9 * tone[None, :, None] + 0.1 * rng.standard_normal((1, t.size, 2))
    return mx.array(z), mx.array((x_peak * x / np.abs(x).max()).astype(np.float32))


@pytest.fixture(scope="module")
def src_root(fixtures, tmp_path_factory):
    return copy_vae_root(fixtures, tmp_path_factory.mktemp("dtypes") / "src")


def runs_of(root, dst, dtype, z, x) -> tuple:
    convert_checkpoints(root, dst, ConvertOptions(dtype=dtype))
    vae = load_component(dst / "vae")
    assert vae.dtype == getattr(mx, dtype)
    return np.array(vae.decode(z)), np.array(vae.encode_moments(x)[0])


@pytest.mark.live
@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_snr(dtype, vae_shapes, src_root, fixtures, tmp_path):
    seeds = drawn_seeds()
    drawn = [drawn_inputs(seed, *vae_shapes) for seed in seeds]
    z, x = mx.concatenate([d[0] for d in drawn]), mx.concatenate([d[1] for d in drawn])  # one batch, a seed a row
    full = runs_of(src_root, tmp_path / "f32", "float32", z, x)
    half = runs_of(src_root, tmp_path / dtype, dtype, z, x)
    theirs = reference_runs(fixtures, dtype, z, x)
    assert half[0].dtype == np.float32 and all(np.isfinite(a).all() for a in half)
    for i, seed in enumerate(seeds):
        for j, what in enumerate(("decode", "encode mean")):
            ref_snr = snr_db(theirs[dtype][j][i], theirs["float32"][j][i])
            snr, floor = snr_db(half[j][i], full[j][i]), ref_snr - MARGIN_DB
            PARITY_ERRORS.append((f"vae {dtype} {what} SNR dB", f"seed {seed}", snr, floor))
            assert snr >= floor, (
                f"{dtype} {what}, seed {seed}: SNR {snr:.1f} dB < {floor:.1f} dB (the reference's {ref_snr:.1f} dB - 3;"
                " replay with MLX_ACESTEP_HALF_SEEDS)"
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
