"""The command line as a user meets it: help, convert, and one-line errors."""

import os
import subprocess
import sys

from helpers import copy_vae_root


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mlx_acestep.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=os.environ
    )


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_the_verbs():
    result = cli("--help")
    assert result.returncode == 0 and "convert" in result.stdout
    result = cli("convert", "--help")
    assert result.returncode == 0 and "--quantize" in result.stdout and "--force" in result.stdout


def test_convert_then_refuse_then_force(fixtures, tmp_path):
    out = tmp_path / "OUT"
    result = cli("convert", fixtures / "checkpoints", out)
    assert result.returncode == 0, result.stderr
    assert "converted vae" in result.stdout and "skipped acestep-v15-turbo" in result.stdout
    assert (out / "vae" / "model.safetensors").is_file()
    assert_one_line_error(cli("convert", fixtures / "checkpoints", out), "already exists", "--force")
    assert cli("convert", fixtures / "checkpoints", out, "--force").returncode == 0


def test_bad_inputs_give_one_line_errors(fixtures, tmp_path):
    assert_one_line_error(cli("convert", tmp_path / "missing", tmp_path / "o1"), "missing", "not found")
    root = copy_vae_root(fixtures, tmp_path / "src")
    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_one_line_error(cli("convert", root, tmp_path / "o2"), "diffusion_pytorch_model.safetensors")
    assert not (tmp_path / "o2").exists()
