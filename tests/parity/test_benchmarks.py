"""The benchmarks run (tiny shapes only: timings belong to benchmarks/, not to tests)."""

import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, require, run_cli

sys.path.insert(0, str(Path(__file__).parents[2]))


@pytest.mark.live
def test_dit_step_benchmark_runs_both_sides_on_a_tiny_config(capsys):
    require("diffusers")
    from benchmarks import bench_dit

    rows = bench_dit.main(
        ["--tiny", "--frames", "21", "--condition", "9", "--steps", "1", "--sides", "mlx,mlx-q8,diffusers"]
    )
    assert [r.get("error") for r in rows] == [None, None, None]
    assert all(r["step_s"] > 0 and r["max_rss_gb"] > 0 for r in rows)
    table = capsys.readouterr().out
    assert "| 21 | 0.84 s | mlx | " in table and "| diffusers | torch" in table


@pytest.mark.live
def test_training_step_benchmark_runs_both_sides_on_a_tiny_config(capsys):
    require("peft")
    from benchmarks import bench_train

    rows = bench_train.main(
        ["--tiny", "--frames", "21", "--condition", "9", "--steps", "1", "--rank", "4", "--sides", "mlx,torch"]
    )
    assert [r.get("error") for r in rows] == [None, None]
    assert all(r["step_s"] > 0 for r in rows) and "| 21 | 0.84 s | torch | torch" in capsys.readouterr().out


@pytest.mark.live
def test_pipeline_benchmark_runs_mlx_and_the_reference_on_a_tiny_model(tmp_path):
    """`bench_pipeline.py --tiny` (what `mlx-acestep bench` runs): every phase timed on both sides, a table, JSON, a plot."""
    import json

    from click.testing import CliRunner

    from benchmarks.bench_pipeline import main

    require("diffusers")
    prefix = tmp_path / "bench"
    result = CliRunner().invoke(
        main,
        [
            "--tiny",
            "--durations",
            "10",
            "--precisions",
            "float32,q8",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-o",
            str(prefix),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(prefix.with_suffix(".json").read_text())
    assert [r["side"] for r in rows] == ["mlx float32", "mlx q8", "reference float32"]
    for r in rows:
        assert "error" not in r, r
        assert set(r["seconds"]) >= {"text", "condition", "dit", "vae"} and r["rtf"] > 0 and r["peak_rss"] > 0
    assert "torch" in rows[2]["blas"] and rows[0]["blas"].startswith("MLX")
    assert "| 10 s | reference float32 |" in prefix.with_suffix(".md").read_text()
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_needs_a_model_choice():
    """Through the installed command: `mlx-acestep bench` runs the checkout's benchmark script."""
    # a fresh process: `bench` runs the script in a child that writes to the process's own stdout and stderr
    result = run_cli(["bench"], fresh_process=True)
    assert_one_line_error(result, "choose --random-weights, --tiny or --model")
    shown = run_cli(["bench", "--help"], fresh_process=True)
    assert shown.returncode == 0 and "--random-weights" in shown.stdout


def test_the_step_profile_runs_on_a_tiny_config(capsys):
    """`benchmarks/profile_step.py --tiny`: every op of both layer kinds timed, the training phases beside them."""
    from benchmarks import profile_step

    profile_step.main(["--tiny", "--frames", "40", "--repeats", "1", "--rank", "4"])
    out = capsys.readouterr().out
    assert out.count("| WHOLE LAYER (one graph) |") == 2 and "of the matmul peak" in out
    assert "| 2 layers | forward + backward (recomputed) |" in out


def test_the_compiled_against_eager_benchmark_runs_every_path_on_tiny_shapes(capsys):
    from benchmarks import bench_compiled

    bench_compiled.main(["--tiny", "--rounds", "1"])
    out = capsys.readouterr().out
    for case in ("APG (momentum)", "ADG", "SDE update", "DiT step, 2 layers", "training step, 2 layers", "VAE window"):
        assert case in out
