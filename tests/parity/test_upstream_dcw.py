"""DCW against golden tensors of upstream's own code at 6d467e4 (`scripts/make_upstream_fixtures.py`): its
`DCWCorrector.apply` (every mode, odd and even lengths, default and strong scalers; every filter-bank wavelet of
upstream's UI, through `pytorch_wavelets` in mode "zero") and its turbo `generate_audio`
with DCW on the tiny fixture checkpoint (every mode, 37 and 36 frames). No torch needed here: the goldens are
stored."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import rel_err
from upstream import TurboRun, cases, check, load

from mlx_acestep.diffusion.dcw import DCW
from mlx_acestep.diffusion.sampler import TurboSettings
from mlx_acestep.diffusion.wavelets import DEC_LO, dwt, idwt
from mlx_acestep.errors import AceStepError
from mlx_acestep.names import DCW_WAVELETS

CASES, RUNS = cases("dcw"), cases("acestep-v15-turbo:dcw")
# Measured over the 16 Haar cases: at most 1.4e-7 of max|ref| (float32 rounding of the transform), over the 10
# filter-bank cases at most MEASURED_BANKS; the correction itself moves the latent by 0.03-1.4, so a wrong band,
# sign, filter or padding is far outside this.
CORRECTOR_TOLERANCE = 1e-6


def test_every_mode_and_wavelet_is_covered_at_odd_and_even_lengths():
    seen = {(c["args"]["mode"], c["tensors"]["in.x_next"]["shape"][1] % 2) for c in CASES.values()}
    assert seen == {(m, parity) for m in ("low", "high", "double", "pix") for parity in (0, 1)}
    banks = {(c["args"]["wavelet"], c["tensors"]["in.x_next"]["shape"][1] % 2) for c in CASES.values()}
    assert banks == {(w, parity) for w in DCW_WAVELETS for parity in (0, 1)}
    assert set(DCW_WAVELETS) == {"haar", *DEC_LO}  # the names the request offers are the banks there are


@pytest.mark.parametrize("name", sorted(CASES))
def test_dcw_matches_upstream(name):
    inputs, outputs, args = load(CASES[name])
    dcw = DCW(args["mode"], args["scaler"], args["high_scaler"], args["wavelet"])
    ours = np.array(dcw.correct(mx.array(inputs["x_next"]), mx.array(inputs["denoised"]), args["t"]))
    err = rel_err(ours, outputs["x"])
    PARITY_ERRORS.append((f"upstream {name}", "x", err, CORRECTOR_TOLERANCE))
    assert ours.shape == outputs["x"].shape and err <= CORRECTOR_TOLERANCE, err


@pytest.mark.parametrize("wavelet", DCW_WAVELETS)
@pytest.mark.parametrize("frames", [1, 2, 37, 40])
def test_each_wavelet_round_trips_odd_and_even_lengths(frames, wavelet):
    """Orthogonal banks reconstruct exactly (the goldens cover the bands themselves)."""
    x = mx.random.normal((2, frames, 8), key=mx.random.key(frames))
    low, high = dwt(x, wavelet)
    taps = 2 if wavelet == "haar" else len(DEC_LO[wavelet])
    assert low.shape == high.shape == (2, (frames + taps - 1) // 2, 8)
    np.testing.assert_allclose(np.array(idwt(low, high, frames, wavelet)), np.array(x), atol=1e-5)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(AceStepError, match=r"unknown DCW mode 'mid' \(choose low, high, double, pix\)"):
        DCW(mode="mid")
    with pytest.raises(AceStepError, match=r"unknown DCW wavelet 'db5' \(choose haar, db2, db4, sym4, sym8, coif2\)"):
        DCW(wavelet="db5")
    with pytest.raises(AceStepError, match="finite"):
        DCW(scaler=float("nan"))


def test_zero_scalers_leave_the_latent_untouched_as_upstream():
    x, y = mx.ones((1, 5, 2)), mx.zeros((1, 5, 2))
    assert not DCW(scaler=0, high_scaler=0).active
    assert DCW("low", scaler=0.5).correct(x, y, 0.0) is x  # t = 0: the low band's weight is 0, no round trip


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
    inputs, outputs, args = load(RUNS[name])
    run = TurboRun(inputs, converted, load_converted)
    dcw = DCW(args["mode"], args["scaler"], args["high_scaler"], args["wavelet"])
    plain = run(TurboSettings(shift=args["shift"]))
    check(name + label, run(TurboSettings(shift=args["shift"], dcw=dcw)), outputs["target_latents"], plain)
