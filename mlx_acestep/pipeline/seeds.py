"""Seeds, one per item of a batch: checked and resolved once for the request, the CLI and the pipeline."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from ..errors import RequestError
from ..fields import Field, is_int
from ..limits import MAX_BATCH, SEED_MAX

# The request's batch rule (its field list takes it from here): checked before any per-item list is built.
BATCH = Field("batch_size", "integer", 1, MAX_BATCH)


def check_seeds(seed, batch: int, name: str = "seed") -> None:
    """One int (item i gets seed + i), one per item, None or -1 (random)."""
    if seed is None or (is_int(seed) and seed == -1):
        return
    several = isinstance(seed, (Sequence, np.ndarray)) and not isinstance(seed, (str, bytes))
    if isinstance(seed, np.ndarray):
        seeds = list(seed.reshape(-1).tolist())
    else:
        seeds = list(seed) if several else [seed]
    for s in seeds:
        if not is_int(s):
            raise RequestError(name, f"@name@ must be a whole number (or -1 for random), got {s!r}")
    if several and len(seeds) != batch:
        raise RequestError(name, f"@name@: got {len(seeds)} seeds for a batch of {batch}")
    if min(seeds) < 0 or max(seeds) > SEED_MAX:
        single = "" if several else " (or -1 for random)"  # -1 is random only as the one seed
        raise RequestError(name, f"@name@ must be between 0 and 2**63 - 1{single}, got {seed}")
    if not several and seeds[0] + batch - 1 > SEED_MAX:
        raise RequestError(name, f"@name@ {seed} + {batch - 1} (the batch's last item) is more than 2**63 - 1")


def resolve_seeds(seed, batch: int, name: str = "seed") -> list[int]:
    """One seed per item. None or -1: random; one int: seed, seed+1, ... (upstream draws fresh ones; this repeats)."""
    batch = BATCH.check(batch, RequestError)  # before a list of a billion seeds is built
    check_seeds(seed, batch, name)
    if seed is None or (is_int(seed) and seed == -1):
        return [secrets.randbits(32) for _ in range(batch)]
    if is_int(seed):
        return [int(seed) + i for i in range(batch)]
    return [int(s) for s in np.asarray(seed).reshape(-1).tolist()]
