"""`mlx-acestep serve`'s API with the fixture model, through the shared client (conftest `serve`)."""

import io
import json
import threading
import urllib.request
import uuid

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, patch_generation, run_cli

KEY = "s3cret"


@pytest.fixture(scope="module")
def server(pipe, tmp_path_factory, serve):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("served")
    (root / "inputs").mkdir()
    client = serve(make_app(pipe, root / "out", api_key=KEY, queue_size=2, input_dirs=root / "inputs"), KEY)
    client.root = root
    return client


def test_health_and_auth(server):
    assert server.json("GET", "/health", key=None)[0] == 200
    status, body = server.json("POST", "/release_task", {"prompt": "x"}, key=None)
    assert status == 401 and body["detail"] == "Missing ai_token or Authorization header"
    assert server.json("POST", "/release_task", {"prompt": "x", "ai_token": "wrong"})[0] == 401
    assert server.json("GET", "/v1/stats", key="nope")[0] == 401


def test_submit_poll_download(server):
    status, env = server.json(
        "POST",
        "/release_task",
        {
            "caption": "soft rain",
            "audio_duration": 5,
            "batch_size": 1,
            "seed": 3,
            "use_random_seed": False,  # upstream's default (true) draws a fresh seed whatever `seed` says
            "audio_format": "wav",
            "metas": {"bpm": 90},
        },
    )
    assert status == 200 and env["code"] == 200 and env["data"]["status"] == "queued"
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1 and len(items) == 1 and items[0]["seed_value"] == "3" and items[0]["metas"]["bpm"] == 90
    status, audio, headers = server.call("GET", items[0]["file"])
    assert status == 200 and headers["content-type"] == "audio/wav"
    wave, rate = sf.read(io.BytesIO(audio))
    assert rate == 48000 and wave.shape == (240000, 2)


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"prompt": "x", "audio_duration": 5000}, 400, "audio_duration must be between 0.1 and 600"),
        ({"prompt": "x", "task_type": "remix"}, 400, "remix"),
        ({"prompt": "x", "sampler_mode": "heun", "infer_method": "sde"}, 400, "the heun sampler_mode runs the ODE"),
        ({"prompt": "x", "batch_size": 0}, 400, "batch_size must be between 1 and 8"),
        (
            {"prompt": "x", "task_type": "cover", "src_audio_path": "/etc/passwd"},
            403,
            "outside the allowed input folder",
        ),
        ({"prompt": "x", "sample_mode": True}, 400, "needs the planner LM"),
        (
            {"prompt": "x", "task_type": "complete", "tracks": 5},
            400,
            "tracks must be a list or a comma-separated string",
        ),
        # a model the server does not run is refused, naming the one it runs (never served by another)
        ({"prompt": "x", "model": "acestep-v15-base"}, 400, "this server runs acestep-v15-turbo"),
        ({"prompt": "x", "param_obj": {"dit_model": "acestep/acestep-v15-sft"}}, 400, "'acestep/acestep-v15-sft'"),
        ({"prompt": "x", "loras": ["ghost"]}, 400, "no adapter named 'ghost' is loaded"),
        ({"prompt": "x", "loras": 3}, 400, "loras must be a list of adapter names"),
    ],
)
def test_bad_requests_get_the_envelope_and_a_4xx(server, body, status, needle):
    got, env = server.json("POST", "/release_task", body)
    assert got == status and env["code"] == status and needle in env["error"] and env["data"] is None


def test_malformed_json_is_a_400(server):
    status, env = server.json("POST", "/release_task", raw=b"{not json")
    assert status == 400 and "not valid JSON" in env["error"]


def test_audio_route_serves_only_the_output_folder(server, tmp_path):
    outside = tmp_path / "secret.wav"
    sf.write(str(outside), np.zeros((10, 2)), 48000)
    for path in (str(outside), str(server.root / "out" / ".." / "inputs" / "x.wav"), "/etc/passwd"):
        assert server.call("GET", "/v1/audio?path=" + urllib.request.quote(path, safe=""))[0] == 403
    assert server.call("GET", "/v1/audio?path=" + urllib.request.quote(str(server.root / "out" / "none.wav")))[0] == 404


