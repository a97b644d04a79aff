"""`generate --stream`: the file written window by window is the file `generate` writes, and a run that fails part
way leaves nothing (cli/streamed.py, audio_stream.py). 6 s of tiny audio (150 frames) in 32-frame windows (10 of
them)."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli

from mlx_acestep import ACEStep
from mlx_acestep.engine import Engine
from mlx_acestep.errors import AceStepError

GEN = ("generate", "soft rain", "--model", "tiny", "--no-thinking", "--duration", 6, "--seed", 3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stream-cache")


@pytest.fixture
def run(cache, tmp_path, monkeypatch):
    init = ACEStep.__init__
    monkeypatch.setattr(
        ACEStep, "__init__", lambda self, *a, **k: init(self, *a, **k | {"vae_chunk": 32, "vae_overlap": 8})
    )
    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return lambda *args: run_cli(args)


def test_the_streamed_file_and_sidecar_are_generate_s(run, tmp_path):
    for name, extra in (("whole.flac", ()), ("streamed.flac", ("--stream",))):
        code, output = run(*GEN, "-o", name, *extra)
        assert code == 0, output
    whole, streamed = (sf.read(tmp_path / n, dtype="float32")[0] for n in ("whole.flac", "streamed.flac"))
    np.testing.assert_array_equal(streamed, whole)
    assert np.max(np.abs(streamed)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # normalised, as without --stream
    sidecar = json.loads((tmp_path / "streamed.json").read_text())
    assert sidecar["seed"] == 3
    titles = [sf.SoundFile(tmp_path / n).title for n in ("whole.flac", "streamed.flac")]
    assert titles[0] and titles[1] == titles[0]  # tagged as generate tags


def test_a_run_that_fails_after_its_first_window_leaves_nothing(run, tmp_path, monkeypatch):
    real = Engine.decode_stream

    def failing(self, vae, latents, chunk, overlap, sink, progress=None):
        def once(item, start, audio):
            if start > 0:
                raise AceStepError("the VAE decode produced NaN or infinite values (injected)")
            sink(item, start, audio)

        return real(self, vae, latents, chunk, overlap, once, progress)

    monkeypatch.setattr(Engine, "decode_stream", failing)
    (tmp_path / "keep.txt").write_text("mine")
    assert_one_line_error(run(*GEN, "-o", "song.wav", "--stream"), "injected", after_progress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no song, no sidecar, no hidden file
