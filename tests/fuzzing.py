"""The fuzz tests' hypothesis settings, one place: a small, repeatable run in the suite, a larger one on demand.

The suite runs each property on a fixed number of examples drawn deterministically (`derandomize`: a failure in CI
is the same failure on a laptop). `MLX_ACESTEP_FUZZ=N` multiplies every property's examples by N and draws them at
random (a new search each run), as `benchmarks/fuzz_rest.py` does for the REST API; `MLX_ACESTEP_FUZZ_SEED=S` replays
a random run's draw.
"""

from __future__ import annotations

import os

import hypothesis
from hypothesis import HealthCheck
from hypothesis import strategies as st

SCALE = int(os.environ.get("MLX_ACESTEP_FUZZ", "0") or 0)
SEED = os.environ.get("MLX_ACESTEP_FUZZ_SEED")


def settings(examples: int):
    """A property's settings: `examples` in the suite (deterministic), `examples * MLX_ACESTEP_FUZZ` on demand."""
    return hypothesis.settings(
        max_examples=examples * SCALE if SCALE else examples,
        derandomize=not SCALE and SEED is None,
        deadline=None,  # a shared 2-core machine's pauses are not findings
        database=None,  # nothing written beside the tests
        print_blob=True,
        suppress_health_check=list(HealthCheck),  # slow or filtered draws, function-scoped fixtures: none is a finding
    )


def seeded(test):
    """`test` under MLX_ACESTEP_FUZZ_SEED's seed, when one is given."""
    return hypothesis.seed(int(SEED))(test) if SEED is not None else test


# Values as JSON can carry them (NaN and infinity included: Python's json reads and writes them), nested a little.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "-1", "0", "1", "1e400", "nan", "inf", "true", "false", "1,2,-1", "[]", "{}", "4/4"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def deep(depth: int = 2000) -> bytes:
    """A JSON text nested deeper than Python's recursion limit (1000), in 4 kB: json raises RecursionError, not JSONDecodeError."""
    return b"[" * depth + b"]" * depth
