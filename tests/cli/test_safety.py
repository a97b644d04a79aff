"""Nothing lost, nothing silent: each case a careful user or a hostile tester tried (issue 15), through the real
command line in a temporary folder where it is a CLI case.

The tiny model is built once into a cache shared by the module; every generation here is 10 s of tiny audio.
"""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli

from mlx_acestep.errors import AceStepError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("safety-cache")


@pytest.fixture
def run(cache, tmp_path, monkeypatch):
    """`run(*args)`: the CLI in `tmp_path` with the shared cache; unpacks as (exit code, output)."""
    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return lambda *args: run_cli(args)


def wav(path, seconds=1.5, rate=48000, value=None):
    data = np.random.default_rng(0).uniform(-0.3, 0.3, (int(seconds * rate), 2)).astype(np.float32)
    if value is not None:
        data[100] = value
    sf.write(str(path), data, rate, subtype="FLOAT")
    return path


GEN = ("generate", "soft rain", "--model", "tiny", "--no-thinking", "--duration", 10)


# -- data loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["dst is src", "dst contains src", "dst inside src"])
def test_convert_never_writes_over_or_around_its_source(fixtures, tmp_path, run, layout):
    src = tmp_path / "ck" / "raw"
    shutil.copytree(fixtures / "checkpoints" / "vae", src / "vae")
    dst = {"dst is src": src, "dst contains src": tmp_path / "ck", "dst inside src": src / "out"}[layout]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert_one_line_error(run("convert", src, dst, "--force"), "the checkpoint folder")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_force_replaces_only_a_folder_the_converter_wrote(fixtures, tmp_path, run):
    src = tmp_path / "src"
    shutil.copytree(fixtures / "checkpoints" / "vae", src / "vae")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert_one_line_error(run("convert", src, mine, "--force"), "holds files the converter did not write")
    assert (mine / "notes.txt").read_text() == "my notes"
    code, output = run("convert", src, tmp_path / "out")
    assert code == 0, output
    assert run("convert", src, tmp_path / "out", "--force").returncode == 0  # its own output: replaced


