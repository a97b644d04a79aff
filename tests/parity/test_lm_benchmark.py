"""The planner-LM benchmark runs (tiny config only: timings belong to benchmarks/, not to tests)."""

import json
import sys
from pathlib import Path

import pytest
from helpers import require

sys.path.insert(0, str(Path(__file__).parents[2]))

pytestmark = pytest.mark.live


def test_lm_benchmark_runs_mlx_and_transformers_on_a_tiny_config(tmp_path, capsys):
    require("transformers")
    from benchmarks import bench_lm

    out = tmp_path / "lm.json"
    rows = bench_lm.main(["--tiny", "--precisions", "float32", "--reference-precisions", "float32", "-o", str(out)])
    assert [(r["side"], r["precision"], r.get("error")) for r in rows] == [
        ("mlx", "float32", None),
        ("reference", "float32", None),
    ]
    for r in rows:
        assert r["size"] == "tiny" and r["prompt"] > 0
        assert set(r["prefill_s"]) == {"1", "2"} and all(v > 0 for v in r["prefill_s"].values())
        assert set(r["prefill_variants_s"]) == {"all_rows", "last_row"} and min(r["prefill_variants_s"].values()) > 0
        assert set(r["step_s"]) == {"1", "2"} and all(len(v) == 2 and min(v) > 0 for v in r["step_s"].values())
        assert r["tok_s"] > 0 and r["cfg_ratio"] > 0 and r["peak_rss"] > 0
        assert 0 < r["step_bytes"] <= r["weights_bytes"]
        assert {"prefill", "decode"} <= set(r["rss"])
    assert rows[0]["blas"].startswith("MLX") and "torch" in rows[1]["blas"] and rows[0]["mlx_peak_bytes"] > 0
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["targets"][0]["size"] == "tiny"
    assert "| tiny | reference | float32 |" in out.with_suffix(".md").read_text()
    assert "| tiny | mlx | float32 |" in capsys.readouterr().out
