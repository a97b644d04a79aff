"""The events route's audio extension through real HTTP (conftest `serve`): `?audio=true` brings each decoded window
as the VAE decodes it, the windows joined are the song `generate` decodes, the saved file is the bytes a non-streamed
run writes, and a client that leaves, falls behind or cancels never costs the job its files (server/windows.py)."""

import base64
import contextlib
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from helpers import patch_generation

KEY = "s3cret"
SONG = {"prompt": "gentle piano", "lyrics": "[verse]\nla la", "audio_duration": 12, "bpm": 90}
SONG |= {"seed": 5, "use_random_seed": False, "batch_size": 2}


@pytest.fixture(scope="module")
def pipe(converted):
    from mlx_acestep.pipeline import ACEStep, ModelFolders

    # Small windows (32 frames, overlap 8) so a 12 s song (300 frames) comes in 10 windows per item.
    folders = ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae")
    return ACEStep(folders, vae_chunk=32, vae_overlap=8)


@pytest.fixture(scope="module")
def server(pipe, tmp_path_factory, serve):
    from mlx_acestep.server import make_app

    root = tmp_path_factory.mktemp("stream")
    client = serve(make_app(pipe, root / "out", api_key=KEY), KEY)
    client.root = root
    return client


@pytest.fixture
def gate(pipe, monkeypatch):
    """A job waits for `gate.set()` before it runs, so the clients are listening before the first window; each
    window then takes at least `gate.pace` seconds (the tiny VAE would otherwise be done before a client acts)."""
    gate = threading.Event()
    gate.pace = 0.0

    def wrap(real):
        def held(request, callback=None, **kwargs):
            assert gate.wait(120)

            def paced(p):
                time.sleep(gate.pace if p.phase == "vae" else 0)
                return callback(p) if callback else None

            return real(request, callback=paced, **kwargs)

        return held

    patch_generation(monkeypatch, pipe, wrap)
    yield gate
    gate.set()


def events(response):
    """(name, data) of each Server-Sent Event as the bytes arrive."""
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and name:
            yield name, json.loads("\n".join(data))
            name, data = None, []


def listen(server, stack, task, query="?audio=true"):
    """An open event stream of `task` whose first event has come (so it is subscribed)."""
    r = stack.enter_context(server.client.stream("GET", f"/v1/tasks/{task}/events{query}", headers=auth()))
    assert r.status_code == 200
    stream = events(r)
    assert next(stream)[0] == "progress"
    return stream


def auth():
    return {"Authorization": f"Bearer {KEY}"}


def submit(server, body) -> str:
    status, env = server.json("POST", "/release_task", body)
    assert status == 200, env
    return env["data"]["task_id"]


def pcm(data) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(data["pcm"]), dtype="<f4")
    return raw.reshape(data["samples"], data["channels"])


def task_files(server, task):
    return sorted(p.name for p in (server.root / "out").iterdir() if task in p.name or p.name.startswith("."))


def test_the_windows_are_the_decoded_song_and_the_file_is_a_plain_runs(server, pipe, gate, tmp_path):
    from mlx_acestep.audio import peak_limit, peak_normalize

    task = submit(server, SONG | {"audio_format": "flac"})
    with contextlib.ExitStack() as stack:
        live, slow, plain = (listen(server, stack, task, q) for q in ("?audio=true", "?audio=1", ""))
        gate.set()
        heard = list(live)
        late = list(slow)  # read only now: it fell behind by more than the backlog
        quiet = [name for name, _ in plain]
    assert [n for n, _ in heard].count("audio") > 8 and heard[-1][0] == "result" and heard[-1][1]["status"] == 1
    assert quiet.count("audio") == 0 and quiet[-1] == "result"  # a progress-only client gets nothing new
    windows = [d for n, d in heard if n == "audio"]
    assert {(d["sample_rate"], d["channels"], d["encoding"]) for d in windows} == {(48000, 2, "f32le")}
    # The slow one got the windows it had room for, in order, then word that its audio stopped, then the result.
    got = [d["pcm"] for n, d in late if n == "audio"]
    assert 8 <= len(got) < len(windows) and got == [d["pcm"] for d in windows[: len(got)]]
    assert [n for n, _ in late if n != "progress"] == ["audio"] * len(got) + ["audio_lost", "result"]

    # What the non-streamed path makes of the same request: generate, then save.
    request = server.client.app.state.runner.jobs[task].request
    whole = pipe.generate(request)
    for item in range(2):
        mine = [d for d in windows if d["item"] == item]
        assert [d["start"] for d in mine] == list(np.cumsum([0] + [d["samples"] for d in mine[:-1]]))
        joined = np.concatenate([pcm(d) for d in mine])
        # The file's samples are the raw song limited and normalised by its own peak: exactly, float32 throughout.
        np.testing.assert_array_equal(peak_normalize(peak_limit(joined)), whole.audio[item])
    expected = whole.save(tmp_path / "plain.flac")
    for saved, plain_file in zip(sorted((server.root / "out").glob(f"{task}*.flac")), expected):
        assert saved.read_bytes() == plain_file.read_bytes()


