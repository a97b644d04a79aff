"""The DiTs a server runs (the request's `model`, the base DiT for the base-only tasks, one resident at a time),
upstream's model routes (`/v1/model_inventory`, `/v1/init`, `/v1/reinitialize`), its legacy task names and several
input folders, on the fixture model (a turbo and a base DiT) served with its source."""

import io

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep
from mlx_acestep.source import ModelSource

TURBO, BASE = "acestep-v15-turbo", "acestep-v15-base"
SONG = {
    "prompt": "slow strings",
    "audio_duration": 5,  # short: the DiT renders 5.12 s at least, the decode follows this
    "batch_size": 1,
    "seed": 9,
    "use_random_seed": False,  # upstream's REST default draws one
    "audio_format": "wav",
}
FEW = {"inference_steps": 2}  # the editing tasks encode their source first: fewer steps keep them quick


@pytest.fixture(scope="module")
def source(converted):
    return ModelSource(converted, lm=None)


@pytest.fixture(scope="module")
def pipe(source):
    return ACEStep.from_pretrained(source=source)


@pytest.fixture(scope="module")
def server(pipe, source, tmp_path_factory, serve):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("models")
    for name in ("daw", "plugin"):  # two clients' own folders
        (root / name).mkdir()
    wave = 0.3 * np.sin(np.arange(48000 * 1) / 48000 * 2 * np.pi * 220)  # short: encoding it is the slow part
    sf.write(str(root / "plugin" / "take.wav"), np.stack([wave, wave], 1), 48000)
    client = serve(make_app(pipe, root / "out", input_dirs=[root / "daw", root / "plugin"], source=source))
    client.root = root
    return client


def _run(client, body) -> tuple[dict, np.ndarray]:
    status, env = client.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = client.wait(env["data"]["task_id"])
    assert state == 1, items
    return items[0], sf.read(io.BytesIO(client.call("GET", items[0]["file"])[1]))[0]


def _inventory(client) -> dict:
    status, env = client.json("GET", "/v1/model_inventory")
    assert status == 200 and env["code"] == 200
    return env["data"]


def test_the_inventory_lists_the_sources_dits_and_planners(server, converted):
    data = _inventory(server)
    dits = sorted(p.name for p in converted.iterdir() if p.name.startswith("acestep-v15-"))  # the folder's own
    assert [m["name"] for m in data["models"]] == dits == [BASE, TURBO]
    models = {m["name"]: m for m in data["models"]}
    assert models[TURBO]["is_default"] and not models[BASE]["is_default"] and data["default_model"] == TURBO
    # upstream's constants.py:82-89: turbo runs no extract / lego / complete
    assert set(models[BASE]["supported_task_types"]) >= {"text2music", "repaint", "cover", "lego", "extract"}
    assert not {"lego", "extract", "complete"} & set(models[TURBO]["supported_task_types"])
    assert data["lm_models"] == [{"name": "acestep-5Hz-lm-0.6B", "is_loaded": False}]
    assert (data["loaded_lm_model"], data["llm_initialized"]) == (None, False)
    health = server.json("GET", "/health")[1]["data"]
    assert (health["status"], health["loaded_model"], health["llm_initialized"]) == ("ok", TURBO, False)


def test_a_task_naming_the_base_dit_runs_on_it_and_one_dit_stays_resident(server, pipe, source, monkeypatch):
    from mlx_acestep.server import models

    monkeypatch.setattr(models, "resident_budget", lambda pipe: 0)  # a machine that holds one DiT's weights at most
    item, audio = _run(server, SONG | {"model": BASE})
    assert item["dit_model"] == BASE
    expected = ACEStep.from_pretrained(source=source.replace(dit=BASE)).generate(
        "slow strings", "[Instrumental]", language="en", duration=5, seed=9, batch_size=1, steps=8
    )  # 8 steps: upstream's REST default on every model
    np.testing.assert_allclose(audio, expected.audio[0], atol=1e-4)
    assert pipe.resident() == []  # the turbo DiT's modules were freed for the base one
    assert {m["name"]: m["is_loaded"] for m in _inventory(server)["models"]} == {BASE: True, TURBO: True}
    item, _ = _run(server, SONG | {"model": f"acestep/{TURBO}"})  # an OpenRouter id
    assert item["dit_model"] == TURBO and pipe.resident() != []
    monkeypatch.setattr(models, "resident_budget", lambda pipe: 2**40)  # one that holds both: nothing is freed
    _run(server, SONG | FEW | {"model": BASE})
    assert pipe.resident() != []


def test_a_base_only_task_on_a_turbo_server_takes_the_base_dit(server):
    take = str(server.root / "plugin" / "take.wav")
    for task in ({"task_type": "lego", "track": "drums"}, {"task_type": "extract", "track": "bass"}):
        item, audio = _run(server, SONG | FEW | task | {"src_audio_path": take})
        assert item["dit_model"] == BASE and audio.shape[1] == 2
    status, env = server.json(
        "POST", "/release_task", SONG | {"task_type": "lego", "model": TURBO, "src_audio_path": take}
    )
    assert status == 400 and "needs a base model" in env["error"]  # named turbo: refused, never silently base


