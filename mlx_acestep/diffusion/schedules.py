"""The timestep schedules of ACE-Step 1.5 (spec 5.6-5.7), computed on the host.

- Turbo: eight steps from a fixed table chosen by shift (1, 2 or 3), or custom timesteps snapped to the
  tables' 20 values, or (upstream since April 2026) N steps of the shifted linspace at the exact shift.
- Base / SFT: linspace(1, 0, N+1) shifted by s*t / (1 + (s-1)*t), or explicit timesteps verbatim.
"""

from __future__ import annotations

import numpy as np

from ..errors import AceStepError, RequestError
from ..limits import TURBO_STEP_RANGE

TURBO_STEPS = 8
TURBO_SHIFTS = (1, 2, 3)


def _turbo_table(shift: int) -> list[float]:
    taus = [1 - k / TURBO_STEPS for k in range(TURBO_STEPS)]
    return [shift * tau / (1 + (shift - 1) * tau) for tau in taus]


TURBO_TABLES = {s: _turbo_table(s) for s in TURBO_SHIFTS}
VALID_TIMESTEPS = sorted({round(t, 12) for table in TURBO_TABLES.values() for t in table}, reverse=True)
# The turbo trainer draws its times from the table it is run at (the newer trainer's "discrete" sampling).
TURBO_TRAINING_TABLE = TURBO_TABLES[3]


def nearest_turbo_shift(shift: float) -> int:
    """The turbo table a shift picks: the nearest of 1, 2 and 3."""
    return min(TURBO_SHIFTS, key=lambda s: abs(s - shift))


def turbo_steps(steps: int | None) -> int:
    """A turbo run's step count: 8 unless given, and at most 8, as upstream's service holds it."""
    lo, hi = TURBO_STEP_RANGE
    if steps is not None and not lo <= steps <= hi:
        raise RequestError("steps", f"@name@ must be between {lo} and {hi} on turbo models, got {steps}")
    return TURBO_STEPS if steps is None else steps


def turbo_timesteps(shift: float = 3.0, timesteps: list[float] | None = None, steps: int | None = None) -> list[float]:
    """The turbo schedule: custom values snapped to the tables' 20 values; else with `steps`, upstream's variable
    schedule (`1 - i/N` shifted by the exact shift, in Python floats as upstream; modeling_acestep_v15_turbo.py
    :1966-1979), which for 8 steps and a shift of 1, 2 or 3 is that shift's table; else the nearest shift's table."""
    if timesteps is None and steps is not None:  # the request holds steps to TURBO_STEP_RANGE, as upstream's service
        raw = [1.0 - i / steps for i in range(steps)]
        return raw if shift == 1.0 else [shift * t / (1.0 + (shift - 1.0) * t) for t in raw]
    if timesteps is None:
        return list(TURBO_TABLES[nearest_turbo_shift(shift)])
    values = [float(t) for t in timesteps]
    while values and values[-1] == 0:  # trailing zeros are the implicit end point
        values.pop()
    if not 1 <= len(values) <= 20:
        raise AceStepError(f"custom timesteps: expected 1 to 20 values above 0, got {len(values)}")
    if any(not 0 < t <= 1 for t in values):
        raise AceStepError(f"custom timesteps must lie in (0, 1], got {values}")
    return [min(VALID_TIMESTEPS, key=lambda v: abs(v - t)) for t in values]


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 linspace as torch computes it on the CPU, so schedules match bit for bit.

    torch fills the first half as start + step*i and the second as end - step*(steps-1-i)
    with a fused multiply-add (one rounding); the exact product of two float32 values
    fits a float64, so the host emulates the FMA in float64 and rounds once.
    """
    step = np.float64(np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1)))
    i = np.arange(steps, dtype=np.float64)
    values = np.where(i < steps // 2, np.float32(start) + step * i, np.float32(end) - step * (steps - 1 - i))
    return values.astype(np.float32)


def base_timesteps(steps: int, shift: float = 1.0, timesteps: list[float] | None = None) -> list[float]:
    """N+1 times from 1 to 0 in float32: linspace, then s*t / (1 + (s-1)*t); or explicit `timesteps` verbatim."""
    if timesteps is not None:
        t = np.asarray(timesteps, np.float32)
        if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) >= 0):
            raise AceStepError("explicit timesteps must be at least two strictly decreasing values")
        return t.tolist()
    if steps < 1:
        raise AceStepError(f"steps must be at least 1, got {steps}")
    t = torch_linspace(1.0, 0.0, steps + 1)
    if shift != 1.0:
        s = np.float32(shift)
        t = (s * t / (np.float32(1) + np.float32(shift - 1) * t)).astype(np.float32)
    return t.tolist()
