"""Small shared helpers for tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ours - ref) ** 2), 1e-300)))


def copy_vae_root(fixtures: Path, dst: Path) -> Path:
    """A checkpoint root holding only the fixture VAE (fast to convert)."""
    (dst / "vae").mkdir(parents=True)
    for f in (fixtures / "checkpoints" / "vae").iterdir():
        shutil.copy(f, dst / "vae" / f.name)
    return dst
