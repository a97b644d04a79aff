import contextlib
import os

import pytest
from parity import fixtures_dir  # tests/ and tests/parity/ are on the path: pyproject's pythonpath

# Two xdist workers share two cores, and OpenBLAS adds its own threads in each: oversubscribed, their idle threads
# spin in the kernel (a third of the fast lane's CPU time was system time; one BLAS thread per worker took the
# lane from 9:49 to 6:48). The workers, and the processes tests start, inherit this; a value already set wins.
# A single-process run (-n0) loaded OpenBLAS before this line and keeps its threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# (case, output, error relative to max|ref|[, allowed]) of every parity comparison, for the summary. A row is also attached to
# the running test's report, so that the summary has every row when pytest-xdist runs the tests in workers.
_running: dict = {}


class _ParityLog(list):
    def append(self, row):
        item = _running.get("item")
        if item is not None:
            item.user_properties.append(("parity", tuple(row)))


PARITY_ERRORS = _ParityLog()
_COLLECTED: list[tuple] = []
_SKIPPED: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _running["item"] = item
    try:
        yield
    finally:
        _running.pop("item", None)


def pytest_runtest_logreport(report):  # in the main process, with or without xdist
    if report.when == "call":
        _COLLECTED.extend(tuple(v) for k, v in report.user_properties if k == "parity")
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    # In CI a skip is a failure: every live reference is installed there, and a skipped comparison checks nothing.
    if _in_ci() and _SKIPPED and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def fixtures():
    root = fixtures_dir()
    if not (root / "cases.json").is_file():
        pytest.fail(f"parity fixtures not found at {root} (set MLX_ACESTEP_FIXTURES)")
    return root


@pytest.fixture(scope="session")
def converted(fixtures, tmp_path_factory):
    """The fixture checkpoints converted once with the project's own converter."""
    from mlx_acestep.convert import convert_checkpoints

    dst = tmp_path_factory.mktemp("converted") / "mlx"
    convert_checkpoints(fixtures / "checkpoints", dst)
    return dst


@pytest.fixture
def turbo_root(fixtures, tmp_path):
    """A writable copy of the fixture turbo DiT folder, alone under `src/`."""
    import shutil

    src = tmp_path / "src" / "acestep-v15-turbo"
    shutil.copytree(fixtures / "checkpoints" / "acestep-v15-turbo", src)
    return src


@pytest.fixture(scope="session")
def load_converted(converted):
    """Load a converted component by folder name (cached for the session)."""
    from mlx_acestep.loading import load_component

    cache = {}

    def load(name):
        if name not in cache:
            path = converted / name
            if not path.is_dir():
                pytest.fail(f"the converter did not produce {name}/ from the fixture checkpoints")
            cache[name] = load_component(path)
        return cache[name]

    return load


@pytest.fixture(params=["cpu-kernels", "metal-path"])
def formulation(request):
    """Run a test on the kernels MLX's CPU uses here, and on the plain formulation Metal runs (fused SDPA, the
    plain VAE); yields the label the parity table gives the second."""
    if request.param == "cpu-kernels":
        yield ""
        return
    from mlx_acestep import kernels

    with kernels.use_plain():
        yield " [metal path]"


@pytest.fixture(scope="module")
def serve():
    """`serve(app, key=None)`: an `helpers.ApiClient` of the app (FastAPI's TestClient), closed after the module."""
    from helpers import ApiClient

    with contextlib.ExitStack() as stack:
        yield lambda app, key=None: stack.enter_context(ApiClient(app, key))


def _value(case: str, v) -> str:
    if v is None:
        return ""
    return f"{v:.1f}" if "SNR" in case else f"{v:.2e}"


def pytest_terminal_summary(terminalreporter):
    if _COLLECTED:
        terminalreporter.section("parity: max|ours - ref| / max|ref|, and what is allowed (SNR rows: dB, at least)")
        for row in sorted(_COLLECTED, key=lambda r: r[:2]):
            case, output, err = row[:3]
            allowed = row[3] if len(row) > 3 else None
            terminalreporter.write_line(f"{case:<40} {output:<24} {_value(case, err):>9}  {_value(case, allowed):>9}")
    verdict = " (CI: a skip fails the run)" if _in_ci() and _SKIPPED else ""
    terminalreporter.write_line(f"skipped tests: {len(_SKIPPED)}{verdict}")
    for nodeid in _SKIPPED:
        terminalreporter.write_line(f"  skipped: {nodeid}")


@pytest.fixture(scope="module")
def pipe(converted):
    """The fixture turbo pipeline the server tests share (a module may define its own `pipe`). Here, not in a
    tests/server/conftest.py: a second `conftest` module would shadow this one for `from conftest import ...`."""
    from mlx_acestep.pipeline import ACEStep, ModelFolders

    return ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))
