"""One-level 1-D wavelet transforms along time for DCW, natively in MLX, as `pytorch_wavelets` computes them in
mode "zero" (upstream's `DWT1DForward(J=1, mode="zero")` / `DWT1DInverse`, `models/common/dcw_loader.py:69-70`).

Haar has a closed form. The others are the fixed filter banks of the wavelets upstream's UI offers; each is stored
as its decomposition low-pass (PyWavelets' `dec_lo`), the rest follow as for every orthogonal wavelet:
`rec_lo = dec_lo[::-1]`, `dec_hi[k] = (-1)^(k+1) rec_lo[k]`, `rec_hi = dec_hi[::-1]`.

Forward: `n = (T + L - 1) // 2` coefficients per band; the signal zero-padded by `p // 2` each side (one more at
the end when `p = 2(n - 1) - T + L` is odd) and correlated with the reversed filters at stride 2. Inverse: the
transposed convolution at stride 2 with `L - 2` cut from each end, then cut to the original length (the caller's).
"""

from __future__ import annotations

import math

import mlx.core as mx

_R = 1 / math.sqrt(2)

DEC_LO = {
    "db2": (-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416),
    "db4": (
        -0.010597401785069032, 0.0328830116668852, 0.030841381835560764, -0.18703481171909309,
        -0.027983769416859854, 0.6308807679298589, 0.7148465705529157, 0.2303778133088965,
    ),
    "sym4": (
        -0.07576571478927333, -0.02963552764599851, 0.49761866763201545, 0.8037387518059161,
        0.29785779560527736, -0.09921954357684722, -0.012603967262037833, 0.0322231006040427,
    ),
    "sym8": (
        -0.0033824159510061256, -0.0005421323317911481, 0.03169508781149298, 0.007607487324917605,
        -0.1432942383508097, -0.061273359067658524, 0.4813596512583722, 0.7771857517005235,
        0.3644418948353314, -0.05194583810770904, -0.027219029917056003, 0.049137179673607506,
        0.003808752013890615, -0.01495225833704823, -0.0003029205147213668, 0.0018899503327594609,
    ),
    "coif2": (
        -0.000720549445520347, -0.0018232088709110323, 0.005611434819368834, 0.02368017194684777,
        -0.05943441864643109, -0.07648859907828076, 0.4170051844232391, 0.8127236354494135,
        0.3861100668227629, -0.0673725547237256, -0.04146493678687178, 0.01638733646320364,
    ),
}  # fmt: skip


def filters(wavelet: str) -> tuple[tuple[float, ...], ...]:
    """(dec_lo, dec_hi, rec_lo, rec_hi) of a filter-bank wavelet."""
    dec_lo = DEC_LO[wavelet]
    rec_lo = dec_lo[::-1]
    dec_hi = tuple((-1) ** (k + 1) * v for k, v in enumerate(rec_lo))
    return dec_lo, dec_hi, rec_lo, dec_hi[::-1]


def dwt(x: mx.array, wavelet: str = "haar") -> tuple[mx.array, mx.array]:
    """`[B, T, C]` -> (low, high), each `[B, n, C]` (Haar: `n = ceil(T / 2)`)."""
    if wavelet == "haar":
        if x.shape[1] % 2:
            x = mx.concatenate([x, mx.zeros((x.shape[0], 1, x.shape[2]), dtype=x.dtype)], axis=1)
        even, odd = x[:, 0::2], x[:, 1::2]
        return (even + odd) * _R, (even - odd) * _R
    dec_lo, dec_hi, _, _ = filters(wavelet)
    frames, taps = x.shape[1], len(dec_lo)
    n = (frames + taps - 1) // 2
    pad = 2 * (n - 1) - frames + taps
    x = mx.pad(x, [(0, 0), (pad // 2, pad // 2 + pad % 2), (0, 0)])
    low = high = 0.0
    for j in range(taps):  # correlation with the reversed filters, stride 2
        window = x[:, j : j + 2 * n - 1 : 2]
        low = low + window * dec_lo[taps - 1 - j]
        high = high + window * dec_hi[taps - 1 - j]
    return low, high


def idwt(low: mx.array, high: mx.array, frames: int, wavelet: str = "haar") -> mx.array:
    """The inverse of `dwt`, cut to `frames`."""
    if wavelet == "haar":
        even, odd = (low + high) * _R, (low - high) * _R
        return mx.stack([even, odd], axis=2).reshape(low.shape[0], -1, low.shape[2])[:, :frames]
    _, _, rec_lo, rec_hi = filters(wavelet)
    b, n, c = low.shape
    taps = len(rec_lo)

    def upsampled(band):  # the stride-2 upsampling, padded for the full convolution
        up = mx.stack([band, mx.zeros_like(band)], axis=2).reshape(b, 2 * n, c)[:, : 2 * n - 1]
        return mx.pad(up, [(0, 0), (taps - 1, taps - 1), (0, 0)])

    up_low, up_high = upsampled(low), upsampled(high)
    full = 2 * n + taps - 2  # the transposed convolution's whole output, before its padding is cut
    out = 0.0
    for j in range(taps):
        start = taps - 1 - j
        out = out + up_low[:, start : start + full] * rec_lo[j] + up_high[:, start : start + full] * rec_hi[j]
    return out[:, taps - 2 : full - (taps - 2)][:, :frames]
