"""Which modules are in memory when, and what each phase costs.

Every phase runs through `Residency.run(role, fn)`: it loads the role's modules,
calls `fn(module)` and, without `keep_loaded`, frees exactly that role once `fn`
has returned (its locals gone, so no reference survives). One role -> module map
serves both load and release, so nothing a phase loaded can stay behind. With
`keep_loaded` each component is loaded whole once and shared by every role that
needs part of it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time

import mlx.core as mx
import mlx.nn as nn

from ..engine import PARTS
from ..hub import ModelFolders
from ..loading import load_component

ROLES = PARTS  # a role is an engine step: what it loads is declared once, beside the engine


class PhaseMeter:
    """Wall time and MLX peak memory per phase; loads inside a phase are timed apart as `load`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self._loading = 0.0

    @contextlib.contextmanager
    def phase(self, name: str):
        mx.reset_peak_memory()
        self._loading = 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start - self._loading
            self.peak[name] = max(self.peak.get(name, 0), mx.get_peak_memory())

    @contextlib.contextmanager
    def loading(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self._loading += took
            self.seconds["load"] = self.seconds.get("load", 0.0) + took


class Residency:
    """Loads each role's modules on demand; without `keep_loaded` a role is freed when its phase is done."""

    def __init__(self, folders: ModelFolders, keep_loaded: bool, codebook_size: int | None = None):
        self.folders, self.keep_loaded, self.codebook_size = folders, keep_loaded, codebook_size
        self._loaded: dict[str, nn.Module] = {}  # key: the component (keep_loaded) or the role
        self._lock = threading.Lock()

    def _key(self, role: str) -> str:
        return ROLES[role][0] if self.keep_loaded else role

    def get(self, role: str, meter: PhaseMeter | None = None):
        """The role's module (the whole DiT / VAE with `keep_loaded`), loading it if needed."""
        key = self._key(role)
        with self._lock:
            if key not in self._loaded:
                with (meter or PhaseMeter()).loading():
                    self._loaded[key] = self._load(role)
            return self._loaded[key]

    def _load(self, role: str):
        component, parts = ROLES[role]
        folder = getattr(self.folders, component)
        if role == "planner":
            from ..planner.lm import Planner  # transformers' tokenizer: only when thinking

            return Planner.load(folder, self.codebook_size)
        return load_component(folder, component, None if self.keep_loaded else parts)

    def release(self, role: str) -> None:
        if not self.keep_loaded:
            with self._lock:
                self._loaded.pop(self._key(role), None)
            gc.collect()
        mx.clear_cache()

    def run(self, role: str, fn, meter: PhaseMeter | None = None):
        """`fn(module)` with the role's module; the role is released afterwards (unless kept loaded)."""
        try:
            return fn(self.get(role, meter))
        finally:
            self.release(role)

    def loaded(self, role: str):
        """The role's module if it is in memory now, else None (never loads)."""
        with self._lock:
            return self._loaded.get(self._key(role))

    def evict(self, role: str) -> None:
        """Drop the role's module (with `keep_loaded`, its whole component) so the next use loads it fresh."""
        with self._lock:
            self._loaded.pop(self._key(role), None)
        gc.collect()
        mx.clear_cache()

    def resident(self) -> list[str]:
        """What is loaded now: roles (components with `keep_loaded`), in load order."""
        with self._lock:
            return list(self._loaded)

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
        gc.collect()
        mx.clear_cache()
