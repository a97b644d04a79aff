"""The LoRA routes as the acestep.vst3 plugin's LoRA panel drives them (`PluginBackendClient.cpp`: JSON bodies,
`GET /v1/lora/status` after every operation, `data.message` shown), against upstream's contract
(`acestep/api/http/lora_routes.py`), with adapters made as the adapter tests make them."""

import io

import numpy as np
import pytest
import soundfile as sf

from mlx_acestep.pipeline import ACEStep


@pytest.fixture(scope="module")
def pipe(converted):
    return ACEStep.from_pretrained(converted, lm=None)


@pytest.fixture(scope="module")
def plugin(pipe, tmp_path_factory, serve):
    """The server, and the folder the plugin's user keeps adapters in (an input folder beside another)."""
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("lora")
    (root / "loras").mkdir()
    client = serve(make_app(pipe, root / "out", input_dirs=[root / "loras", tmp_path_factory.mktemp("audio")]))
    client.root = root
    return client


def _status(client) -> dict:
    status, env = client.json("GET", "/v1/lora/status")
    assert status == 200 and env["code"] == 200
    return env["data"]


def _operation(client, path, body) -> str:
    """One panel operation as the plugin reads it: HTTP 200, `code` 200, and the message in `data`."""
    status, env = client.json("POST", path, body)
    assert status == 200 and env["code"] == 200, env
    assert isinstance(env["data"]["message"], str) and env["data"]["message"]
    return env["data"]["message"]


def _song(client, seed=5) -> np.ndarray:
    body = {  # the plugin's text mode (startGeneration), with a short song
        "prompt": "warm synth pads",
        "lyrics": "",
        "task_type": "text2music",
        "audio_duration": 5,  # the DiT's 128-frame minimum: a longer song only costs decode time
        "batch_size": 1,
        "audio_format": "wav",
        "thinking": False,
        "use_random_seed": False,
        "seed": seed,
        "inference_steps": 8,
        "guidance_scale": 7.0,
    }
    status, env = client.json("POST", "/release_task", body)
    assert status == 200, env
    state, items = client.wait(env["data"]["task_id"])
    assert state == 1, items
    return sf.read(io.BytesIO(client.call("GET", items[0]["file"])[1]))[0]


def test_the_plugins_lora_panel_sequence(plugin, pipe, fixtures):
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", plugin.root / "loras" / "style")
    empty = _status(plugin)
    assert (empty["lora_loaded"], empty["use_lora"], empty["active_adapter"], empty["adapters"]) == (
        False,
        False,
        None,
        [],
    )
    assert _operation(plugin, "/v1/lora/unload", {}).startswith("\u26a0")  # nothing loaded: a warning, not a fault
    plain = _song(plugin)

    message = _operation(plugin, "/v1/lora/load", {"lora_path": str(folder)})
    assert "style" in message and str(folder) in message
    loaded = _status(plugin)
    assert (loaded["lora_loaded"], loaded["use_lora"], loaded["lora_scale"]) == (True, True, 1.0)
    assert (loaded["active_adapter"], loaded["adapters"]) == ("style", ["style"])

    assert "0.50" in _operation(plugin, "/v1/lora/scale", {"scale": 0.5, "adapter_name": "style"})
    assert _status(plugin)["lora_scale"] == 0.5
    assert "disabled" in _operation(plugin, "/v1/lora/toggle", {"use_lora": False})
    off = _status(plugin)
    assert (off["lora_loaded"], off["use_lora"]) == (True, False)
    np.testing.assert_array_equal(_song(plugin), plain)  # toggled off: the model alone

    assert "enabled" in _operation(plugin, "/v1/lora/toggle", {"use_lora": True})
    assert _status(plugin)["use_lora"] is True
    with_adapter = _song(plugin)
    # the independent expectation: the library's own per-call adapter at the scale the panel set
    expected = pipe.generate(
        "warm synth pads",
        "[Instrumental]",  # what upstream makes of empty lyrics
        language="en",
        duration=5,
        seed=5,
        steps=8,
        batch_size=1,
        thinking=False,
        loras=[(str(folder), 0.5)],
    )
    np.testing.assert_allclose(with_adapter, expected.audio[0], atol=1e-4)  # the WAV's 16-bit rounding
    assert np.abs(with_adapter - plain).max() > 1e-3

    assert "unloaded" in _operation(plugin, "/v1/lora/unload", {})
    gone = _status(plugin)
    assert (gone["lora_loaded"], gone["use_lora"], gone["adapters"]) == (False, False, [])
    np.testing.assert_array_equal(_song(plugin), plain)


def test_the_panels_refusals(plugin, fixtures):
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", plugin.root / "loras" / "refused", seed=1)
    status, env = plugin.json("POST", "/v1/lora/toggle", {"use_lora": True})
    assert status == 400 and "No LoRA adapter loaded" in env["error"]  # upstream: the same words, code 400
    assert plugin.json("POST", "/v1/lora/toggle", {})[0] == 400  # use_lora is required, as upstream
    assert plugin.json("POST", "/v1/lora/toggle", {"use_lora": "maybe"})[0] == 400  # never read as off
    assert plugin.json("POST", "/v1/lora/scale", {"scale": "loud"})[0] == 400  # nothing loaded, still checked
    assert _operation(plugin, "/v1/lora/scale", {"scale": 0.3}).startswith("\u26a0")  # nothing to scale: a warning
    status, env = plugin.json("POST", "/v1/lora/load", {"lora_path": "/etc"})
    assert status == 403 and "outside the allowed input folders" in env["error"]
    assert plugin.json("POST", "/v1/lora/load", {})[0] == 400
    try:
        _operation(plugin, "/v1/lora/load", {"lora_path": str(folder), "adapter_name": "a"})
        _operation(plugin, "/v1/lora/load", {"lora_path": str(folder), "adapter_name": "b"})
        assert plugin.json("POST", "/v1/lora/load", {"lora_path": str(folder), "adapter_name": "a"})[0] == 400
        state = _status(plugin)
        assert (state["active_adapter"], state["adapters"]) == ("b", ["a", "b"])  # the last loaded is active
        _operation(plugin, "/v1/lora/scale", {"scale": 0.25})  # no name: the active adapter
        assert _status(plugin)["scales"] == {"a": 1.0, "b": 0.25}
        _operation(plugin, "/v1/lora/scale", {"scale": 0.75, "adapter_name": "a"})  # a name makes it active
        assert (_status(plugin)["active_adapter"], _status(plugin)["lora_scale"]) == ("a", 0.75)
        assert plugin.json("POST", "/v1/lora/scale", {"scale": 0.5, "adapter_name": "ghost"})[0] == 400
        assert plugin.json("POST", "/v1/lora/scale", {"scale": -1})[0] == 400
        assert "Active: b" in _operation(plugin, "/v1/lora/unload", {"adapter_name": "a"})  # our extension: one
    finally:
        plugin.json("POST", "/v1/lora/unload", {})
    assert _status(plugin)["adapters"] == []
