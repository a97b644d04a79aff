"""The studio page's server side: `/` and its static files, `/v1/studio/settings`, `/delete_task`; and the page's
pure JavaScript modules under Node's own test runner (tests/studio/*.test.mjs). The page in a browser:
test_studio_browser.py."""

import fnmatch
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

KEY = "studio-key"
ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "mlx_acestep" / "server" / "studio"


@pytest.fixture(scope="module")
def server(pipe, tmp_path_factory, serve):
    from mlx_acestep.server import make_app

    out = tmp_path_factory.mktemp("studio") / "out"
    client = serve(make_app(pipe, out, api_key=KEY, queue_size=2), KEY)
    client.out = out
    return client


def test_page_and_its_files_come_from_this_server(server):
    status, page, headers = server.call("GET", "/", key=None)  # the page itself needs no key; its calls do
    assert status == 200 and headers["content-type"].startswith("text/html")
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy  # nothing from another origin, a CDN included
    html = page.decode()
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert "/studio/js/main.js" in assets and "/studio/studio.css" in assets
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    for asset in assets:
        status, _, headers = server.call("GET", asset, key=None)
        assert status == 200, asset
    imports = set()
    for module in (STATIC / "js").glob("*.js"):
        text = module.read_text()
        assert "http://" not in text and "https://" not in text, module.name
        imports |= {m for m in re.findall(r'from "\./([^"]+)"', text)}
    for name in imports:  # every module a module imports is served, as JavaScript
        status, _, headers = server.call("GET", f"/studio/js/{name}", key=None)
        assert status == 200 and "javascript" in headers["content-type"], name


def test_settings_are_the_protocols(server):
    status, env = server.json("GET", "/v1/studio/settings", key=None)
    assert status == 200 and env["code"] == 200
    s = env["data"]
    # upstream's REST defaults (shared/spec/UPSTREAM-API.md 3.1) and this project's ranges (README: generate)
    assert s["defaults"]["batch_size"] == 2 and s["defaults"]["inference_steps"] == 8
    assert s["defaults"]["audio_format"] == "mp3" and s["defaults"]["vocal_language"] == "en"
    assert s["defaults"]["audio_duration"] == 120  # upstream's text2music fallback
    assert s["limits"]["audio_duration"] == [0.1, 600] and s["limits"]["batch_size"] == [1, 8]
    assert s["limits"]["inference_steps"] == [1, 8]  # the fixture DiT is a turbo one
    assert s["model"]["family"] == "turbo"
    assert {"mp3", "wav", "flac"} <= set(s["choices"]["audio_format"])
    assert s["choices"]["time_signature"] == ["2", "3", "4", "6"]
    assert len(s["choices"]["track"]) == 12 and "vocals" in s["choices"]["track"]
    assert "en" in s["choices"]["vocal_language"] and "zh" in s["choices"]["vocal_language"]


def test_delete_removes_only_what_the_job_wrote(server):
    body = {"prompt": "soft rain", "audio_duration": 10, "batch_size": 1, "audio_format": "wav"}
    status, env = server.json("POST", "/release_task", body | {"inference_steps": 2})
    task = env["data"]["task_id"]
    status, env = server.json("POST", "/delete_task", {"task_id": task})  # queued or running: not yet
    assert status == 409 and "cancel it first" in env["detail"]
    state, items = server.wait(task)
    assert state == 1
    written = sorted(p.name for p in server.out.rglob("*") if p.is_file())
    assert f"{task}.wav" in written and f"{task}.json" in written  # the song and its sidecar
    mine = server.out / "mine.wav"  # a file the server did not write, in its folder
    mine.write_bytes(b"not the server's")
    assert server.json("POST", "/delete_task", {"task_id": task}, key=None)[0] == 401
    status, env = server.json("POST", "/delete_task", {"task_id": task})
    assert status == 200 and env["data"] == {"task_id": task, "deleted": True}
    left = sorted(str(p.relative_to(server.out)) for p in server.out.rglob("*") if p.is_file())
    assert left == ["mine.wav"]  # the song, its sidecar and the job's record are gone; nothing else
    _, env = server.json("POST", "/query_result", {"task_id_list": [task]})
    assert env["data"][0]["status"] == 2 and env["data"][0]["progress_text"] == "unknown task"
    status, env = server.json("POST", "/delete_task", {"task_id": task})
    assert status == 404 and "unknown task" in env["detail"]
    status, env = server.json("POST", "/delete_task", {})
    assert status == 400 and "give task_id" in env["detail"]  # not a 404 for a task named "None"


