"""Live parity against diffusers' AutoencoderOobleck on a random tiny config.

The config differs from the fixture's (other widths, three strides) and the
weights are random with weight-norm gains != ||v|| and non-trivial Snake
parameters. Two lengths: a short one decoded in one pass and a long one
decoded and encoded in overlapping windows, both against diffusers' single
pass. Tolerance as the fixture VAE cases: 1e-4 of max|ref|.
"""

import mlx.core as mx
import numpy as np
import pytest
from helpers import rel_err, require

from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.loading import load_component

pytestmark = pytest.mark.live
torch = diffusers = None  # imported by `references`: collecting this module (even to deselect it) needs no torch


@pytest.fixture(scope="module", autouse=True)
def references():
    global torch, diffusers
    torch, diffusers = require("torch"), require("diffusers")


CONFIG = dict(
    encoder_hidden_size=16,
    downsampling_ratios=[2, 4, 6],
    channel_multiples=[1, 2, 2],
    decoder_channels=8,
    decoder_input_channels=8,
    audio_channels=2,
    sampling_rate=48000,
)
HOP = 48
TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(7)
    torch.set_num_threads(2)
    ref = diffusers.AutoencoderOobleck(**CONFIG).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("weight_g"):
                v = dict(ref.named_parameters())[name[:-1] + "v"]
                norm = v.flatten(1).norm(dim=1).reshape(p.shape)
                p.copy_(norm * (0.5 + torch.rand_like(p)))
            elif name.endswith(("alpha", "beta")):
                p.copy_(0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("live_vae")
    ref.save_pretrained(root / "src" / "vae", safe_serialization=True)
    convert_checkpoints(root / "src", root / "mlx")
    return ref, load_component(root / "mlx" / "vae", "vae")


def torch_decode(ref, z):
    with torch.no_grad():
        return ref.decode(torch.from_numpy(z).permute(0, 2, 1)).sample.permute(0, 2, 1).numpy()


def torch_moments(ref, x):
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(x).permute(0, 2, 1)).latent_dist
        return dist.mean.permute(0, 2, 1).numpy(), dist.std.permute(0, 2, 1).numpy()


def test_short_decode_and_encode(pair):
    ref, ours = pair
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, 12, 8)).astype(np.float32)
    assert rel_err(np.array(ours.decode(mx.array(z))), torch_decode(ref, z)) < TOL
    x = (0.5 * rng.standard_normal((2, 12 * HOP + 17, 2))).astype(np.float32)
    mean, std = ours.encode_moments(mx.array(x))
    ref_mean, ref_std = torch_moments(ref, x)
    assert rel_err(np.array(mean), ref_mean) < TOL
    assert rel_err(np.array(std), ref_std) < TOL


def test_long_chunked_decode_and_encode(pair):
    ref, ours = pair
    rng = np.random.default_rng(2)
    z = rng.standard_normal((1, 150, 8)).astype(np.float32)
    windows = []
    got = ours.decode_chunked(mx.array(z), chunk=48, overlap=16, progress=lambda d, t: windows.append((d, t)))
    assert windows[-1] == (len(windows), len(windows)) and len(windows) == 10  # the chunked path really ran
    assert rel_err(np.array(got), torch_decode(ref, z)) < TOL
    x = (0.5 * rng.standard_normal((1, 150 * HOP + 31, 2))).astype(np.float32)
    mean, std = ours.encode_moments_chunked(mx.array(x), chunk=48, overlap=16)
    ref_mean, ref_std = torch_moments(ref, x)
    assert rel_err(np.array(mean), ref_mean) < TOL
    assert rel_err(np.array(std), ref_std) < TOL
