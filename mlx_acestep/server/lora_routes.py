"""The LoRA routes, upstream's contract (`acestep/api/http/lora_routes.py` at 6d467e4, as the acestep.vst3 plugin's
LoRA panel calls them): `/v1/lora/load {lora_path, adapter_name}`, `/unload`, `/toggle {use_lora}`,
`/scale {scale, adapter_name}` answer the envelope with `data.message` (upstream's words), `GET /v1/lora/status`
the state. They name adapters from the allowed input folders in the server's registry (server/adapters.py), which
tasks submitted later use; the pipeline's own adapters, and so the jobs already queued, never change.

Extensions: `path`/`name` beside `lora_path`/`adapter_name`, a `scale` on load, a `name` on unload (upstream
unloads all), and `loaded` [[name, scale], ...] in every answer. A refusal is a 4xx with its message, where upstream
sends some of them as HTTP 200 with `code` 400 in the envelope (a client reads `error` either way).

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

from ..limits import ADAPTER_SCALE
from .adapters import scale_of
from .http import read_body
from .protocol import ProtocolError, envelope

OK, WARN = "\u2705", "\u26a0\ufe0f"  # upstream's message prefixes: its clients show the message as it is


def _name(body: dict, ours: str, upstreams: str):
    """A field as our clients or upstream's send it; a blank name is none, as upstream strips it."""
    value = body.get(ours) if body.get(ours) is not None else body.get(upstreams)
    if isinstance(value, str):
        return value.strip() or None
    if value is not None:
        raise ProtocolError(f"{upstreams} must be a string, got {value!r}")
    return None


def _switch(value) -> bool:
    """`use_lora` as upstream's model reads a boolean (pydantic: true/false, 1/0, yes/no, on/off); anything else
    is refused, never read as off."""
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and str(value).strip().lower() in words:
        return words[str(value).strip().lower()]
    raise ProtocolError(f"use_lora must be true or false, got {value!r}")


def lora_routes(app, server) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from ..errors import AceStepError

    registry, gate = server.registry, server.gate

    def answer(message: str, **data):
        return envelope({"message": message, **data, "loaded": registry.listing()})

    @app.get("/v1/lora/status")
    async def lora_status(request: Request):
        gate.check(request)
        return envelope(registry.status())

    @app.post("/v1/lora/load")
    async def lora_load(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        path = _name(body, "path", "lora_path")
        if not path:
            raise ProtocolError("give lora_path: an adapter file or folder inside an allowed input folder")
        target = server.inputs.allowed(path, "the adapter", folders=True)
        asked = _name(body, "name", "adapter_name")
        try:
            # read once here, so a file that does not fit this model is refused now, not in every job; on a thread
            # of the pool: the pipeline's own thread may be busy with a job, and the event loop must go on
            adapter = await run_in_threadpool(server.pipe.adapters.check, target, asked)
        except AceStepError as e:
            raise ProtocolError(str(e)) from None
        registry.register(adapter.name, str(target), body.get("scale", 1.0), server.pipe.name)
        extra = {"adapter_name": asked} if asked else {}
        return answer(
            f"{OK} LoRA '{adapter.name}' loaded from {path}",
            lora_path=path,
            **extra,
            name=adapter.name,
            summary=adapter.summary(),
        )

    @app.post("/v1/lora/unload")
    async def lora_unload(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        name = _name(body, "name", "adapter_name")
        if not registry.listing():
            return answer(f"{WARN} No LoRA adapter loaded.")
        registry.remove(name)
        left = registry.status()["active_adapter"]
        if left is None:
            return answer(f"{OK} LoRA unloaded, using base model")
        return answer(f"{OK} Adapter '{name}' removed. Active: {left}")

    @app.post("/v1/lora/toggle")
    async def lora_toggle(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        on = _switch(body.get("use_lora"))
        registry.toggle(on)
        return answer(f"{OK} LoRA {'enabled' if on else 'disabled'}", use_lora=on)

    @app.post("/v1/lora/scale")
    async def lora_scale(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        if body.get("scale") is None:
            low, high = ADAPTER_SCALE
            raise ProtocolError(f"give scale: a number from {low:g} to {high:g} (upstream's range is 0 to 1)")
        asked = _name(body, "name", "adapter_name")
        if not registry.listing():
            return answer(f"{WARN} No LoRA loaded", scale=scale_of(body["scale"], "the LoRA"))
        name = registry.set_scale(asked, body["scale"])
        scale = dict(registry.listing())[name]
        off = "" if registry.use_lora else " (LoRA disabled)"
        extra = {"adapter_name": asked} if asked else {}
        return answer(f"{OK} LoRA scale ({name}): {scale:.2f}{off}", scale=scale, **extra)
