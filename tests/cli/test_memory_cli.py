"""`generate`'s memory flags on `--model tiny`: a run that cannot fit is refused in one line before loading and
--force runs it; --vae-window is checked and does not change the song."""

import numpy as np
import soundfile as sf
from helpers import assert_one_line_error, run_cli

from mlx_acestep.pipeline import fit
from mlx_acestep.pipeline.memory import Device

SONG = (
    "generate",
    "piano",
    "--model",
    "tiny",
    "--no-thinking",
    "--duration",
    6,
    "--seed",
    3,
)  # 150 frames: 64-frame VAE windows still split it


def test_a_small_device_refuses_then_force_runs_and_the_window_leaves_the_song_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path / "cache"))
    plain = run_cli([*SONG, "-o", "plain.wav"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    monkeypatch.setattr(fit, "device", lambda: Device(2**20, 2**20, metal=False))
    refused = run_cli([*SONG, "-o", "small.wav"], tmp_path)
    assert_one_line_error(refused, "needs about", "the device allows 1.0 MiB", "--force", after_progress=True)
    assert not (tmp_path / "small.wav").exists()
    forced = run_cli([*SONG, "--force", "--vae-window", 64, "-o", "forced.wav"], tmp_path)
    assert forced.returncode == 0, forced.stderr
    np.testing.assert_array_equal(sf.read(tmp_path / "forced.wav")[0], sf.read(tmp_path / "plain.wav")[0])
    assert_one_line_error(run_cli([*SONG, "--vae-window", 10], tmp_path), "--vae-window must be 64 to 8192")
