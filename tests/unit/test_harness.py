"""The test harness itself: a missing live reference fails in CI, a skip fails a CI run, and the summary counts."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import require

TESTS = Path(__file__).parents[1]


def test_a_missing_reference_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require("no_such_reference_module")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        require("no_such_reference_module")


def test_a_skipped_test_fails_the_run_in_ci_and_is_counted(tmp_path):
    for name in ("conftest.py", "parity/parity.py", "helpers.py"):
        shutil.copy(TESTS / name, tmp_path / Path(name).name)
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip('x')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}

    def run(**extra):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            cwd=tmp_path,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=120,
        )

    local, ci = run(), run(CI="true")
    assert local.returncode == 0 and "skipped tests: 1" in local.stdout, local.stdout
    assert ci.returncode == 1 and "skipped tests: 1 (CI: a skip fails the run)" in ci.stdout, ci.stdout
