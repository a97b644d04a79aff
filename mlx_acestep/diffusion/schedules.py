"""The timestep schedules of ACE-Step 1.5 (spec 5.6-5.7), computed on the host.

- Turbo: eight steps from a fixed table chosen by shift (1, 2 or 3), or custom timesteps snapped to the
  tables' 20 values, or (upstream since April 2026) N steps of the shifted linspace at the exact shift.
- Base / SFT: linspace(1, 0, N+1) shifted by s*t / (1 + (s-1)*t), or explicit timesteps verbatim.
"""

from __future__ import annotations

import mlx.core as mx
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


def torch_linspace(start: float, end: float, steps: int, dtype=None) -> mx.array:
    """linspace as torch computes it on the CPU in `dtype` (float32 by default), so schedules match bit for bit.

    torch fills the first half as start + step*i and the second as end - step*(steps-1-i). In float32 with a
    fused multiply-add (one rounding): the exact product of two float32 values fits a float64, so the host
    emulates the FMA in float64 and rounds once. In a half dtype everything is that dtype: the step, i, the
    product and the sum are each rounded (c10's BFloat16/Half arithmetic; checked against torch for 2-201 steps).
    """
    if dtype is None or dtype == mx.float32:
        step = np.float64(np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1)))
        i = np.arange(steps, dtype=np.float64)
        values = np.where(i < steps // 2, np.float32(start) + step * i, np.float32(end) - step * (steps - 1 - i))
        return mx.array(values.astype(np.float32))
    step = (mx.array(end, dtype) - mx.array(start, dtype)) / mx.array(steps - 1, dtype)
    i = mx.arange(steps)
    first = mx.array(start, dtype) + step * i.astype(dtype)
    second = mx.array(end, dtype) - step * (steps - 1 - i).astype(dtype)
    return mx.where(i < steps // 2, first, second)


def base_timesteps(steps: int, shift: float = 1.0, timesteps: list[float] | None = None, dtype=None) -> list[float]:
    """N+1 times from 1 to 0: linspace, then s*t / (1 + (s-1)*t), each operation rounded to `dtype` (float32 by
    default); or explicit `timesteps` verbatim, rounded to `dtype`.

    The reference builds the schedule in the model dtype, linspace and shift alike
    (acestep/models/base/modeling_acestep_v15_base.py:1949-1952), so in bfloat16 the shift's four roundings give
    other times than the exact values rounded once (24 of 51 differ at 50 steps, shift 3).
    """
    dtype = dtype or mx.float32
    if timesteps is not None:
        t = np.asarray(timesteps, np.float32)
        if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) >= 0):
            raise AceStepError("explicit timesteps must be at least two strictly decreasing values")
        return mx.array(t, dtype=dtype).tolist()
    if steps < 1:
        raise AceStepError(f"steps must be at least 1, got {steps}")
    t = torch_linspace(1.0, 0.0, steps + 1, dtype)
    if shift != 1.0:
        # torch computes each operation in float32 (a Python scalar stays float32 there; MLX would round it to
        # t's dtype first, e.g. shift 0.7) and rounds each result to t's dtype
        def rounded(x: mx.array) -> mx.array:
            return x.astype(dtype).astype(mx.float32)

        wide = t.astype(mx.float32)
        t = rounded(rounded(shift * wide) / rounded(1 + rounded((shift - 1) * wide)))
    return t.tolist()
