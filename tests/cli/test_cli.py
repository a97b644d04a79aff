"""The command line as a user meets it: help, convert, and one-line errors."""

import os

from helpers import assert_one_line_error, copy_vae_root, run_cli


def cli(*args, cwd=None):
    return run_cli(args, cwd)


def test_help_lists_the_verbs():
    result = cli("--help")
    assert result.returncode == 0 and "convert" in result.stdout
    result = cli("convert", "--help")
    assert result.returncode == 0 and "--quantize" in result.stdout and "--force" in result.stdout


def test_convert_then_refuse_then_force(fixtures, tmp_path):
    out = tmp_path / "OUT"
    result = cli("convert", fixtures / "checkpoints", out)
    assert result.returncode == 0, result.stderr
    assert "converted vae" in result.stdout and "converted acestep-5Hz-lm-0.6B" in result.stdout
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

    t = np.arange(22050) / 22050  # 1 s mono at 22.05 kHz: exercises resampling and mono -> stereo
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    result = cli("reconstruct", tmp_path / "in.wav", tmp_path / "out.flac", "--vae", converted / "vae", "--chunk", "32")
    assert result.returncode == 0, result.stderr
    out, sr = sf.read(tmp_path / "out.flac")
    assert sr == 48000 and out.shape == (25 * 1920, 2)  # 1 s -> 25 latent frames

    assert_one_line_error(
        cli("reconstruct", tmp_path / "nope.wav", tmp_path / "o.wav", "--vae", converted / "vae"),
        "nope.wav",
        "not found",
    )
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    assert_one_line_error(
        cli("reconstruct", tmp_path / "bad.wav", tmp_path / "o.wav", "--vae", converted / "vae"),
        "bad.wav",
        "cannot decode",
    )
    assert_one_line_error(
        cli("reconstruct", tmp_path / "in.wav", tmp_path / "o.wav", "--vae", tmp_path / "novae"), "novae"
    )
    assert not (tmp_path / "o.wav").exists()


# -- generate ------------------------------------------------------------------------------------


# The songs here last 5 s: the DiT renders its 128-frame minimum (5.12 s) anyway, a longer song only costs decode
# (and, thinking, planner) time, and nothing checked depends on the length.
def generate(*args, cwd):
    return run_cli(["generate", *args], cwd)


def test_generate_help_documents_the_options():
    result = cli("generate", "--help")
    assert result.returncode == 0
    for option in (
        "--lyrics-file",
        "--duration",
        "--bpm",
        "--key",
        "--time-signature",
        "--language",
        "--seed",
        "--batch",
        "--steps",
        "--shift",
        "--guidance",
        "--model",
        "--quantize",
        "--format",
        "--output",
        "tiny",
    ):
        assert option in result.stdout


def test_generate_from_an_original_layout_checkpoint_root(fixtures, tmp_path):
    import soundfile as sf

    (tmp_path / "lyrics.txt").write_text("[verse]\nhello rain\n")
    result = generate(
        "soft rain",
        "--model",
        fixtures / "checkpoints",
        "--cache-dir",
        tmp_path / "cache",
        "--duration",
        5,
        "--seed",
        4,
        "--lyrics-file",
        "lyrics.txt",
        "--bpm",
        80,
        "--key",
        "A minor",
        "--format",
        "flac",
        "--batch",
        2,
        "-o",
        "rain",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.output
    for name in ("rain_0.flac", "rain_1.flac"):
        info = sf.info(tmp_path / name)
        assert (info.samplerate, info.channels, info.frames) == (48000, 2, 240000)
    assert "seed 4" in result.output and "seed 5" in result.output and "RTF" in result.output


def test_turbo_settings_it_ignores_are_warned_about(converted, tmp_path):
    result = generate(
        "soft rain", "--model", converted, "--duration", 5, "--guidance", 4, "--seed", 0, "-o", "a.wav", cwd=tmp_path
    )
    assert result.exit_code == 0, result.output
    assert "warning: turbo models run without guidance (CFG); guidance=4.0 is ignored" in result.output
    bad = generate("soft rain", "--model", converted, "--duration", 5, "--steps", 30, "-o", "b.wav", cwd=tmp_path)
    assert_one_line_error(bad, "--steps must be between 1 and 8 on turbo models, got 30")


def test_generate_bad_input_is_a_one_line_error_and_writes_nothing(converted, tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o500)
    cases = [
        (["--duration", 0.05], "--duration must be between 0.1 and 600 seconds, got 0.05"),
        (["--duration", 700], "--duration must be between 0.1 and 600 seconds"),
        (["--batch", 9], "--batch must be between 1 and 8"),
        (["-o", "nowhere/a.wav"], "output folder does not exist"),
        (["-o", "a.aac"], "unsupported output format .aac (use .wav, .flac, .mp3, .opus)"),
        (["-o", "a.wav", "--format", "flac"], "--format flac does not match"),
        (["--lyrics", "x", "--lyrics-file", "l.txt"], "not both"),
        (["--lyrics-file", "missing.txt"], "missing.txt: cannot read the lyrics"),
        (["--model", "./nothing-here"], "unknown model './nothing-here'"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["-o", "locked/a.wav"], "not writable"))
    for args, needle in cases:
        assert_one_line_error(generate("soft rain", "--model", converted, *args, cwd=tmp_path), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]


def test_generate_with_the_tiny_model_offline(tmp_path, monkeypatch):
    """The README's offline line: a tiny random checkpoint built once into the cache, the whole pipeline, noise."""
    import soundfile as sf

    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path / "cache"))
    result = generate("gentle piano", "--model", "tiny", "--duration", 5, "-o", "a.wav", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 240000)
    assert "random weights" in result.output and "produces noise" in result.output
    assert (tmp_path / "cache" / "tiny-checkpoint" / "acestep-5Hz-lm-0.6B").is_dir()  # built in the original layout
    again = generate("gentle piano", "--model", "tiny", "--duration", 5, "-o", "b.wav", cwd=tmp_path)
    assert again.exit_code == 0 and "building" not in again.output and "converting" not in again.output