def test_a_client_that_leaves_mid_stream_costs_the_job_nothing(server, pipe, gate, tmp_path):
    gate.pace = 0.2
    task = submit(server, SONG | {"batch_size": 1, "audio_format": "mp3"})
    job = server.client.app.state.runner.jobs[task]
    with contextlib.ExitStack() as stack:
        stream = listen(server, stack, task)
        gate.set()
        assert next(name for name, _ in stream if name == "audio")
    deadline = time.time() + 30
    while len(job.windows) and time.time() < deadline:  # it stops being kept windows once it has left
        time.sleep(0.05)
    assert len(job.windows) == 0
    state, [item] = server.wait(task)
    assert state == 1
    [saved] = (server.root / "out").glob(f"{task}*.mp3")
    [plain] = pipe.generate(job.request).save(tmp_path / "plain.mp3")
    assert saved.read_bytes() == plain.read_bytes()  # MP3 encoded in blocks is MP3 encoded at once


def test_an_opus_file_holds_what_a_plain_runs_holds(server, pipe, tmp_path):
    """libsndfile gives every Ogg stream a random serial number, so no two Opus saves share their bytes (a plain run's
    neither): the streamed file decodes to the plain file's samples."""
    task = submit(server, SONG | {"batch_size": 1, "audio_format": "opus"})
    assert server.wait(task)[0] == 1
    [saved] = (server.root / "out").glob(f"{task}*.opus")
    [plain] = pipe.generate(server.client.app.state.runner.jobs[task].request).save(tmp_path / "plain.opus")
    np.testing.assert_array_equal(sf.read(saved)[0], sf.read(plain)[0])


def test_a_job_cancelled_mid_stream_ends_its_stream_and_writes_nothing(server, gate):
    gate.pace = 0.2
    before = task_files(server, "no task")
    task = submit(server, SONG | {"audio_format": "wav"})
    with contextlib.ExitStack() as stack:
        stream = listen(server, stack, task)
        gate.set()
        assert next(name for name, _ in stream if name == "audio")
        assert server.json("POST", "/cancel_task", {"task_id": task})[1]["data"]["cancelled"] is True
        rest = list(stream)
    assert rest[-1][0] == "result" and rest[-1][1]["status"] == 2, rest[-1]
    [item] = json.loads(rest[-1][1]["result"])[:1]
    assert item["stage"] == "cancelled" and item["error"].startswith("cancelled during "), item
    assert task_files(server, task) == before == []  # no file, no hidden raw or temporary left


def test_a_bad_audio_value_is_refused_naming_it(server):
    task = submit(server, SONG | {"batch_size": 1})
    status, body, _ = server.call("GET", f"/v1/tasks/{task}/events?audio=maybe")
    assert status == 400 and "audio" in json.loads(body)["error"]
    assert server.wait(task)[0] == 1


@pytest.mark.parametrize(
    "fields, streams",
    [
        ({}, True),
        ({"task": "repaint", "repaint_start": 1.0, "repaint_end": 2.0}, False),  # spliced into the source's waveform
        ({"task": "repaint", "repaint_start": 1.0, "repaint_end": 2.0, "repaint_mode": "aggressive"}, True),
        ({"task": "cover"}, True),
    ],
)
def test_only_a_repaint_spliced_into_its_source_cannot_stream(fields, streams, tmp_path):
    """postprocess.py splices a region into the source waveform unless aggressive; nothing else needs the whole song."""
    from mlx_acestep.pipeline import GenerationRequest
    from mlx_acestep.pipeline.stream import streamable

    source = tmp_path / "src.wav"
    sf.write(source, np.zeros((48000 * 3, 2), np.float32), 48000)
    request = GenerationRequest(caption="x", src_audio=str(source) if fields else None, **fields)
    assert streamable(request) is streams
