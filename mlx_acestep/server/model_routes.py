"""Model management, upstream's contract (`acestep/api/http/model_service_routes.py` and `reinitialize_route.py` at
6d467e4): `GET /v1/model_inventory` (the DiTs with `supported_task_types` and `is_default`, the planner LMs, which
is loaded), `POST /v1/init {model, init_llm, lm_model_path, slot}` (load a DiT of the same source and make it the
default, as upstream's slot 1) and `POST /v1/reinitialize`.

The planner LM is the one the server started with (`serve --lm`): `init_llm` with it (or naming none) is accepted,
another is refused, naming the one loaded (upstream loads it; here the pipelines are built around theirs).

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

from .http import read_body
from .protocol import ProtocolError, as_bool, as_int, envelope

SLOTS = (1, 2, 3)  # upstream's handler slots; only the first exists here (the others are its extra DiTs)


def model_routes(app, server) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    models, gate = server.models, server.gate

    @app.get("/v1/model_inventory")
    async def model_inventory(request: Request):
        gate.check(request)
        return envelope(await run_in_threadpool(models.inventory))

    @app.post("/v1/init")
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
        lm = _planner(models, as_bool(body.get("init_llm"), False), body.get("lm_model_path"))
        await run_in_threadpool(models.set_default, name)
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

    @app.post("/v1/reinitialize")
    async def reinitialize(request: Request):
        """Upstream reloads what its training routes unloaded; here nothing is unloaded but by the pipelines
        themselves, which load again what a job needs, so there is nothing to reload."""
        body, _ = await read_body(request)
        gate.check(request, body)
        return envelope({"message": "\u2705 Service reinitialized", "reloaded": []})


def _planner(models, init_llm: bool, asked) -> str | None:
    """The planner LM a /v1/init leaves loaded: the server's own; asking for another is refused."""
    if not init_llm:
        return None
    lm = models.pipe.folders.lm
    asked = str(asked or "").strip()
    if lm is None:
        raise ProtocolError("this server runs without a planner LM (start it with serve --lm SIZE)")
    if asked and asked != lm.name:
        raise ProtocolError(
            f"lm_model_path {asked!r}: this server runs the planner {lm.name} (start it with serve --lm SIZE)"
        )
    return lm.name