def test_a_folder_that_appears_during_a_conversion_is_not_replaced(fixtures, tmp_path, monkeypatch):
    """Two conversions into one DST: the second finds the first's result when it publishes, and stops."""
    from mlx_acestep.convert import convert_checkpoints, converter

    src = tmp_path / "src"
    shutil.copytree(fixtures / "checkpoints" / "vae", src / "vae")
    dst = tmp_path / "out"
    real = converter.CONVERTERS["vae"]

    def racing(*args):
        summary = real(*args)
        dst.mkdir()
        (dst / "first.txt").write_text("the other run's result")
        return summary

    monkeypatch.setitem(converter.CONVERTERS, "vae", racing)
    with pytest.raises(AceStepError, match="appeared while converting"):
        convert_checkpoints(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["first.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing half-written left


def test_the_output_is_never_an_input(tmp_path, run):
    source = wav(tmp_path / "s.wav")
    original = source.read_bytes()
    assert_one_line_error(
        run("generate", "x", "--model", "tiny", "--task", "cover", "--src-audio", "s.wav", "-o", "s.wav"),
        "is the --src-audio file",
    )
    (tmp_path / "words.wav").write_text("la la")  # a lyrics file with an audio name: still an input
    assert_one_line_error(
        run(*GEN, "--lyrics-file", "words.wav", "-o", "words.wav", "--overwrite"), "is the --lyrics-file file"
    )
    assert (tmp_path / "words.wav").read_text() == "la la"
    assert_one_line_error(run(*GEN, "--ref-audio", "s.wav", "-o", "s.wav", "--overwrite"), "is the --ref-audio file")
    assert source.read_bytes() == original


def test_an_existing_output_is_kept_unless_overwrite_is_given(tmp_path, run):
    (tmp_path / "song.wav").write_bytes(b"mine")
    assert_one_line_error(run(*GEN, "-o", "song.wav"), "song.wav: already exists (pass --overwrite")
    assert (tmp_path / "song.wav").read_bytes() == b"mine"
    (tmp_path / "b_1.wav").write_bytes(b"mine too")  # a batch's second file
    assert_one_line_error(run(*GEN, "--batch", 2, "-o", "b.wav"), "b_1.wav: already exists")
    assert not (tmp_path / "b_0.wav").exists() and (tmp_path / "b_1.wav").read_bytes() == b"mine too"
    code, output = run(*GEN, "-o", "song.wav", "--overwrite", "--seed", 3)
    assert code == 0, output
    assert sf.info(tmp_path / "song.wav").frames == 480000


def test_the_default_name_never_collides(tmp_path, run):
    (tmp_path / "acestep-7.wav").write_bytes(b"mine")
    code, output = run(*GEN, "--seed", 7)
    assert code == 0, output
    assert (tmp_path / "acestep-7.wav").read_bytes() == b"mine"
    assert sf.info(tmp_path / "acestep-7-2.wav").frames == 480000 and "wrote acestep-7-2.wav" in output


def test_python_save_keeps_existing_files_unless_asked(tmp_path, song):
    (tmp_path / "a.wav").write_bytes(b"mine")
    with pytest.raises(AceStepError, match="already exists"):
        song.save(tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == b"mine"
    song.save(tmp_path / "a.wav", overwrite=True)
    assert sf.info(tmp_path / "a.wav").frames == song.audio.shape[1]


def test_a_failed_save_says_why_and_keeps_the_audio(tmp_path, song, monkeypatch):
    import errno

    import mlx_acestep.audio as audio

    real = audio.sf.SoundFile

    def full_disk(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(audio.sf, "SoundFile", full_disk)
    with pytest.raises(
        AceStepError, match=r"could not write .*a\.wav \(No space left on device\); the audio was saved to"
    ) as info:
        song.save(tmp_path / "a.wav")
    rescued = Path(str(info.value).split("saved to ", 1)[1].split(" instead", 1)[0])
    try:
        data, rate = sf.read(rescued, dtype="float32")
        assert rate == 48000 and data.shape == song.audio[0].shape
    finally:
        rescued.unlink(missing_ok=True)
    assert list(tmp_path.iterdir()) == []  # no half-written file


@pytest.fixture(scope="module")
def song(cache):
    from mlx_acestep import ACEStep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = ACEStep.from_pretrained("tiny", cache_dir=cache, lm=None)
        return pipe.generate("piano", duration=10, seed=1)


# -- silent wrong output ------------------------------------------------------------------------------------


def test_non_finite_input_audio_is_refused(tmp_path, run, song):
    wav(tmp_path / "nan.wav", value=np.nan)
    wav(tmp_path / "inf.wav", value=np.inf)
    for name in ("nan.wav", "inf.wav"):
        assert_one_line_error(
            run("generate", "x", "--model", "tiny", "--task", "cover", "--src-audio", name, "-o", "o.wav"),
            "NaN or infinite samples",
            after_progress=True,  # the audio is read once the model is resolved
        )
        assert_one_line_error(
            run(*GEN, "--ref-audio", name, "-o", "o.wav"), "NaN or infinite samples", after_progress=True
        )
    assert not (tmp_path / "o.wav").exists()
    from mlx_acestep import ACEStep

    pipe = ACEStep.from_pretrained("tiny", cache_dir=Path(os.environ["MLX_ACESTEP_CACHE"]), lm=None)
    bad = np.zeros((48000 * 2, 2), np.float32)
    bad[5] = np.nan
    with pytest.raises(AceStepError, match="NaN or infinite samples"):
        pipe.generate("x", task="cover", src_audio=bad)


def test_non_finite_model_output_is_an_error_naming_the_phase(cache, monkeypatch, tmp_path):
    import dataclasses

    from mlx_acestep import ACEStep
    from mlx_acestep.engine import Engine

    class Overflowing(Engine):  # a DiT whose steps overflow
        def denoise(self, *args, **kwargs):
            for step in super().denoise(*args, **kwargs):
                yield dataclasses.replace(step, x=step.x * float("nan"))

    pipe = ACEStep.from_pretrained("tiny", cache_dir=cache, lm=None)
    pipe.engine = Overflowing(pipe.silence_latent)
    with pytest.raises(AceStepError, match=r"the diffusion \(DiT\) phase produced NaN or infinite values"):
        pipe.generate("x", duration=10, seed=1)


@pytest.mark.parametrize("damage", ["missing", "not json"])
def test_a_damaged_converted_turbo_is_an_error_not_the_base_model(converted, tmp_path, damage):
    from mlx_acestep.hub import resolve_model

    root = tmp_path / "model"
    shutil.copytree(converted, root)
    config = root / "acestep-v15-turbo" / "config.json"
    config.unlink() if damage == "missing" else config.write_text("{not json")
    with pytest.raises(AceStepError, match="damaged converted component"):
        resolve_model(root, cache_dir=tmp_path / "cache")


def test_integer_pcm_arrays_are_scaled_and_other_types_refused():
    from mlx_acestep.conditioning.sources import read_audio

    floats = np.random.default_rng(1).uniform(-0.5, 0.5, (48000, 2)).astype(np.float32)
    pcm16 = np.round(floats * 32767).astype(np.int16)
    np.testing.assert_allclose(read_audio(pcm16), floats, atol=2 / 32768)
    np.testing.assert_allclose(read_audio((floats * 2**31).astype(np.int32)), floats, atol=1e-6)
    with pytest.raises(AceStepError, match="samples of type bool"):
        read_audio(floats > 0)
    with pytest.raises(AceStepError, match="samples of type complex"):
        read_audio(floats.astype(np.complex64))


def test_surprising_requests_are_errors_or_say_what_will_happen(tmp_path, run):
    wav(tmp_path / "s.wav", seconds=1.2)
    assert_one_line_error(
        run(
            "generate",
            "x",
            "--model",
            "tiny",
            "--task",
            "repaint",
            "--src-audio",
            "s.wav",
            "--repaint-end",
            -4,
            "-o",
            "o.wav",
        ),
        "--repaint-end must be after 0 s, got -4",
    )
    code, output = run("generate", "x", "--model", "tiny", "--task", "cover", "--src-audio", "s.wav", "-o", "o.wav")
    assert code == 0 and "warning" not in output, output  # a short source is a short song (issue 29): no warning
    assert sf.info(tmp_path / "o.wav").frames == 30 * 1920
    for task in ("extract", "lego"):
        code, output = run(
            "generate", "x", "--model", "tiny", "--task", task, "--src-audio", "s.wav", "-o", f"{task}.wav"
        )
        assert code == 0 and f"warning: no track given: {task} uses the generic instruction" in output, output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lm-cfg-scale", "nan"], "--lm-cfg-scale must be a number, got nan"),
        (["--lm-temperature", "nan"], "--lm-temperature must be a number, got nan"),
        (["--key", "Z# ultra"], "unknown key 'Z# ultra' for --key"),
        (["--time-signature", "abc"], "--time-signature must be one of 2, 3, 4, 6"),
        (
            ["--task", "repaint", "--src-audio", "s.wav", "--repaint-start", "nan"],
            "--repaint-start must be a number, got nan",
        ),
        (["--cache-dir", "file.txt"], "file.txt: is a file, not a folder (the model cache"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_flag(tmp_path, run, args, needle):
    wav(tmp_path / "s.wav")
    (tmp_path / "file.txt").write_text("x")
    assert_one_line_error(run("generate", "x", "--model", "tiny", *args, "-o", "o.wav"), needle)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(seed=1.5), "seed must be a whole number"),
        (dict(bpm="fast"), "bpm must be a whole number, got 'fast'"),
        (dict(lm_top_p=0), r"lm_top_p must be in \(0, 1\], got 0"),
        (dict(duration="30"), "duration must be a number of seconds, got '30'"),
        (dict(caption=123), "caption must be text, got int"),
    ],
)
def test_bad_api_values_are_one_line_errors_naming_the_argument(fields, message):
    from mlx_acestep.pipeline import GenerationRequest

    with pytest.raises(AceStepError, match=message) as info:
        GenerationRequest(**{"caption": "x", **fields})
    assert "\n" not in str(info.value)


# -- huge input -----------------------------------------------------------------------------------------------


def test_a_huge_caption_and_lyrics_file_are_cut_with_a_warning(tmp_path, run):
    """100 kB of caption and 10 MB of lyrics with thinking on: cut to what the models read, in seconds, warned."""
    import time

    (tmp_path / "long.txt").write_text("la la la, the night is long\n" * 360_000)  # 10 MB
    start = time.perf_counter()
    code, output = run(
        "generate",
        "rain " * 20_000,
        "--model",
        "tiny",
        "--thinking",
        "--duration",
        10,
        "--bpm",
        90,
        "--key",
        "C major",
        "--time-signature",
        4,
        "--lyrics-file",
        "long.txt",
        "-o",
        "o.wav",
    )
    assert code == 0, output[-2000:]
    assert time.perf_counter() - start < 120
    assert "the planner reads the first 256 tokens of the caption" in output
    assert "the planner reads the first 2048 tokens of the lyrics" in output
    assert "truncated to 256" in output and "truncated to 2048" in output  # the DiT's prompts, as the reference


# -- leftovers and permissions --------------------------------------------------------------------------------


def test_output_files_get_the_umask_permissions(tmp_path, song):
    old = os.umask(0o022)
    try:
        song.save(tmp_path / "new.wav")
        (tmp_path / "old.wav").write_bytes(b"x")
        os.chmod(tmp_path / "old.wav", 0o644)
        song.save(tmp_path / "old.wav", overwrite=True)
    finally:
        os.umask(old)
    assert (tmp_path / "new.wav").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "old.wav").stat().st_mode & 0o777 == 0o644


def test_what_a_killed_run_left_behind_is_cleaned_at_the_next_start(tmp_path, song):
    from mlx_acestep.hub import open_cache

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has ended
    cache = tmp_path / "cache"
    stale = [
        cache / "converted" / f".turbo-123.{pid}-0123abcd.partial",
        cache / f".tiny-checkpoint.{pid}-89abcdef.partial",
    ]
    live = cache / "converted" / f".other.{os.getpid()}-0123abcd.partial"  # a conversion under way in this process
    for folder in [*stale, live]:
        folder.mkdir(parents=True)
        (folder / "weights").write_bytes(b"x" * 100)
    (cache / "converted" / "keep-me").mkdir()
    open_cache(cache)
    assert not any(p.exists() for p in stale) and live.is_dir() and (cache / "converted" / "keep-me").is_dir()
    part = tmp_path / f".song.wav.{pid}-76543210.part"
    part.write_bytes(b"half")
    song.save(tmp_path / "song.wav")
    assert not part.exists()


def test_the_peak_memory_line_says_which_memory(tmp_path, run):
    code, output = run(*GEN, "-o", "a.wav")
    assert code == 0 and "GiB (MLX arrays)" in output and "GiB resident (the process)" in output, output
