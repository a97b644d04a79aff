"""The planner's writing and listening through the real command line on `--model tiny`: `generate --sample`,
`--instrumental`, `--format-input` (printed, recorded, replayed without the planner) and the `describe` verb."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import run_cli

from mlx_acestep.planner import tasks

TINY = ("--model", "tiny")


@pytest.fixture(autouse=True)
def offline_and_short(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tasks, "MAX_TOKENS", 120)  # the tiny LM rambles to upstream's 3500 tokens otherwise


def cli(*args, cwd):
    return run_cli(args, cwd)


def test_a_sample_is_written_printed_recorded_and_replayed(tmp_path):
    song = "a melancholic folk song about leaving home"
    result = cli("generate", "--sample", song, *TINY, "--duration", 5, "--seed", 3, "-o", "folk.wav", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    wrote = [line for line in result.output.splitlines() if line.startswith("  planner wrote (create): bpm ")]
    assert len(wrote) == 1 and "planner writes" in result.output  # its progress bar
    assert " write " in result.output.split("RTF", 1)[1]  # and its phase is timed
    meta = json.loads((tmp_path / "folk.json").read_text())
    (written,) = meta["written"]
    assert written["task"] == "create" and written["seed"] == 3
    assert meta["replay"]["sample"] is None and meta["replay"]["caption"] == meta["caption"] != ""
    again = cli("generate", "--from-metadata", "folk.json", "-o", "again.wav", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert " write " not in again.output.split("RTF", 1)[1] and "planner wrote" not in again.output
    assert np.array_equal(sf.read(tmp_path / "again.wav")[0], sf.read(tmp_path / "folk.wav")[0])


def test_format_input_keeps_the_given_values_and_no_thinking_still_writes(tmp_path):
    args = ("generate", "lofi, rain", "--lyrics", "[verse]\nla", "--format-input", "--bpm", 90, "--no-thinking")
    result = cli(*args, *TINY, "--duration", 5, "-o", "lofi.wav", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "  planner wrote (format): bpm 90" in result.output and "  planner: " not in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--sample", "a song", "gentle piano"), "--sample writes the caption and lyrics"),
        (("--sample", "a song", "--lyrics", "la"), "--sample writes the caption and lyrics"),
        (("gentle piano", "--instrumental"), "--instrumental goes with --sample"),
        (("--sample", "a song", "--language", "xx"), "unknown language 'xx'"),
    ],
)
def test_bad_sample_flags_are_one_line_errors(tmp_path, args, needle):
    result = cli("generate", *args, *TINY, "--duration", 10, "-o", "x.wav", cwd=tmp_path)
    assert result.exit_code == 1 and needle in result.output.splitlines()[-1], result.output
    assert not (tmp_path / "x.wav").exists()


def test_describe_prints_what_the_planner_hears(tmp_path):
    t = np.arange(2 * 48000) / 48000
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 48000)
    result = cli("describe", "tone.wav", *TINY, "--seed", 1, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tone.wav: 10 codes heard, seed 1") and lines[1].startswith("  planner: bpm ")
    assert lines[2].startswith("lyrics:") and "planner writes" in result.stderr and "random weights" in result.stderr
    data = json.loads(cli("describe", "tone.wav", *TINY, "--seed", 1, "--json", cwd=tmp_path).stdout)
    assert len(data["codes"]) == 10 and data["seed"] == 1 and lines[1].startswith(f"  planner: bpm {data['bpm']}")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "AUDIO nope.wav: file not found"),
        (lambda p: (p / "nope.wav").write_bytes(b"RIFF garbage"), "cannot decode audio"),
        (lambda p: sf.write(p / "nope.wav", np.zeros(12000), 48000), "must last between 1 and 600 s"),
        (lambda p: sf.write(p / "nope.wav", np.zeros(48000), 48000), "the recording is silent"),
    ],
)
def test_describe_refuses_bad_audio_in_one_line(tmp_path, make, needle):
    make(tmp_path)
    result = cli("describe", "nope.wav", *TINY, cwd=tmp_path)
    assert result.exit_code == 1 and needle in result.output.splitlines()[-1], result.output
