"""DCW against golden tensors of upstream's own code at 6d467e4 (`scripts/make_upstream_fixtures.py`): its
`DCWCorrector.apply` (every mode, odd and even lengths, default and strong scalers) and its turbo `generate_audio`
with DCW on the tiny fixture checkpoint (every mode, 37 and 36 frames). No torch needed here: the goldens are
stored."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import rel_err

from mlx_acestep.diffusion.dcw import DCW, haar_dwt, haar_idwt
from mlx_acestep.diffusion.sampler import TurboSettings, sample_turbo
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_silence_latent

ROOT = Path(__file__).parent.parent / "fixtures" / "upstream"
ALL = json.loads((ROOT / "cases.json").read_text())["cases"]
CASES = {k: v for k, v in ALL.items() if v["component"] == "dcw"}
RUNS = {k: v for k, v in ALL.items() if v["component"] == "acestep-v15-turbo:dcw"}
# Measured over the 16 cases: at most 1.4e-7 of max|ref| (float32 rounding of the transform); the correction
# itself moves the latent by 0.03-1.4, so a wrong band, sign or schedule is far outside this.
TOLERANCE = 1e-6


def test_every_mode_is_covered_at_odd_and_even_lengths():
    seen = {(c["args"]["mode"], c["tensors"]["in.x_next"]["shape"][1] % 2) for c in CASES.values()}
    assert seen == {(m, parity) for m in ("low", "high", "double", "pix") for parity in (0, 1)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dcw_matches_upstream(name):
    from safetensors.numpy import load_file

    case = CASES[name]
    tensors, args = load_file(str(ROOT / case["file"])), case["args"]
    dcw = DCW(args["mode"], args["scaler"], args["high_scaler"], args["wavelet"])
    ours = np.array(dcw.correct(mx.array(tensors["in.x_next"]), mx.array(tensors["in.denoised"]), args["t"]))
    err = rel_err(ours, tensors["out.x"])
    PARITY_ERRORS.append((f"upstream {name}", "x", err, TOLERANCE))
    assert ours.shape == tensors["out.x"].shape and err <= TOLERANCE, err


@pytest.mark.parametrize("frames", [1, 2, 37, 40])
def test_the_haar_pair_round_trips_odd_and_even_lengths(frames):
    x = mx.random.normal((2, frames, 8), key=mx.random.key(frames))
    low, high = haar_dwt(x)
    assert low.shape == (2, (frames + 1) // 2, 8)
    np.testing.assert_allclose(np.array(haar_idwt(low, high, frames)), np.array(x), atol=1e-6)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(AceStepError, match=r"unknown DCW mode 'mid' \(choose low, high, double, pix\)"):
        DCW(mode="mid")
    with pytest.raises(AceStepError, match="DCW wavelet 'db4' is not supported here"):
        DCW(wavelet="db4")
    with pytest.raises(AceStepError, match="finite"):
        DCW(scaler=float("nan"))


def test_zero_scalers_leave_the_latent_untouched_as_upstream():
    x, y = mx.ones((1, 5, 2)), mx.zeros((1, 5, 2))
    assert not DCW(scaler=0, high_scaler=0).active
    assert DCW("low", scaler=0.5).correct(x, y, 0.0) is x  # t = 0: the low band's weight is 0, no round trip


# Whole turbo runs, held like the February sampler cases (1e-4 of max|ref|): measured 1.2e-6 to 3.1e-6 over the
# eight runs, the same float32 noise as the plain turbo case (1.6e-6).
RUN_TOLERANCE = 1e-4


def test_every_mode_runs_inside_the_sampler_at_odd_and_even_lengths():
    seen = {(c["args"]["mode"], c["tensors"]["in.noise"]["shape"][1] % 2) for c in RUNS.values()}
    assert seen == {(m, parity) for m in ("low", "high", "double", "pix") for parity in (0, 1)}


@pytest.mark.parametrize("path", ["cpu-kernels", "metal-path"])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_turbo_sampling_with_dcw_matches_upstreams_generate_audio(name, path, converted, load_converted):
    import contextlib

    from mlx_acestep import kernels

    with kernels.use_plain() if path == "metal-path" else contextlib.nullcontext():
        check_run(name, converted, load_converted, "" if path == "cpu-kernels" else " [metal path]")


def check_run(name, converted, load_converted, label):
    from parity import CONDITION_INPUTS, _mx
    from safetensors.numpy import load_file

    case = RUNS[name]
    tensors, args = load_file(str(ROOT / case["file"])), case["args"]
    inp = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    model = load_converted("acestep-v15-turbo")
    prepared = model.prepare_condition(
        *_mx(inp, *CONDITION_INPUTS), load_silence_latent(converted / "acestep-v15-turbo")
    )
    dcw = DCW(args["mode"], args["scaler"], args["high_scaler"], args["wavelet"])
    settings = TurboSettings(shift=args["shift"], dcw=dcw)
    ours = sample_turbo(
        model.decoder, prepared.encoder_hidden_states, prepared.context_latents, settings, noise=mx.array(inp["noise"])
    )
    ref = tensors["out.target_latents"]
    err = rel_err(np.array(ours), ref)
    PARITY_ERRORS.append((f"upstream {name}{label}", "target_latents", err, RUN_TOLERANCE))
    assert err <= RUN_TOLERANCE, err
    plain = sample_turbo(
        model.decoder,
        prepared.encoder_hidden_states,
        prepared.context_latents,
        TurboSettings(shift=args["shift"]),
        noise=mx.array(inp["noise"]),
    )
    assert rel_err(np.array(plain), ref) > 30 * RUN_TOLERANCE  # the correction is really there, and large enough