def test_a_full_queue_answers_429_and_every_job_finishes(server):
    body = {"caption": "drums", "audio_duration": 5, "batch_size": 1}
    answers = [server.json("POST", "/release_task", body) for _ in range(4)]  # one runs, two wait, the rest: 429
    statuses = [s for s, _ in answers]
    assert 429 in statuses and statuses[0] == 200
    busy = next(env for s, env in answers if s == 429)
    assert busy["error"] == busy["detail"] == "Server busy: queue is full"  # upstream's clients read `detail`
    for s, env in answers:
        if s == 200:
            assert server.wait(env["data"]["task_id"])[0] == 1


def test_two_clients_at_once_get_their_own_songs(server):
    results = {}

    def client(seed):
        _, env = server.json(
            "POST",
            "/release_task",
            {"caption": "strings", "audio_duration": 5, "batch_size": 1, "seed": seed, "use_random_seed": "false"},
        )
        results[seed] = server.wait(env["data"]["task_id"])

    threads = [threading.Thread(target=client, args=(s,)) for s in (11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[s][1][0]["seed_value"] for s in (11, 12)] == ["11", "12"]
    assert results[11][1][0]["file"] != results[12][1][0]["file"]


def test_a_failing_job_is_recorded_and_the_server_goes_on(server, pipe, monkeypatch):
    bad = server.root / "inputs" / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    status, env = server.json(
        "POST", "/release_task", {"caption": "x", "task_type": "cover", "src_audio_path": str(bad)}
    )
    assert status == 400 and "broken.wav" in env["error"]  # an unreadable source is refused at submission

    def wrap(real):
        def generate(request, **kwargs):  # a failure the request's checks cannot see coming
            if request.caption == "boom":
                raise RuntimeError("the accelerator fell over")
            return real(request, **kwargs)

        return generate

    patch_generation(monkeypatch, pipe, wrap)
    _, env = server.json("POST", "/release_task", {"caption": "boom", "audio_duration": 5, "batch_size": 1})
    state, items = server.wait(env["data"]["task_id"])
    assert state == 2 and "the accelerator fell over" in items[0]["error"]
    _, env = server.json("POST", "/release_task", {"caption": "after", "audio_duration": 5, "batch_size": 1})
    assert server.wait(env["data"]["task_id"])[0] == 1


def test_multipart_upload_and_unknown_ids(server):
    wave = (0.3 * np.sin(np.arange(48000 * 1) / 48000 * 2 * np.pi * 220)).astype(np.float32)  # short: it is encoded
    buf = io.BytesIO()
    sf.write(buf, np.stack([wave, wave], 1), 48000, format="WAV")
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (("prompt", "jazz"), ("task_type", "cover"), ("batch_size", "1"))
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="src_audio"; filename="s.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\n".encode()
        + buf.getvalue()
        + b"\r\n"
    )
    raw = b"".join(parts) + f"--{boundary}--\r\n".encode()
    status, env = server.json(
        "POST", "/release_task", raw=raw, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert status == 200, env
    state, items = server.wait(env["data"]["task_id"])
    assert state == 1
    _, env = server.json("POST", "/query_result", {"task_id_list": ["no-such-task"]})
    [entry] = env["data"]  # failed, saying why, never "running" forever (the reference answers 0)
    assert entry["status"] == 2 and entry["progress_text"] == "unknown task"
    assert "unknown task" in json.loads(entry["result"])[0]["error"]
    # a route that takes no audio never writes an upload to a temporary file (they were left behind)
    import glob
    import tempfile

    before = set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*"))
    status, _ = server.json("POST", "/query_result", raw=raw, content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 200 and set(glob.glob(f"{tempfile.gettempdir()}/mlx-acestep-upload-*")) <= before
    stats = server.json("GET", "/v1/stats")[1]["data"]
    assert stats["jobs"]["succeeded"] >= 1 and stats["queue_maxsize"] == 2


def test_lora_routes(server, pipe, fixtures):
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", server.root / "inputs" / "style")
    status, env = server.json("POST", "/v1/lora/load", {"path": str(folder), "scale": 0.5})
    assert status == 200 and env["data"]["loaded"] == [["style", 0.5]]
    assert server.json("POST", "/v1/lora/scale", {"name": "style", "scale": 1.0})[1]["data"]["loaded"] == [
        ["style", 1.0]
    ]
    assert server.json("POST", "/v1/lora/load", {"path": "/etc"})[0] == 403
    assert server.json("POST", "/v1/lora/scale", {"name": "ghost", "scale": 1.0})[0] == 400
    assert server.json("POST", "/v1/lora/unload", {})[1]["data"]["loaded"] == []


def test_a_queued_job_keeps_the_adapters_it_was_submitted_with(server, pipe, fixtures, monkeypatch):
    """Naming an adapter changes the tasks submitted after it, never one already queued (the routes used to
    change the pipeline's adapters, under the queue)."""
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", server.root / "inputs" / "keep")
    gate = threading.Event()

    def wrap(real):
        def held(request, **kwargs):  # the first job holds the runner, so the next one stays queued
            gate.wait(120)
            return real(request, **kwargs)

        return held

    patch_generation(monkeypatch, pipe, wrap)
    body = {"caption": "soft rain", "audio_duration": 5, "batch_size": 1, "seed": 4, "use_random_seed": False}
    body["audio_format"] = "wav"
    # the server's own model, as an OpenRouter id: accepted
    first = server.json("POST", "/release_task", body | {"model": "acestep/acestep-v15-turbo"})[1]["data"]["task_id"]
    queued = server.json("POST", "/release_task", body)[1]["data"]["task_id"]
    status, env = server.json("POST", "/v1/lora/load", {"path": str(folder), "scale": 1.0})
    assert status == 200 and env["data"]["loaded"] == [["keep", 1.0]], env
    gate.set()
    try:
        results = {name: server.wait(task) for name, task in (("first", first), ("queued", queued))}
        after = server.json("POST", "/release_task", body)[1]["data"]["task_id"]
        opted_out = server.json("POST", "/release_task", body | {"loras": []})[1]["data"]["task_id"]
        results |= {name: server.wait(task) for name, task in (("after", after), ("opted_out", opted_out))}
    finally:
        server.json("POST", "/v1/lora/unload", {})
    assert all(state == 1 for state, _ in results.values())
    items = {name: items[0] for name, (_, items) in results.items()}
    assert [items[n]["loras"] for n in ("first", "queued", "after", "opted_out")] == [[], [], [["keep", 1.0]], []]
    sidecar = {
        n: json.loads(next((server.root / "out").glob(f"{t}*.json")).read_text())
        for n, t in (("queued", queued), ("after", after))
    }
    assert sidecar["queued"]["loras"] == [] and sidecar["queued"]["task_id"] == queued
    assert sidecar["after"]["loras"] == [["keep", 1.0]]
    waves = {n: sf.read(io.BytesIO(server.call("GET", items[n]["file"])[1]))[0] for n in items}
    np.testing.assert_array_equal(waves["queued"], waves["first"])  # no adapter in the job queued before
    np.testing.assert_array_equal(waves["opted_out"], waves["first"])
    assert np.abs(waves["after"] - waves["first"]).max() > 1e-3  # the adapter is applied to the later one


def test_a_task_names_its_adapters_and_their_scales(server, fixtures):
    from test_adapters_pipeline import make_adapter

    folder, _ = make_adapter(fixtures, "acestep-v15-turbo", server.root / "inputs" / "pick", seed=2)
    try:
        assert server.json("POST", "/v1/lora/load", {"path": str(folder), "name": "a", "scale": 0.5})[0] == 200
        assert server.json("POST", "/v1/lora/load", {"path": str(folder), "name": "a"})[0] == 400  # taken
        assert server.json("POST", "/v1/lora/load", {"path": str(folder), "name": "b", "scale": "0.25"})[0] == 200
        assert server.json("POST", "/v1/lora/scale", {"name": "b", "scale": -1})[0] == 400
        body = {"caption": "x", "audio_duration": 5, "batch_size": 1}
        status, env = server.json("POST", "/release_task", body | {"loras": [{"name": "b", "scale": 2.0}, "a"]})
        assert status == 200
        _, items = server.wait(env["data"]["task_id"])
        assert items[0]["loras"] == [["b", 2.0], ["a", 0.5]]
        _, env = server.json("POST", "/release_task", body | {"lora_name": "b"})
        assert server.wait(env["data"]["task_id"])[1][0]["loras"] == [["b", 0.25]]
    finally:
        assert server.json("POST", "/v1/lora/unload", {})[1]["data"]["loaded"] == []


def test_a_keep_hours_that_would_delete_results_at_once_is_refused(tmp_path):
    done = run_cli(  # a fresh process: were the value taken, an in-process server would block the suite
        ["serve", "-m", "tiny", "--keep-hours", "0"],
        tmp_path,
        env={"MLX_ACESTEP_CACHE": str(tmp_path / "cache")},
        fresh_process=True,
        timeout=120,
    )
    assert_one_line_error(done, "--keep-hours must be a positive number")
    assert not (tmp_path / "cache").exists()  # refused before any model is built


def test_upstreams_dcw_fields_reach_the_request():
    """PR #1282's REST fields; left out, the model's default (on for turbo) applies, as upstream."""
    from mlx_acestep.server.protocol import request_fields

    body = {"prompt": "x", "dcw_enabled": "false", "dcw_mode": "low", "dcw_scaler": 0.07, "dcwHighScaler": "0.03"}
    fields, _ = request_fields(body, "turbo", {})
    assert (fields["dcw"], fields["dcw_mode"], fields["dcw_scaler"], fields["dcw_high_scaler"]) == (
        False,
        "low",
        0.07,
        0.03,
    )
    assert "dcw" not in request_fields({"prompt": "x"}, "turbo", {})[0]


def test_upstreams_chunk_mask_mode_reaches_the_request():
    from mlx_acestep.server.protocol import request_fields

    body = {"prompt": "x", "task_type": "repaint", "chunk_mask_mode": "explicit"}
    assert request_fields(body, "turbo", {})[0]["chunk_mask_mode"] == "explicit"
    assert "chunk_mask_mode" not in request_fields({"prompt": "x"}, "turbo", {})[0]  # absent: auto, as upstream


def test_turbo_takes_upstreams_inference_steps_clamped_to_8_as_upstreams_service():
    from mlx_acestep.server.protocol import request_fields

    assert request_fields({"prompt": "x", "inference_steps": 5}, "turbo", {})[0]["steps"] == 5
    assert request_fields({"prompt": "x", "inference_steps": 50}, "turbo", {})[0]["steps"] == 8
    assert request_fields({"prompt": "x", "inference_steps": 0}, "turbo", {})[0]["steps"] == 1
    assert request_fields({"prompt": "x"}, "turbo", {})[0]["steps"] == 8  # upstream's REST default, every model
    assert "guidance" not in request_fields({"prompt": "x", "guidance_scale": 7}, "turbo", {})[0]


def test_a_malformed_number_is_refused_naming_the_rest_field_never_dropped_for_the_default():
    from mlx_acestep.errors import RequestError
    from mlx_acestep.pipeline.request import GenerationRequest
    from mlx_acestep.server.protocol import REST_NAMES, request_fields

    for field, value, message in (
        ("inference_steps", "12.5", "inference_steps must be a whole number, got '12.5'"),
        ("velocity_ema_factor", "abc", "velocity_ema_factor must be a number, got 'abc'"),
        ("dcw_scaler", "x", "dcw_scaler must be a number, got 'x'"),
        ("bpm", "fast", "bpm must be a whole number, got 'fast'"),
    ):
        fields, _ = request_fields({"prompt": "x", field: value}, "turbo", {})
        with pytest.raises(RequestError) as info:
            GenerationRequest(**fields)
        assert info.value.render(REST_NAMES) == message
    body = {"prompt": "x", "chunk_mask_mode": "explicit"}  # clients send it with every task: text2music ignores it
    assert "chunk_mask_mode" not in request_fields(body, "turbo", {})[0]
