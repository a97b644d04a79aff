"""The benchmarks run (tiny shapes only: timings belong to benchmarks/, not to tests)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_dit_step_benchmark_runs_both_sides_on_a_tiny_config(capsys):
    pytest.importorskip("diffusers")
    import bench_dit

    rows = bench_dit.main(["--tiny", "--frames", "21", "--condition", "9", "--steps", "1", "--sides", "mlx,mlx-q8,diffusers"])
    assert [r.get("error") for r in rows] == [None, None, None]
    assert all(r["step_s"] > 0 and r["max_rss_gb"] > 0 for r in rows)
    table = capsys.readouterr().out
    assert "| 21 | 0.84 s | mlx | " in table and "| diffusers | torch" in table
