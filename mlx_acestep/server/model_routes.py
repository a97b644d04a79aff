"""Model management, upstream's contract (`acestep/api/http/model_service_routes.py` and `reinitialize_route.py` at
6d467e4): `GET /v1/model_inventory` (the DiTs with `supported_task_types` and `is_default`, the planner LMs, which
is loaded), `POST /v1/init {model, init_llm, lm_model_path, slot}` (load a DiT of the same source and make it the
default, as upstream's slot 1) and `POST /v1/reinitialize`.

`init_llm` with an `lm_model_path` (`acestep-5Hz-lm-1.7B`) of the same source builds every DiT's pipeline again
around that planner (without one: the one loaded, else the model's own).

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

from pathlib import Path

from .http import read_body
from .protocol import ProtocolError, as_bool, as_int, envelope
from .schema import ANY, TEXT, named, request_body

SLOTS = (1, 2, 3)  # upstream's handler slots; only the first exists here (the others are its extra DiTs)


INIT = request_body(named("model", "lm_model_path", "ai_token", schema=TEXT) | named("init_llm", "slot", schema=ANY))


def model_routes(app, server) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    models, gate = server.models, server.gate

    @app.get("/v1/model_inventory")
    async def model_inventory(request: Request):
        gate.check(request)
        return envelope(await run_in_threadpool(models.inventory))

    @app.post("/v1/init", openapi_extra=INIT)
    async def init(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        slot = as_int(body.get("slot")) if body.get("slot") not in (None, "") else 1
        if slot not in SLOTS:
            raise ProtocolError(f"slot must be 1, 2 or 3, got {body.get('slot')!r}")
        if slot != 1:
            raise ProtocolError(
                f"Slot {slot} is not available: this server loads the DiT a task names on demand (give model)"
            )
        name = str(body.get("model") or "").strip().removeprefix("acestep/") or models.default
        await run_in_threadpool(models.set_default, name)
        lm = None
        if as_bool(body.get("init_llm"), False):
            asked = Path(str(body.get("lm_model_path") or "").strip()).name  # upstream takes a name or a path
            lm = await run_in_threadpool(models.set_planner, asked or None)
        inventory = models.inventory()
        return envelope(
            {
                "message": "Model initialization completed",
                "slot": 1,
                "loaded_model": name,
                "loaded_lm_model": lm,
                "models": inventory["models"],
                "lm_models": inventory["lm_models"],
                "llm_initialized": inventory["llm_initialized"],
            }
        )

    @app.post("/v1/reinitialize", openapi_extra=request_body({"ai_token": TEXT}))
    async def reinitialize(request: Request):
        """Upstream reloads what its training routes unloaded; here nothing is unloaded but by the pipelines
        themselves, which load again what a job needs, so there is nothing to reload."""
        body, _ = await read_body(request)
        gate.check(request, body)
        return envelope({"message": "\u2705 Service reinitialized", "reloaded": []})
