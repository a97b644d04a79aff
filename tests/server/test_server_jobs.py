"""How `mlx-acestep serve` treats a request's body and its jobs, through the shared client (conftest `serve`): the
key before the body and the size limits, one progress figure, cancel, and the job records a restart reads back."""

import io
import json
import tempfile
import threading
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
from helpers import patch_generation

KEY = "s3cret"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(pipe, tmp_path_factory, serve):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("jobs")
    client = serve(make_app(pipe, root / "out", api_key=KEY, max_request_mb=1, max_upload_mb=2), KEY)
    client.root = root
    return client


@pytest.fixture
def held(pipe, monkeypatch):
    """The pipeline waits for `held.set()` before each generation (so a job stays running, the next queued)."""
    gate = threading.Event()

    def wrap(real):
        def generate(request, **kwargs):
            assert gate.wait(120)
            return real(request, **kwargs)

        return generate

    patch_generation(monkeypatch, pipe, wrap)
    yield gate
    gate.set()


def multipart(fields=(), files=()):
    """(body, content type) of a form: `fields` (name, text) first, then `files` (name, filename, bytes)."""
    boundary = uuid.uuid4().hex
    out = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    for name, filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'
        out.append(head.encode() + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wav_bytes(seconds=1.0):
    wave = (0.3 * np.sin(np.arange(int(48000 * seconds)) / 48000 * 2 * np.pi * 220)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([wave, wave], 1), 48000, format="WAV")
    return buf.getvalue()


def chunks(data: bytes, size=256 * 1024):
    """The body sent in pieces without a Content-Length, as a streaming client sends it."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def entry(server, task_id):
    _, env = server.json("POST", "/query_result", {"task_id_list": [task_id]})
    item = env["data"][0]
    return item, json.loads(item["result"])[0]


def test_a_big_upload_without_the_key_is_refused_before_anything_is_written(server, tmp_path, monkeypatch):
    """A 500 MB upload without a key used to be spooled to disk (>= 338 MB) before the 401."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))  # the temporary folder is a file: a write there fails
    body, kind = multipart([("prompt", "x"), ("task_type", "cover")], [("src_audio", "big.wav", b"\0" * (8 * MB))])
    headers = {"Content-Type": kind}
    for content, extra in ((body, {}), (chunks(body), {}), (body, {"Authorization": "Bearer wrong"})):
        r = server.client.post("/release_task", content=content, headers=headers | extra)
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == ("Invalid API key" if extra else "Missing ai_token or Authorization header")
    small, kind = multipart([("ai_token", "wrong")], [("src_audio", "s.wav", b"\0" * 1000)])
    r = server.client.post("/release_task", content=small, headers={"Content-Type": kind})
    assert r.status_code == 401 and r.json()["detail"] == "Invalid ai_token"
    big_json = json.dumps({"prompt": "x" * (2 * MB)}).encode()
    assert server.call("POST", "/release_task", raw=big_json, key=None)[0] == 401  # unknown caller: the key's 401
    assert blocked.read_text() == ""


def test_a_body_over_the_limits_is_a_413_and_leaves_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    body, kind = multipart([("prompt", "x"), ("task_type", "cover")], [("src_audio", "s.wav", b"\0" * (3 * MB))])
    for content in (body, chunks(body)):
        status, env = server.json("POST", "/release_task", raw=content, content_type=kind)
        assert status == 413 and "'src_audio' is over this server's limit of 2 MB" in env["error"], env
    status, env = server.json("POST", "/release_task", {"prompt": "x" * (2 * MB)})
    assert status == 413 and "the request is over this server's limit of 1 MB" in env["error"]
    fields, kind = multipart([("prompt", "x" * (MB // 2)), ("lyrics", "y" * (MB // 2 + 10))])
    assert server.json("POST", "/release_task", raw=fields, content_type=kind)[0] == 413
    assert list(tmp_path.iterdir()) == []


def test_an_accepted_upload_is_written_once_and_deleted_with_its_job(server, held, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    audio = wav_bytes()
    fields = [("ai_token", KEY), ("prompt", "jazz"), ("task_type", "cover"), ("batch_size", "1")]
    body, kind = multipart(fields, [("src_audio", "take.wav", audio)])
    status, env = server.json("POST", "/release_task", raw=chunks(body), content_type=kind, key=None)
    assert status == 200, env
    [upload] = tmp_path.iterdir()  # the job's one copy, and nothing else (no spooled copy beside it)
    assert upload.name.startswith("mlx-acestep-upload-") and upload.suffix == ".wav"
    assert upload.read_bytes() == audio
    held.set()
    assert server.wait(env["data"]["task_id"])[0] == 1
    assert list(tmp_path.iterdir()) == []


def test_progress_is_one_figure_that_never_goes_back(server, pipe, monkeypatch):
    seen, task = [], {}
    started = threading.Event()

    def wrap(real):
        def generate(request, callback=None, **kwargs):
            assert started.wait(60)

            def spy(p):  # what a client polling at this very step is told
                keep = callback(p)
                item, first = entry(server, task["id"])
                seen.append((p.phase, item["progress_text"], first["progress"], first["stage"]))
                return keep

            return real(request, callback=spy, **kwargs)

        return generate

    patch_generation(monkeypatch, pipe, wrap)
    _, env = server.json("POST", "/release_task", {"prompt": "x", "audio_duration": 5, "batch_size": 1})
    task["id"] = env["data"]["task_id"]
    started.set()
    assert server.wait(task["id"])[0] == 1
    figures = [figure for _, _, figure, _ in seen]
    assert figures == sorted(figures) and 0 <= figures[0] and figures[-1] < 1, seen
    assert {"text", "condition", "dit", "vae"} <= {phase for phase, *_ in seen}
    for phase, text, figure, stage in seen:
        assert stage == phase and text.startswith(f"{phase} ") and text.endswith(f"{figure:.0%}"), (phase, text)
    item, first = entry(server, task["id"])
    assert (item["progress_text"], first["progress"], first["stage"]) == ("succeeded", 1.0, "succeeded")


def test_a_cancelled_job_says_cancelled(server, held):
    body = {"prompt": "x", "audio_duration": 5, "batch_size": 1}
    running = server.json("POST", "/release_task", body)[1]["data"]["task_id"]
    waiting = server.json("POST", "/release_task", body)[1]["data"]["task_id"]
    for task in (waiting, running):
        assert server.json("POST", "/cancel_task", {"task_id": task})[1]["data"]["cancelled"] is True
    held.set()
    for task, error in ((running, "cancelled during "), (waiting, "cancelled before it started")):
        state, [item] = server.wait(task)
        assert state == 2 and item["stage"] == "cancelled" and item["error"].startswith(error), item
        assert item["progress"] < 1
        assert entry(server, task)[0]["progress_text"] == "cancelled"
    assert server.json("POST", "/cancel_task", {"task_id": running})[1]["data"]["cancelled"] is False


def test_a_restarted_server_answers_for_the_jobs_of_the_last(pipe, serve, held, tmp_path):
    """A new server on the same output folder reads the records: a finished job's result, an interrupted one's
    reason; an expired one is forgotten with its files; an unreadable record is skipped."""
    from mlx_acestep.server import make_app

    first = serve(make_app(pipe, tmp_path / "out"))
    body = {"prompt": "x", "audio_duration": 5, "batch_size": 1, "seed": 5, "audio_format": "wav"}
    held.set()
    done = first.json("POST", "/release_task", body)[1]["data"]["task_id"]
    _, before = first.wait(done)
    held.clear()
    running = first.json("POST", "/release_task", body)[1]["data"]["task_id"]
    waiting = first.json("POST", "/release_task", body)[1]["data"]["task_id"]
    while entry(first, running)[1]["stage"] != "running":  # its record says so before it is held
        time.sleep(0.05)
    (tmp_path / "out" / "jobs" / f"{uuid.uuid4()}.json").write_text("{cut short")

    second = serve(make_app(pipe, tmp_path / "out"))
    state, after = second.wait(done)
    assert state == 1 and after == before and second.call("GET", after[0]["file"])[0] == 200
    for task, was in ((running, "running"), (waiting, "waiting")):
        state, [item] = second.wait(task)
        assert state == 2 and item["stage"] == "interrupted", item
        assert item["error"] == f"interrupted: the server stopped while this job was {was}; submit it again"
    assert entry(second, str(uuid.uuid4()))[0]["progress_text"] == "unknown task"

    record = tmp_path / "out" / "jobs" / f"{done}.json"
    saved = json.loads(record.read_text())
    record.write_text(json.dumps(saved | {"created": time.time() - 2 * 3600}))
    files = sorted((tmp_path / "out").glob(f"{done}*"))
    assert [f.suffix for f in files] == [".json", ".wav"]
    third = serve(make_app(pipe, tmp_path / "out", keep_hours=1))
    assert entry(third, done)[0]["progress_text"] == "unknown task"
    assert not record.exists() and not any(f.exists() for f in files)


def test_a_tasks_events_follow_it_to_its_result(server, held):
    """The extension's Server-Sent Events: progress events, never going back, then the result /query_result gives."""
    _, env = server.json("POST", "/release_task", {"prompt": "x", "audio_duration": 5, "batch_size": 1})
    task = env["data"]["task_id"]
    assert server.call("GET", "/v1/tasks/nope/events")[0] == 404
    assert server.call("GET", f"/v1/tasks/{task}/events", key=None)[0] == 401
    threading.Timer(0.5, held.set).start()
    r = server.client.get(f"/v1/tasks/{task}/events?ai_token={KEY}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in r.text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    data = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names[-1] == "result" and set(names[:-1]) == {"progress"} and len(names) > 2, names
    figures = [d["progress"] for d in data[:-1]]
    assert figures == sorted(figures) and data[0]["stage"] in ("queued", "running")
    _, polled = server.json("POST", "/query_result", {"task_id_list": [task]})
    assert data[-1] == polled["data"][0] and data[-1]["status"] == 1


def test_a_record_keeps_what_the_client_was_told_and_the_files_subtype(tmp_path):
    """A job read back answers with the notes it was given (a DAW placeholder not used), its format's subtype and an
    analysis's answer."""
    from mlx_acestep.server.jobs import Job
    from mlx_acestep.server.records import JobRecords

    records = JobRecords(tmp_path / "jobs")
    job = Job(object(), "wav", subtype="FLOAT", notes=["the source audio sent with this text2music task was not used"])
    job.answer = [{"status_message": "analysis", "codes": "<|audio_code_5|>"}]
    job.finish("succeeded")
    assert records.save(job)
    [record] = records.load()
    back = Job.from_record(record, tmp_path)
    assert (back.notes, back.subtype, back.audio_format, back.answer) == (job.notes, "FLOAT", "wav", job.answer)