def test_generate_thinks_with_the_tiny_planner_offline(tmp_path, monkeypatch):
    """`--model tiny --thinking`: the tiny planner LM writes metadata and codes, the DiT renders them."""
    import soundfile as sf

    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path / "cache"))
    result = generate(
        "gentle piano",
        "--model",
        "tiny",
        "--thinking",
        "--bpm",
        96,
        "--duration",
        5,
        "--seed",
        4,
        "-o",
        "a.wav",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert sf.info(tmp_path / "a.wav").frames == 240000
    planned = [line for line in result.output.splitlines() if line.strip().startswith("planner:")]
    assert len(planned) == 1 and "bpm 96" in planned[0] and "key " in planned[0] and "caption: " in planned[0]
    assert " lm " in result.output.split("RTF", 1)[1]  # the planner's phase is timed
    for args, needle in [
        (["--no-thinking", "--lm", "0.6B"], "mean nothing with --no-thinking"),
        (["--lm", "4B"], "no planner LM 4B (available: acestep-5Hz-lm-0.6B)"),
        (["--lm-top-p", "0"], "--lm-top-p must be in (0, 1], got 0"),
    ]:
        bad = generate("gentle piano", "--model", "tiny", "--duration", 5, *args, "-o", "b.wav", cwd=tmp_path)
        assert bad.exit_code == 1 and needle in bad.output.splitlines()[-1], (args, bad.output)
    assert not (tmp_path / "b.wav").exists()


def test_an_older_thinking_sidecar_replays_with_februarys_codes_prompt(tmp_path, monkeypatch):
    """0.4 wrote no lm_codes_prompt: its runs used the February codes prompt, and so does their replay."""
    import json

    import numpy as np
    import soundfile as sf

    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path / "cache"))
    base = ["gentle piano", "--model", "tiny", "--thinking", "--bpm", 96, "--duration", 5, "--seed", 4]
    for name, extra in (("now", []), ("feb", ["--lm-codes-prompt", "february"])):
        result = generate(*base, *extra, "-o", f"{name}.wav", cwd=tmp_path)
        assert result.exit_code == 0, result.output
    now, feb = (sf.read(tmp_path / f"{n}.wav")[0] for n in ("now", "feb"))
    assert np.abs(now - feb).max() > 1e-4  # other codes: the prompt reaches the planner
    meta = json.loads((tmp_path / "feb.json").read_text())
    del meta["replay"]["lm_codes_prompt"]
    (tmp_path / "old.json").write_text(json.dumps(meta))
    again = generate("--from-metadata", "old.json", "-o", "again.wav", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert (sf.read(tmp_path / "again.wav")[0] == feb).all()


def test_generate_a_clip_shorter_than_the_models_minimum(converted, tmp_path):
    """3 s, as upstream renders it (128 latent frames), written at its own length."""
    import soundfile as sf

    result = generate("soft rain", "--model", converted, "--duration", 3, "-o", "c.wav", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert (sf.info(str(tmp_path / "c.wav")).frames, sf.info(str(tmp_path / "c.wav")).samplerate) == (144000, 48000)
