"""The server's named adapters: the LoRA routes register (name -> path, scale) here, and each task takes its
adapters from here when it is submitted, as `GenerationRequest.loras`. The pipeline's own loaded adapters are
never changed, so a registration, a new scale or an unload never reaches a job already queued.

A task names its adapters in `loras` (aliases `lora_names`, `lora_name`; an extension: the reference's REST
protocol has no adapter field): a list of names or of `{"name", "scale"}` objects, or a comma-separated
string; an empty list means none. A task that names none gets every registered adapter at its registered
scale, as the routes' clients (the ACE-Step VST3 plugin: load, then generate) expect.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..adapters import check_scale
from ..errors import AceStepError
from .protocol import ProtocolError, as_float

FIELDS = ("loras", "lora_names", "lora_name")


@dataclass(frozen=True)
class NamedAdapter:
    name: str
    path: str
    scale: float


class AdapterRegistry:
    """Named adapters, in registration order; safe to use from the routes' threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._named: dict[str, NamedAdapter] = {}

    def register(self, name: str, path: str, scale) -> None:
        scale = _scale(scale, name)
        with self._lock:
            if name in self._named:
                raise ProtocolError(f"an adapter named {name!r} is already loaded (give another name, or unload it)")
            self._named[name] = NamedAdapter(name, path, scale)

    def set_scale(self, name, scale) -> None:
        scale = _scale(scale, name)
        with self._lock:
            adapter = self._get(name)
            self._named[adapter.name] = NamedAdapter(adapter.name, adapter.path, scale)

    def remove(self, name=None) -> None:
        """One adapter, or with no name every one."""
        with self._lock:
            if name is None:
                self._named.clear()
            else:
                del self._named[self._get(name).name]

    def listing(self) -> list[tuple[str, float]]:
        with self._lock:
            return [(a.name, a.scale) for a in self._named.values()]

    def for_task(self, body: dict) -> list[NamedAdapter]:
        """The adapters a task body asks for (see the module docstring), fixed now."""
        value = next((body[f] for f in FIELDS if body.get(f) is not None), None)
        with self._lock:
            if value is None:
                return list(self._named.values())
            return [self._pick(item) for item in _items(value)]

    def _pick(self, item) -> NamedAdapter:
        if isinstance(item, dict):
            adapter = self._get(item.get("name"))
            if item.get("scale") is None:
                return adapter
            return NamedAdapter(adapter.name, adapter.path, _scale(item["scale"], adapter.name))
        return self._get(item)

    def _get(self, name) -> NamedAdapter:
        if not isinstance(name, str) or name not in self._named:
            known = ", ".join(self._named) or "none"
            raise ProtocolError(f"no adapter named {name!r} is loaded (loaded: {known})")
        return self._named[name]


def _items(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return value
    raise ProtocolError(f"loras must be a list of adapter names or a comma-separated string, got {value!r}")


def _scale(value, name) -> float:
    if isinstance(value, str) and as_float(value) is not None:  # form fields arrive as text
        value = as_float(value)
    try:
        return check_scale(value, f"the scale of {name!r}")
    except AceStepError as e:
        raise ProtocolError(str(e)) from None
