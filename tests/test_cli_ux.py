"""Command-line conveniences through the real CLI: captions from files and stdin, -m, the Linux speed hint."""

import os
import subprocess
import sys

import pytest
import soundfile as sf


def cli(args, cwd, stdin=None, preload=True):
    env = {**os.environ, "MLX_ACESTEP_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}
    if not preload:
        env.pop("LD_PRELOAD", None)
    return subprocess.run([sys.executable, "-m", "mlx_acestep.cli", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_caption_from_a_file_and_from_stdin_with_the_short_model_flag(converted, tmp_path):
    (tmp_path / "caption.txt").write_text("soft rain on a tin roof\n")
    done = cli(["generate", "--prompt-file", "caption.txt", "-m", str(converted), "--duration", "10", "--seed", "2",
                "-o", "a.wav"], tmp_path)
    assert done.returncode == 0, done.stderr
    piped = cli(["generate", "--prompt-file", "-", "-m", str(converted), "--duration", "10", "--seed", "2", "-o", "b.wav"],
                tmp_path, stdin="soft rain on a tin roof\n")
    assert piped.returncode == 0, piped.stderr
    a, _ = sf.read(str(tmp_path / "a.wav"))
    b, _ = sf.read(str(tmp_path / "b.wav"))
    assert (a == b).all()  # the same caption, however it came


@pytest.mark.parametrize("args, needle", [
    ([], "give the caption as CAPTION or --prompt-file"),
    (["x", "--prompt-file", "caption.txt"], "give the caption as CAPTION or --prompt-file"),
    (["--prompt-file", "-", "--lyrics-file", "-"], "only one of --prompt-file and --lyrics-file can read stdin"),
    (["--prompt-file", "words.wav", "-o", "words.wav"], "words.wav: is the --prompt-file file"),
])
def test_caption_errors_are_one_line(tmp_path, args, needle):
    (tmp_path / "caption.txt").write_text("x")
    (tmp_path / "words.wav").write_text("a caption in a file with an audio name")
    bad = cli(["generate", *args], tmp_path)
    assert bad.returncode != 0 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_the_linux_speed_hint_shows_only_without_openblas(converted, tmp_path, monkeypatch, capsys):
    """The hint itself (checked in-process: a generation on the reference BLAS takes minutes), and through the
    real CLI that a run with OpenBLAS preloaded (CI's) prints none."""
    import platform

    from mlx_acestep.cli.generate import speed_hint

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    speed_hint()
    hinted = "hint: MLX's bundled CPU BLAS is ~40x slower" in capsys.readouterr().err
    assert hinted == (platform.system() == "Linux")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
    speed_hint()
    assert "hint:" not in capsys.readouterr().err
    if "openblas" in os.environ.get("LD_PRELOAD", ""):
        fast = cli(["generate", "x", "-m", str(converted), "--duration", "10", "--seed", "1", "-o", "fast.wav"], tmp_path)
        assert fast.returncode == 0 and "hint:" not in fast.stderr, fast.stderr


def test_every_file_says_what_made_it_and_replays_bit_for_bit(converted, tmp_path):
    import json

    base = ["-m", str(converted), "--duration", "10"]
    first = cli(["generate", "rain on a tin roof", *base, "--seed", "5", "--bpm", "90", "-o", "a.wav"], tmp_path)
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "a.json").read_text())
    assert (meta["caption"], meta["seed"], meta["dit"], meta["task"]) == ("rain on a tin roof", 5, "acestep-v15-turbo", "text2music")
    assert meta["sampler"]["shift"] == 3.0 and meta["software"].startswith("mlx-acestep ") and meta["replay"]["bpm"] == 90
    with sf.SoundFile(str(tmp_path / "a.wav")) as f:
        assert f.title == "rain on a tin roof" and json.loads(f.comment)["seed"] == 5
    again = cli(["generate", "--from-metadata", "a.json", "-o", "b.wav"], tmp_path)
    from_audio = cli(["generate", "--from-metadata", "a.wav", "-o", "c.wav"], tmp_path)
    assert again.returncode == 0 and from_audio.returncode == 0, again.stderr + from_audio.stderr
    a, b, c = (sf.read(str(tmp_path / n))[0] for n in ("a.wav", "b.wav", "c.wav"))
    assert (a == b).all() and (a == c).all()  # bit for bit
    other = cli(["generate", "--from-metadata", "a.json", "--seed", "6", "-o", "d.wav"], tmp_path)
    assert other.returncode == 0 and json.loads((tmp_path / "d.json").read_text())["seed"] == 6
    assert not (sf.read(str(tmp_path / "d.wav"))[0] == a).all()


def test_sidecars_are_never_replaced_and_bad_metadata_is_one_line(tmp_path):
    (tmp_path / "e.json").write_text("my notes")
    taken = cli(["generate", "x", "-o", "e.wav"], tmp_path)
    assert taken.returncode != 0 and "e.json: already exists" in taken.stderr
    assert (tmp_path / "e.json").read_text() == "my notes" and not (tmp_path / "e.wav").exists()
    (tmp_path / "odd.json").write_text("{}")
    bad = cli(["generate", "--from-metadata", "odd.json"], tmp_path)
    assert bad.returncode != 0 and "not metadata written by mlx-acestep" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cache_dir_list_and_rm(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    made = cli(["generate", "x", "-m", "tiny", "--duration", "10", "--no-thinking", "-o", "t.wav"], tmp_path)
    assert made.returncode == 0, made.stderr
    assert cli(["cache", "dir"], tmp_path).stdout.strip() == str(tmp_path / "cache")
    listed = cli(["cache", "list"], tmp_path).stdout
    name = next(line.split("|")[1].strip() for line in listed.splitlines() if "tiny-checkpoint-" in line)
    assert "acestep-v15-turbo" in listed and "float32" in listed and " GB |" in listed
    (tmp_path / "cache" / "converted" / "mine").mkdir()  # not the converter's: never removed
    assert "no such converted entry" in cli(["cache", "rm", "mine"], tmp_path).stderr
    gone = cli(["cache", "rm", name], tmp_path)
    assert gone.returncode == 0 and f"removed {name}" in gone.stdout
    assert not (tmp_path / "cache" / "converted" / name).exists() and (tmp_path / "cache" / "converted" / "mine").is_dir()
    assert "no converted models" in cli(["cache", "list"], tmp_path).stdout
