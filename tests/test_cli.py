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
    assert "converted vae" in result.stdout and "skipped acestep-5Hz-lm-0.6B" in result.stdout
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


def test_reconstruct_roundtrip_and_audio_errors(converted, tmp_path):
    import numpy as np
    import soundfile as sf

    t = np.arange(22050 * 2) / 22050  # 2 s mono at 22.05 kHz: exercises resampling and mono -> stereo
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    result = cli("reconstruct", tmp_path / "in.wav", tmp_path / "out.flac", "--vae", converted / "vae", "--chunk", "32")
    assert result.returncode == 0, result.stderr
    out, sr = sf.read(tmp_path / "out.flac")
    assert sr == 48000 and out.shape == (50 * 1920, 2)  # 2 s -> 50 latent frames

    assert_one_line_error(cli("reconstruct", tmp_path / "nope.wav", tmp_path / "o.wav", "--vae", converted / "vae"), "nope.wav", "not found")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    assert_one_line_error(cli("reconstruct", tmp_path / "bad.wav", tmp_path / "o.wav", "--vae", converted / "vae"), "bad.wav", "cannot decode")
    assert_one_line_error(cli("reconstruct", tmp_path / "in.wav", tmp_path / "o.wav", "--vae", tmp_path / "novae"), "novae")
    assert not (tmp_path / "o.wav").exists()
