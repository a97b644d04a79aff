"""The fuzz tests at scale (issue 32): the REST API from its OpenAPI schema, and with `--parsers` the parser properties,
with `--scale` times the suite's examples drawn at random, schemathesis's coverage cases included.

    python benchmarks/fuzz_rest.py [--scale 20] [--seed S] [--parsers]

The suite runs the same tests small and deterministic (tests/fuzzing.py). A failure prints the smallest case found,
a curl command for a REST one; `--seed` replays a run's draw. Add each finding to the tests as a plain case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=20, help="times the suite's examples per route / property")
    p.add_argument("--seed", type=int, default=None, help="replay a run's random draw")
    p.add_argument("--parsers", action="store_true", help="the parser properties too (tests/unit/test_fuzz_parsers.py)")
    args = p.parse_args(argv)
    report = Path(tempfile.mkdtemp()) / "sent.json"
    env = os.environ | {"MLX_ACESTEP_FUZZ": str(max(args.scale, 1)), "PYTHONPATH": str(ROOT)}
    env["MLX_ACESTEP_FUZZ_REPORT"] = str(report)
    if args.seed is not None:
        env["MLX_ACESTEP_FUZZ_SEED"] = str(args.seed)
    files = ["tests/server/test_fuzz_rest.py"] + (["tests/unit/test_fuzz_parsers.py"] if args.parsers else [])
    command = [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    start = time.perf_counter()
    code = subprocess.call([*command, *files], env=env, cwd=ROOT)
    if report.is_file():
        print("requests sent (per route, per status class):", report.read_text())
    print(f"fuzz_rest: scale {args.scale}, {time.perf_counter() - start:.0f} s, {'clean' if code == 0 else 'FOUND'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
