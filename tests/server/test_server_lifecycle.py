"""`mlx-acestep serve` as a process: what it refuses before loading, the reference's environment variables, and
how Ctrl-C / SIGTERM stop it, with a restart reading back what the last run left (real HTTP, real signals)."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import assert_one_line_error, run_cli
from test_server_jobs import multipart, wav_bytes

KEY = "k3y"
SONG = {"prompt": "x", "audio_duration": 5, "batch_size": 1}  # short: a gate, not the song's length, holds it
# The served process with a gate on its jobs' progress: while the file MLX_ACESTEP_TEST_GATE names exists, a job
# that reported a phase waits there, so a test signals the server while a job is surely running, then opens the
# gate (rather than a 120 s song that might end first, and costs ~20 CPU-s to finish).
GATED_SERVE = """
import os, runpy, time
from mlx_acestep.server import jobs
real, gate = jobs._progress, os.environ["MLX_ACESTEP_TEST_GATE"]
def gated(job, p):
    real(job, p)
    while os.path.exists(gate):
        time.sleep(0.05)
    return not job.cancel.is_set()
jobs._progress = gated
runpy.run_module("mlx_acestep.cli", run_name="__main__", alter_sys=True)
"""


def uploads(folder):
    """The server's upload files in a temporary folder (MLX's compiler leaves its own files there too)."""
    return [p for p in folder.iterdir() if p.name.startswith("mlx-acestep-upload-")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`mlx-acestep serve ARGS` in a subprocess, its jobs behind the gate `env` names; its stderr is collected line
    by line."""

    def __init__(self, args, env):
        import os

        self.port = int(env["ACESTEP_API_PORT"])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GATED_SERVE, "serve", *map(str, args)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True
        )
        self.reader.start()

    def wait_for(self, needle: str, timeout: float = 120) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [line for line in self.lines if needle in line]
            if found:
                return found[0]
            assert self.proc.poll() is None or needle in "".join(self.lines), "".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never came: {''.join(self.lines)}")

    def signal_until(self, sig, needle: str) -> str:
        """Send `sig` until the server says `needle`: MLX's CPU backend compiles its kernels through system(),
        which ignores SIGINT while the compiler runs, so a signal sent then is lost (as a Ctrl-C would be)."""
        for _ in range(20):
            self.proc.send_signal(sig)
            try:
                return self.wait_for(needle, timeout=3)
            except AssertionError:
                continue
        raise AssertionError(f"{needle!r} never came: {''.join(self.lines)}")

    def call(self, path, body=None, key=KEY, raw=None, content_type="application/json"):
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def submit(self, body=None, **kwargs) -> str:
        status, env = self.call("/release_task", body, **kwargs)
        assert status == 200, env
        return env["data"]["task_id"]

    def query(self, task_id) -> tuple[dict, dict]:
        entry = self.call("/query_result", {"task_id_list": [task_id]})[1]["data"][0]
        return entry, json.loads(entry["result"])[0]

    def wait_running(self, task_id) -> None:
        while self.query(task_id)[1]["stage"] in ("queued", "running"):  # "running": its phases not yet begun
            time.sleep(0.05)

    def stopped(self, timeout: float = 300) -> str:
        code = self.proc.wait(timeout)
        self.reader.join(30)  # every line it wrote, the last included
        out = "".join(self.lines)
        assert code == 0, out
        assert "Traceback" not in out and self.lines[-1] == "stopped\n", out
        return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def launch():
    """`launch(args, env)`: a `Served`; any still running when the test ends (it failed) is killed."""
    started = []
    yield lambda args, env: started.append(Served(args, env)) or started[-1]
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


@pytest.fixture
def env(cache, tmp_path):
    (tmp_path / "temp").mkdir()
    return {
        "MLX_ACESTEP_CACHE": str(cache),
        "ACESTEP_API_PORT": str(free_port()),
        "ACESTEP_API_KEY": KEY,
        "TMPDIR": str(tmp_path / "temp"),
        "MLX_ACESTEP_TEST_GATE": str(tmp_path / "gate"),
    }


