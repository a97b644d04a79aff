"""The planner's writing over REST with the fixture model and its tiny planner: a task's `sample_mode` /
`sample_query` / `use_format` as upstream's API runs them, and the routes `/format_input`, `/v1/create_sample` and
`/create_random_sample` (upstream: `acestep/api/llm_generation_inputs.py`, `api/http/sample_format_routes.py`)."""

import pytest

from mlx_acestep.pipeline import ACEStep, ModelFolders
from mlx_acestep.planner import tasks
from mlx_acestep.server.protocol import request_fields
from mlx_acestep.server.sample_mode import query_hints


@pytest.fixture(scope="module")
def server(converted, serve, tmp_path_factory):
    from mlx_acestep.server import make_app

    c = converted
    folders = ModelFolders(c / "Qwen3-Embedding-0.6B", c / "acestep-v15-turbo", c / "vae", c / "acestep-5Hz-lm-0.6B")
    return serve(make_app(ACEStep(folders), tmp_path_factory.mktemp("served") / "out"))


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TOKENS", 120)  # the tiny LM rambles to upstream's 3500 tokens otherwise


def test_sample_mode_writes_the_song_first_and_the_result_shows_it(server):
    body = {"sample_mode": True, "sample_query": "a calm french song", "prompt": "ignored", "bpm": 70, "seed": 2}
    status, env = server.json("POST", "/release_task", {**body, "audio_duration": 5, "batch_size": 1})
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1, items
    assert items[0]["prompt"] not in ("", "ignored") and items[0]["metas"]["prompt"] == items[0]["prompt"]


def test_the_task_fields_map_as_upstreams():
    fields, _ = request_fields({"sample_query": "Pure music in Korean", "prompt": "x", "bpm": 70}, "turbo", {})
    assert fields["sample"] == "Pure music in Korean" and fields["caption"] == "" and "bpm" not in fields
    assert fields["instrumental"] is True and fields["language"] == "ko"  # upstream's hints in the query
    fields, _ = request_fields({"sample_mode": "true", "vocal_language": "de"}, "turbo", {})
    assert fields["sample"] == "" and fields["language"] == "de" and fields["instrumental"] is False
    fields, _ = request_fields({"prompt": "x", "format": True, "bpm": 70}, "turbo", {})
    assert fields["format"] is True and fields["bpm"] == 70 and "sample" not in fields


@pytest.mark.parametrize(
    "query, hints",
    [("", (None, False)), ("a solo", (None, True)), ("english ballad", ("en", False)), ("fr.", ("fr", False))],
)
def test_query_hints(query, hints):
    assert query_hints(query) == hints


def test_format_input_answers_with_the_tidied_draft(server):
    body = {"prompt": "lofi", "lyrics": "[verse]\nla", "param_obj": '{"bpm": 88, "key": "c minor", "duration": 0}'}
    status, env = server.json("POST", "/format_input", body)
    assert status == 200 and env["code"] == 200, env
    data = env["data"]
    assert set(data) == {"caption", "lyrics", "bpm", "key_scale", "time_signature", "duration", "vocal_language"}
    assert data["bpm"] == 88 and data["key_scale"] == "C minor" and data["caption"]
    status, env = server.json("POST", "/format_input", {"prompt": "x", "param_obj": '{"key": "H major"}'})
    assert status == 200 and env["code"] == 500 and "unknown key" in env["error"]  # upstream's failure envelope


def test_create_sample_and_a_random_one(server):
    status, env = server.json("POST", "/v1/create_sample", {"query": "a folk song", "vocal_language": "fr"})
    assert status == 200 and env["code"] == 200, env
    assert set(env["data"]) == {"caption", "lyrics", "bpm", "keyscale", "duration", "timesignature", "vocal_language"}
    assert env["data"]["vocal_language"] == "fr"
    status, env = server.json("POST", "/create_random_sample", {})
    assert status == 200 and set(env["data"]) == {"description", "instrumental", "vocal_language"}
    status, env = server.json("POST", "/create_random_sample", {"sample_type": "custom_mode"})
    assert status == 200 and env["data"]["think"] is True and "timesignature" in env["data"]


def test_without_a_planner_the_routes_say_so(converted, serve, tmp_path):
    from mlx_acestep.server import make_app

    c = converted
    plain = ACEStep(ModelFolders(c / "Qwen3-Embedding-0.6B", c / "acestep-v15-turbo", c / "vae"))
    client = serve(make_app(plain, tmp_path / "out"))
    for path in ("/format_input", "/v1/create_sample", "/create_random_sample"):
        status, env = client.json("POST", path, {"prompt": "x"})
        assert status == 503 and "needs the planner LM" in env["error"]
    for body in ({"sample_mode": True}, {"prompt": "x", "use_format": True}):
        status, env = client.json("POST", "/release_task", body)
        assert status == 400 and "needs the planner LM" in env["error"]