def test_init_makes_a_dit_the_default(server):
    status, env = server.json("POST", "/v1/init", {"model": BASE, "init_llm": False})
    assert status == 200 and env["data"]["loaded_model"] == BASE and env["data"]["message"]
    assert {m["name"] for m in env["data"]["models"] if m["is_default"]} == {BASE}
    try:
        assert _run(server, SONG | FEW)[0]["dit_model"] == BASE
    finally:
        assert server.json("POST", "/v1/init", {"model": TURBO})[0] == 200
    assert _inventory(server)["default_model"] == TURBO
    for body, needle in (
        ({"model": "acestep-v15-sft"}, "not served here"),
        ({"slot": 2}, "Slot 2 is not available"),
        ({"init_llm": True, "lm_model_path": "acestep-5Hz-lm-4B"}, "this server can run acestep-5Hz-lm-0.6B"),
    ):
        status, env = server.json("POST", "/v1/init", body)
        assert status == 400 and needle in env["error"], env
    status, env = server.json("POST", "/v1/reinitialize", {})
    assert status == 200 and env["data"]["message"].endswith("Service reinitialized")


def test_init_loads_the_planner_the_source_has(server):
    """The DAW's init_llm: every DiT's pipeline is built again around the planner, and the planner routes use it."""
    assert server.json("POST", "/format_input", {"prompt": "x"})[0] == 503  # started without one
    status, env = server.json("POST", "/v1/init", {"init_llm": True, "lm_model_path": "acestep-5Hz-lm-0.6B"})
    assert status == 200 and env["data"]["loaded_lm_model"] == "acestep-5Hz-lm-0.6B", env
    data = _inventory(server)
    assert data["llm_initialized"] and data["lm_models"] == [{"name": "acestep-5Hz-lm-0.6B", "is_loaded": True}]
    assert data["default_model"] == TURBO
    assert server.json("POST", "/format_input", {"prompt": "x"})[0] != 503
    assert _run(server, SONG | FEW)[0]["lm_model"] == "acestep-5Hz-lm-0.6B"


def test_legacy_task_names_run_as_upstream_runs_them(server):
    """audio2audio is no task upstream knows: it runs the source as the context's raw latents (cover-nofsq here),
    and without a source plain text2music."""
    take = {"src_audio_path": str(server.root / "plugin" / "take.wav")}
    _, legacy = _run(server, SONG | FEW | take | {"task_type": "audio2audio"})
    _, nofsq = _run(server, SONG | FEW | take | {"task_type": "cover-nofsq"})
    np.testing.assert_array_equal(legacy, nofsq)
    _, legacy = _run(server, SONG | FEW | {"task_type": "audio2audio"})
    _, plain = _run(server, SONG | FEW)
    np.testing.assert_array_equal(legacy, plain)


def test_several_input_folders_and_the_sandbox(server, tmp_path):
    outside = tmp_path / "x.wav"
    outside.write_bytes((server.root / "plugin" / "take.wav").read_bytes())
    status, env = server.json("POST", "/release_task", SONG | {"task_type": "cover", "src_audio_path": str(outside)})
    assert status == 403 and "outside the allowed input folders" in env["error"]
    assert str(server.root / "daw") in env["error"] and str(server.root / "plugin") in env["error"]
    link = server.root / "daw" / "escape.wav"  # a link inside a folder that leads out of every one
    link.symlink_to(outside)
    assert server.json("POST", "/release_task", SONG | {"task_type": "cover", "src_audio_path": str(link)})[0] == 403


def test_an_input_folder_that_is_not_one_is_refused_before_anything_loads(tmp_path):
    from mlx_acestep.errors import AceStepError
    from mlx_acestep.server.config import ServerConfig

    with pytest.raises(AceStepError, match="--input-dir .*missing: not a folder"):
        ServerConfig(tmp_path / "out", input_dirs=[tmp_path, tmp_path / "missing"])


def test_the_active_adapter_stays_with_the_dit_it_was_loaded_for(server, fixtures):
    """Upstream loads an adapter into its primary model: a task on another DiT runs without it."""
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, TURBO, server.root / "daw" / "turbo-style")
    assert server.json("POST", "/v1/lora/load", {"lora_path": str(folder)})[0] == 200
    try:
        assert _run(server, SONG | FEW)[0]["loras"] == [["turbo-style", 1.0]]
        assert _run(server, SONG | FEW | {"model": BASE})[0]["loras"] == []
        named = SONG | FEW | {"model": BASE, "loras": ["turbo-style"]}  # named: the client's choice, on any DiT
        assert _run(server, named)[0]["loras"] == [["turbo-style", 1.0]]
    finally:
        server.json("POST", "/v1/lora/unload", {})
