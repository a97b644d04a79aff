"""The server's named adapters, in upstream's model (`core/generation/handler/lora/lifecycle.py`, `controls.py`):
loading one makes it the active adapter and turns `use_lora` on; a scale names its adapter (or the active one)
and makes it active; the toggle turns them all off and on; unloading with no name drops every one. Tasks take
their adapters from here when they are submitted, as `GenerationRequest.loras`; the pipeline's own loaded adapters
are never changed, so a registration, a new scale, a toggle or an unload never reaches a job already queued.

A task that names none gets the active adapter at its scale while `use_lora` is on, and none while it is off (what
upstream's PEFT decoder runs: `set_adapter` makes one adapter active), and only on the DiT the adapter was loaded
for (upstream loads it into its primary model only; a task on another DiT runs without it). A task may name its adapters in `loras`
(aliases `lora_names`, `lora_name`; an extension: upstream's REST has no adapter field): a list of names or of
`{"name", "scale"}` objects, or a comma-separated string; an empty list means none; named ones apply whatever
the toggle says.
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
    dit: str = ""  # the DiT it was loaded for


class AdapterRegistry:
    """Named adapters, in registration order, the active one and the toggle; safe to use from the routes' threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._named: dict[str, NamedAdapter] = {}
        self.active: str | None = None
        self.use_lora = False

    def register(self, name: str, path: str, scale, dit: str = "") -> None:
        scale = scale_of(scale, name)
        with self._lock:
            if name in self._named:
                raise ProtocolError(f"an adapter named {name!r} is already loaded (give another name, or unload it)")
            self._named[name] = NamedAdapter(name, path, scale, dit)
            self.active, self.use_lora = name, True

    def set_scale(self, name, scale) -> str:
        """The named adapter's scale, or the active one's with no name; it becomes the active one. Returns its name."""
        with self._lock:
            adapter = self._get(self.active if name is None else name)
            self._named[adapter.name] = NamedAdapter(
                adapter.name, adapter.path, scale_of(scale, adapter.name), adapter.dit
            )
            self.active = adapter.name
            return adapter.name

    def toggle(self, on: bool) -> None:
        with self._lock:
            if on and not self._named:
                raise ProtocolError("No LoRA adapter loaded. Please load a LoRA first.")
            self.use_lora = bool(on)

    def remove(self, name=None) -> None:
        """One adapter (the first left becomes the active one), or with no name every one."""
        with self._lock:
            if name is None:
                self._named.clear()
            else:
                del self._named[self._get(name).name]
            if self.active not in self._named:
                self.active = next(iter(self._named), None)
            self.use_lora = self.use_lora and bool(self._named)

    def listing(self) -> list[tuple[str, float]]:
        with self._lock:
            return [(a.name, a.scale) for a in self._named.values()]

    def status(self) -> dict:
        """`GET /v1/lora/status` as upstream answers it (`api/http/lora_routes.py:132-149`)."""
        with self._lock:
            scales = {a.name: a.scale for a in self._named.values()}
            return {
                "lora_loaded": bool(scales),
                "use_lora": self.use_lora,
                "lora_scale": scales.get(self.active, 1.0),
                "adapter_type": "lora" if scales else None,
                "scales": scales,
                "active_adapter": self.active,
                "adapters": list(scales),
                "synthetic_default_mode": False,
            }

    def for_task(self, body: dict, dit: str) -> list[NamedAdapter]:
        """The adapters a task body on DiT `dit` asks for (see the module docstring), fixed now."""
        value = next((body[f] for f in FIELDS if body.get(f) is not None), None)
        with self._lock:
            if value is None:
                active = self._named.get(self.active) if self.use_lora else None
                return [active] if active is not None and active.dit in ("", dit) else []
            return [self._pick(item) for item in _items(value)]

    def _pick(self, item) -> NamedAdapter:
        if isinstance(item, dict):
            adapter = self._get(item.get("name"))
            if item.get("scale") is None:
                return adapter
            return NamedAdapter(adapter.name, adapter.path, scale_of(item["scale"], adapter.name))
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


def scale_of(value, name) -> float:
    """An adapter scale as a client sent it (form fields arrive as text), or a 400 naming the adapter."""
    if isinstance(value, str) and as_float(value) is not None:  # form fields arrive as text
        value = as_float(value)
    try:
        return check_scale(value, f"the scale of {name!r}")
    except AceStepError as e:
        raise ProtocolError(str(e)) from None