def test_a_taken_port_a_bad_host_or_a_file_as_output_dir_is_one_line_before_loading(tmp_path):
    # in this process: click reads the variables at the call, and a fresh interpreter per refusal cost seconds each
    cache = {"MLX_ACESTEP_CACHE": str(tmp_path / "cache")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, env in ((["--port", port], {}), ([], {"ACESTEP_API_PORT": str(port)})):  # upstream's variable too
            done = run_cli(["serve", "-m", "tiny", *args], tmp_path, env=cache | env, timeout=120)
            assert_one_line_error(done, f"cannot listen on 127.0.0.1:{port}", "another program listens there")
        # the flag wins over the variable: the flag's port is the one refused
        done = run_cli(
            ["serve", "-m", "tiny", "--port", "70000"],
            tmp_path,
            env=cache | {"ACESTEP_API_PORT": str(port)},
            timeout=120,
        )
        assert_one_line_error(done, "--port must be between 0 and 65535, got 70000")
    done = run_cli(["serve", "-m", "tiny"], tmp_path, env=cache | {"ACESTEP_API_HOST": "no-such-host.invalid"})
    assert_one_line_error(done, "--host 'no-such-host.invalid' is not an address this machine can listen on")
    (tmp_path / "taken").write_text("a user's file")
    done = run_cli(
        ["serve", "-m", "tiny", "--port", free_port(), "--output-dir", tmp_path / "taken"],
        tmp_path,
        env=cache,
        timeout=120,
    )
    assert_one_line_error(done, f"--output-dir {tmp_path / 'taken'} is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "a user's file"
    assert not (tmp_path / "cache" / "converted").exists()  # refused before any model is built


def test_ctrl_c_finishes_the_running_job_drops_the_waiting_and_a_restart_answers_for_both(launch, env, tmp_path):
    out, temp = tmp_path / "out", tmp_path / "temp"
    served = launch(["-m", "tiny", "--dit", "turbo", "--output-dir", out], env)
    served.wait_for(f"serving acestep-v15-turbo on http://127.0.0.1:{env['ACESTEP_API_PORT']}", timeout=300)
    assert served.call("/v1/stats", key=None)[0] == 401  # ACESTEP_API_KEY is the key
    big, kind = multipart([("prompt", "x"), ("task_type", "cover")], [("src_audio", "big.wav", b"\0" * 2**25)])
    status, body = served.call("/release_task", raw=big, content_type=kind, key=None)
    assert status == 401 and body["detail"] == "Missing ai_token or Authorization header"
    assert sum(p.stat().st_size for p in temp.rglob("*") if p.is_file()) < 2**20  # none of its 32 MB

    gate = tmp_path / "gate"
    gate.touch()  # the jobs wait at their first phase until the test has signalled
    running = served.submit(SONG)
    cover, kind = multipart([("prompt", "y"), ("task_type", "cover")], [("src_audio", "take.wav", wav_bytes())])
    waiting = served.submit(raw=cover, content_type=kind)
    assert len(uploads(temp)) == 1
    served.wait_running(running)
    served.signal_until(signal.SIGINT, f"finishing the running job {running} (Ctrl-C again to drop it)")
    served.wait_for("dropped 1 waiting job(s)")
    gate.unlink()
    assert uploads(temp) == []
    with pytest.raises(OSError):  # no new requests meanwhile (refused, or reset)
        served.call("/health")
    served.stopped()

    again = launch(["-m", "tiny", "--output-dir", out], env)
    again.wait_for("serving")
    entry, item = again.query(running)
    assert entry["status"] == 1 and entry["progress_text"] == "succeeded"
    assert (
        urllib.request.urlopen(  # noqa: S310 (the test's own server)
            urllib.request.Request(
                f"http://127.0.0.1:{again.port}{item['file']}", headers={"Authorization": f"Bearer {KEY}"}
            )
        ).status
        == 200
    )
    entry, item = again.query(waiting)
    assert entry["status"] == 2 and item["error"] == "cancelled: the server stopped before this job ran"

    gate.touch()
    dropped = again.submit(SONG)  # a second Ctrl-C drops the running job
    again.wait_running(dropped)
    again.signal_until(signal.SIGINT, f"finishing the running job {dropped}")
    again.signal_until(signal.SIGINT, f"stopping: dropping the running job {dropped} at its next step")
    gate.unlink()
    again.stopped(timeout=120)

    third = launch(["-m", "tiny", "--output-dir", out], env)
    third.wait_for("serving")
    entry, item = third.query(dropped)
    assert (
        entry["status"] == 2 and entry["progress_text"] == "cancelled" and item["error"].startswith("cancelled during")
    )
    gate.touch()
    terminated = third.submit(SONG)  # SIGTERM (a service manager stopping it) drops the running job at once
    third.wait_running(terminated)
    third.signal_until(signal.SIGTERM, f"stopping: dropping the running job {terminated} at its next step")
    gate.unlink()
    third.stopped(timeout=120)
    record = json.loads((out / "jobs" / f"{terminated}.json").read_text())
    assert record["state"] == "cancelled" and record["files"] == []


def test_dit_takes_the_variants_names_beside_folder_names():
    from mlx_acestep.source import ModelSource

    assert [ModelSource(dit=d).dit for d in ("turbo", "base", "sft", "my-dit", None)] == [
        "acestep-v15-turbo",  # the official checkpoint's folder names
        "acestep-v15-base",
        "acestep-v15-sft",
        "my-dit",
        None,
    ]