def test_a_waiting_job_cancelled_says_so_at_once_and_may_be_deleted(server):
    """The page's Cancel on a waiting job: cancelled now, not when the jobs before it are done; deleted, its record
    is not written again when the worker reaches it."""
    long = {"prompt": "drone", "audio_duration": 20, "batch_size": 1, "audio_format": "wav"}  # 8 steps: seconds
    running = server.json("POST", "/release_task", long)[1]["data"]["task_id"]
    waiting = server.json("POST", "/release_task", long | {"inference_steps": 2})[1]["data"]["task_id"]
    assert server.json("POST", "/cancel_task", {"task_id": waiting})[1]["data"]["cancelled"] is True
    _, env = server.json("POST", "/query_result", {"task_id_list": [running, waiting]})
    assert env["data"][0]["status"] == 0  # still running: the waiting one did not wait for it
    item = json.loads(env["data"][1]["result"])[0]
    assert env["data"][1]["status"] == 2 and item["error"] == "cancelled before it started"
    assert server.json("POST", "/delete_task", {"task_id": waiting})[0] == 200
    after = server.json("POST", "/release_task", long | {"inference_steps": 2})[1]["data"]["task_id"]
    assert server.wait(running)[0] == 1 and server.wait(after)[0] == 1  # the one worker has passed the deleted one
    assert not (server.out / "jobs" / f"{waiting}.json").exists()
    for task in (running, after):
        assert server.json("POST", "/delete_task", {"task_id": task})[0] == 200


def test_the_default_format_is_one_this_server_writes(monkeypatch):
    """The form's default format is upstream's mp3 only where libsndfile can write it (else flac, what the REST
    side falls back to), never a choice the page has no option for."""
    from types import SimpleNamespace

    from mlx_acestep.server import studio

    pipe = SimpleNamespace(family="turbo", name="t", folders=SimpleNamespace(lm=None))
    monkeypatch.setattr(studio, "WRITABLE", {".wav", ".flac"})
    s = studio.settings(pipe)
    assert s["defaults"]["audio_format"] == "flac" and "mp3" not in s["choices"]["audio_format"]


def test_the_pages_instrumental_marker_is_the_packages():
    """request.js holds `[Instrumental]` itself (its pure functions are tested under Node, without the server's
    settings): it must be names.INSTRUMENTAL, the marker the pipeline reads."""
    from mlx_acestep.names import INSTRUMENTAL

    source = (STATIC / "js" / "request.js").read_text()
    assert f'export const INSTRUMENTAL = "{INSTRUMENTAL}";' in source


def test_the_package_ships_every_page_file():
    """pyproject's package-data globs cover every file of the page (a wheel without one breaks `/`)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["mlx_acestep"]
    files = [str(p.relative_to(ROOT / "mlx_acestep")) for p in STATIC.rglob("*") if p.is_file()]
    files = [f for f in files if "__pycache__" not in f]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files


def node() -> str | None:
    """Node 18+: the system's, else the one Playwright (the test extra) ships to run its driver."""
    if shutil.which("node"):
        return shutil.which("node")
    try:
        from playwright._impl._driver import compute_driver_executable
    except ImportError:
        return None
    path = compute_driver_executable()[0]
    return path if Path(path).is_file() else None


def test_page_modules_under_node():
    """The pure modules (request building, reading /query_result, history, the waveform's geometry, the client)
    with Node's built-in test runner: no package installed."""
    if node() is None:
        pytest.skip("neither node nor playwright is installed")
    tests = sorted(str(p) for p in (ROOT / "tests" / "studio").glob("*.test.mjs"))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # Node's threads fail with OpenBLAS preloaded
    run = subprocess.run([node(), "--test", *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"^# fail 0$", run.stdout, re.M) and not re.search(r"^# pass 0$", run.stdout, re.M)
