"""The REST API fuzzed from its own OpenAPI schema (schemathesis; issue 32, "Fuzzing, kept in the suite"): every route,
with the bodies the schema describes (server/schema.py: each route's fields, as JSON, a form and multipart) and
bodies that break it. Whatever is sent, the server answers below 500, logs no traceback, records no job that ended
in an internal error, and still answers /health.

The suite runs a bounded, deterministic number of examples per route (tests/fuzzing.py); `MLX_ACESTEP_FUZZ=N` runs N
times as many, at random (benchmarks/fuzz_rest.py runs that and summarises what it found).

Accepted tasks run on the fixture model with its generation replaced by one that fails at once: what is checked is
the HTTP layer's reading and validation of a request (the request, the task's checks against the model, the queue),
all of which runs before a job's generation starts; a generation's own failures are the pipeline tests' matter. An
analysis task (no generation) runs for real.
"""

import collections
import json
import logging
import os

import pytest
import schemathesis
from fuzzing import SCALE, settings
from helpers import patch_generation

from mlx_acestep.errors import AceStepError

# One worker runs the module: the tests after the fuzzing read what it sent and the jobs it left.
pytestmark = pytest.mark.xdist_group("fuzz_rest")
FUZZ_SKIP = "the fuzzed server skips generation"
SENT: collections.Counter = collections.Counter()  # route -> requests sent, status class -> count


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzed")
    (root / "inputs").mkdir()
    return root


@pytest.fixture(scope="module")
def fuzz_app(pipe, fuzz_root):
    from mlx_acestep.server import make_app

    return make_app(pipe, fuzz_root / "out", queue_size=4, input_dirs=fuzz_root / "inputs")


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    """The app's schema; the suite draws each route's examples at random (deterministically), a larger run also walks
    schemathesis's coverage cases (each field's boundaries and wrong types, one at a time: several per field)."""
    phases = ["examples", "fuzzing"] + (["coverage"] if SCALE else [])
    config = schemathesis.Config.from_dict({"phases": {name: {"enabled": True} for name in phases}})
    for name in {"examples", "coverage", "fuzzing", "stateful"} - set(phases):
        config.projects.default.phases.get_by_name(name=name).enabled = False
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=config)


@pytest.fixture(scope="module")
def fuzzed(fuzz_app, serve):
    """A client of the fuzzed app (the cases themselves go through schemathesis's own)."""
    return serve(fuzz_app)


@pytest.fixture
def instant_jobs(monkeypatch, pipe):
    def wrap(_real):
        def skipped(*args, **kwargs):
            raise AceStepError(FUZZ_SKIP)

        return skipped

    patch_generation(monkeypatch, pipe, wrap)


schema = schemathesis.pytest.from_fixture("fuzz_schema")


def _refused_without_a_planner(response) -> bool:
    """The writing routes' 503 on a server without the planner LM (server/songwriter.py): a refusal, not a failure."""
    return response.status_code == 503 and "needs the planner LM" in response.text


def _skipped(response) -> bool:
    """A chat request waits for its song and answers a failed generation as upstream does, with 500
    (server/chat.py answer): here the stub's failure, which means the request was accepted."""
    return response.status_code == 500 and response.json().get("error") == FUZZ_SKIP


def _tracebacks(records) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or "Traceback" in r.getMessage()]


@schema.parametrize()
@settings(30)
def test_no_route_fails_on_what_it_is_sent(case, fuzzed, instant_jobs, caplog, capfd):
    caplog.set_level(logging.WARNING)
    response = case.call()
    SENT[f"{case.method} {case.path}"] += 1
    SENT[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500 or _refused_without_a_planner(response) or _skipped(response), (
        f"{case.method} {case.path}: {response.status_code} {response.text[:200]}\n{case.as_curl_command()}"
    )
    assert not _tracebacks(caplog.records), f"{case.method} {case.path}: a traceback in the server's log"
    assert "Traceback" not in capfd.readouterr().err, f"{case.method} {case.path}: a traceback on stderr (a thread's)"
    assert fuzzed.json("GET", "/health")[0] == 200, f"{case.method} {case.path}: the server stopped answering"


def test_every_route_was_fuzzed(fuzz_schema):
    """Runs after the fuzzing: every route of the schema was sent examples (a schema that hid a route's body, or a
    route that refused every draw before reading it, would show here). MLX_ACESTEP_FUZZ_REPORT=FILE writes the counts."""
    routes = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in fuzz_schema.get_all_operations())}
    assert routes <= set(SENT), sorted(routes - set(SENT))
    if os.environ.get("MLX_ACESTEP_FUZZ_REPORT"):
        with open(os.environ["MLX_ACESTEP_FUZZ_REPORT"], "w") as f:
            json.dump(dict(sorted(SENT.items())), f, indent=1)


def test_no_fuzzed_job_ended_in_an_internal_error(fuzz_app):
    """Runs after the fuzzing (same module, same app): a job that was accepted ended in the stub's failure, a
    refusal of its own (an analysis of bytes that are not audio), cancelled, or done; never "internal error"."""
    runner = fuzz_app.state.runner
    errors = [job.error for job in list(runner.jobs.values()) if (job.error or "").startswith("internal error")]
    assert not errors


# -- what the fuzzing found, each as a plain test ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"task_type": {"a": 1}}, "task_type must be text, got dict"),  # read before the request was built: a 500
    ],
)
def test_found_task_bodies_are_refused_naming_the_field(fuzzed, body, needle):
    status, answer = fuzzed.json("POST", "/release_task", body)
    assert status == 400 and needle in answer["error"]


@pytest.mark.parametrize(
    "route, body, status, needle",
    [
        # found by the larger run: Path.resolve raised ValueError (a 500) on a NUL, OSError on a name too long
        ("/v1/lora/load", {"lora_path": "a\x00b"}, 400, "holds a NUL character"),
        ("/release_task", {"task_type": "cover", "src_audio_path": "/x\x00"}, 400, "holds a NUL character"),
        ("/v1/lora/load", {"lora_path": "inputs/" + "a" * 5000}, 404, "does not exist"),
    ],
)
def test_found_paths_are_refused_naming_them(fuzzed, fuzz_root, route, body, status, needle):
    body = {k: str(fuzz_root / v) if v.startswith("inputs/") else v for k, v in body.items()}
    answer = fuzzed.json("POST", route, body)
    assert answer[0] == status and needle in answer[1]["error"]
