"""`generate_stream`: the song window by window, the same bits as `generate` (pipeline/stream.py)."""

import numpy as np
import pytest

from mlx_acestep.audio import finish_blocks
from mlx_acestep.errors import AceStepError
from mlx_acestep.pipeline import ACEStep, Cancelled, ModelFolders
from mlx_acestep.pipeline.stream import AHEAD

SONG = dict(caption="gentle piano", lyrics="[verse]\nla la", duration=7, seed=5, bpm=90)


@pytest.fixture(scope="module")
def pipe(converted):
    # Small windows (32 frames, overlap 8) so a 7 s song (175 frames) comes in 11 windows: enough to see the first
    # arrive while most are still to decode, short enough to be quick.
    folders = ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae")
    return ACEStep(folders, vae_chunk=32, vae_overlap=8)


def joined(stream, items):
    parts = [[] for _ in range(items)]
    for item, start, audio in stream:
        assert start == sum(len(a) for a in parts[item])  # in order, no gap, no overlap
        parts[item].append(audio)
    return [np.concatenate(p) for p in parts]


@pytest.mark.parametrize("normalize", [True, False])
def test_the_joined_stream_finished_is_generate_bit_for_bit(pipe, normalize):
    whole = pipe.generate(**SONG, batch_size=2, normalize=normalize)
    stream = pipe.generate_stream(**SONG, batch_size=2, normalize=normalize)
    assert stream.info.seeds == whole.seeds and stream.info.samples == whole.audio.shape[1]
    raw = joined(stream, 2)
    for i, item in enumerate(raw):
        finished = finish_blocks(np.max(np.abs(item)), normalize)(item)
        np.testing.assert_array_equal(finished, whole.audio[i])
    # The stream is the VAE's raw output: normalised only by finish_blocks (this song peaks under 1: no limiting).
    assert np.max(np.abs(raw[0])) < 1
    assert np.array_equal(raw[0], whole.audio[0]) != normalize
    assert stream.result.latents.shape == whole.latents.shape and stream.result.audio.shape == (2, 0, 2)


def test_windows_arrive_before_the_song_is_done(pipe):
    decoded = []  # the VAE's progress, seen from the worker thread
    stream = pipe.generate_stream(**SONG, callback=lambda p: decoded.append(p.done) if p.phase == "vae" else None)
    seen = []
    for _, _, audio in stream:
        seen.append((decoded[-1], len(audio)))
    total = len(seen)
    assert total >= 10 and sum(n for _, n in seen) == stream.info.samples
    # The first window is in the reader's hands while most are still to decode (at most AHEAD + 1 run ahead).
    assert seen[0][0] <= AHEAD + 2 < total


def test_a_reader_that_stops_cancels_the_run_and_the_pipeline_goes_on(pipe):
    stream = pipe.generate_stream(**SONG)
    for _ in stream:
        break
    with pytest.raises(Cancelled):
        stream._future.result(timeout=30)
    assert pipe.generate(**(SONG | {"duration": 6})).audio.shape == (1, 288000, 2)


def test_the_run_s_error_reaches_the_reader(pipe, monkeypatch):
    def broken(*args, **kwargs):
        raise AceStepError("the VAE decode produced NaN or infinite values")

    monkeypatch.setattr(pipe.engine, "decode_stream", broken)
    stream = pipe.generate_stream(**SONG)
    with pytest.raises(AceStepError, match="VAE decode"):
        list(stream)


def test_a_stream_saved_is_the_file_generate_saves_and_a_failure_leaves_nothing(pipe, tmp_path):
    import soundfile as sf

    from mlx_acestep.audio_stream import save_stream

    whole = pipe.generate(**SONG)
    whole.save(tmp_path / "whole.wav", subtype="FLOAT")  # every bit kept
    saved = save_stream(
        pipe.generate_stream(**SONG), [tmp_path / "streamed.wav"], "FLOAT", tags=lambda r: [{"title": "x"}]
    )
    np.testing.assert_array_equal(
        sf.read(saved[0], dtype="float32")[0], sf.read(tmp_path / "whole.wav", dtype="float32")[0]
    )
    assert sf.info(saved[0]).frames == whole.audio.shape[1]

    class Broken:  # the run fails after its first window
        def __init__(self, stream):
            self.stream, self.info = stream, stream.info

        def __iter__(self):
            for n, chunk in enumerate(self.stream):
                if n == 1:
                    raise AceStepError("the VAE decode produced NaN or infinite values")
                yield chunk

        def close(self):
            self.stream.close()

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(AceStepError, match="VAE decode"):
        save_stream(Broken(pipe.generate_stream(**SONG)), [tmp_path / "failed.wav"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file, no hidden raw or temporary left
    (tmp_path / "mine.wav").write_bytes(b"the user's")
    with pytest.raises(AceStepError, match="already exists"):
        save_stream(pipe.generate_stream(**SONG), [tmp_path / "mine.wav"])
    assert (tmp_path / "mine.wav").read_bytes() == b"the user's"
