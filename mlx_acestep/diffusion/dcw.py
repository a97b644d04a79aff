"""DCW, differential correction in the wavelet domain (upstream's `dcw_correction.py`, after Yu et al., CVPR 2026).

After each step, a one-level DWT along time of the new latent `x` and of the step's clean estimate
`denoised = x_in - v t`, the chosen band(s) of `x` pushed away from the estimate's, and the inverse DWT:

    xL, xH = DWT(x);  yL, yH = DWT(denoised)
    low:    xL += t s (xL - yL)              high:  xH += (1 - t) s (xH - yH)
    double: both, the high band with (1 - t) s_high        pix: x += s (x - denoised), no transform

Natively in MLX (`wavelets.py`: Haar and the filter banks upstream's UI offers, db2, db4, sym4, sym8, coif2), in
float32 whatever the model dtype (as the reference casts to float32), the result cast back (pix in the latent's own
dtype, as the reference). The transform pads as the reference's `pytorch_wavelets` does in mode "zero" (an odd
number of frames gets one zero frame for Haar) and its inverse is cut back to the latent's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx

from ..errors import AceStepError
from ..limits import DEFAULT_DCW_HIGH_SCALER, DEFAULT_DCW_MODE, DEFAULT_DCW_SCALER, DEFAULT_DCW_WAVELET
from ..names import DCW_MODES, DCW_WAVELETS
from .wavelets import dwt, idwt


@dataclass(frozen=True)
class DCW:
    """A loop correction (`loop.Correction`); upstream's defaults are mode double, 0.05 and 0.02, Haar."""

    mode: str = DEFAULT_DCW_MODE
    scaler: float = DEFAULT_DCW_SCALER
    high_scaler: float = DEFAULT_DCW_HIGH_SCALER
    wavelet: str = DEFAULT_DCW_WAVELET

    def __post_init__(self):
        if self.mode not in DCW_MODES:
            raise AceStepError(f"unknown DCW mode {self.mode!r} (choose {', '.join(DCW_MODES)})")
        if self.wavelet not in DCW_WAVELETS:
            raise AceStepError(f"unknown DCW wavelet {self.wavelet!r} (choose {', '.join(DCW_WAVELETS)})")
        for name in ("scaler", "high_scaler"):
            if not math.isfinite(getattr(self, name)):
                raise AceStepError(f"the DCW {name.replace('_', ' ')} must be a finite number")

    @property
    def active(self) -> bool:
        """Whether it changes anything (upstream skips the correction when its scalers are 0)."""
        return self.scaler != 0 or (self.mode == "double" and self.high_scaler != 0)

    def correct(self, x: mx.array, denoised: mx.array, t: float) -> mx.array:
        if self.mode == "pix":  # in the latent's own dtype, as the reference
            return x if self.scaler == 0 else x + self.scaler * (x - denoised)
        low_s = t * self.scaler if self.mode in ("low", "double") else 0.0
        high_s = (1.0 - t) * (self.high_scaler if self.mode == "double" else self.scaler) if self.mode != "low" else 0.0
        if low_s == 0 and high_s == 0:  # the reference returns the latent untouched, not a transform's round trip
            return x
        (xl, xh), (yl, yh) = (dwt(v.astype(mx.float32), self.wavelet) for v in (x, denoised))
        if low_s != 0:
            xl = xl + low_s * (xl - yl)
        if high_s != 0:
            xh = xh + high_s * (xh - yh)
        return idwt(xl, xh, x.shape[1], self.wavelet).astype(x.dtype)

    def after_step(self, step) -> mx.array:
        return self.correct(step.x, step.denoised, step.t)

    def finish(self, x: mx.array) -> mx.array:
        return x


def dcw_for(family: str, enabled: bool | None = None, **settings) -> DCW | None:
    """The correction a run gets: `enabled` None is upstream's rule since August 2026 (PR #1273): on for turbo
    DiTs, off for base / SFT, where it garbles 32-50-step schedules (upstream issues #1206, #1259, #1299)."""
    on = family == "turbo" if enabled is None else enabled
    return DCW(**settings) if on else None
