"""`generate`'s flags for the custom sampling and conditioning the REST side serves (cli/sampler_options.py): each
reaches what it drives as upstream's field does, is refused by the REST side's own rule named by its flag, and is
recorded so that `--from-metadata` renders the same song."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli

BASE = ["--dit", "acestep-v15-base", "--steps", "2", "--no-thinking"]
SCHEDULE = "0.97,0.76,0.5,0.28,0"
CODES = [(7 * i) % 40 for i in range(60)]  # 60 codes at 5 Hz: a 12 s song (upstream's detokenized length)
CODE_TEXT = "".join(f"<|audio_code_{c}|>" for c in CODES)


@pytest.fixture
def seen(monkeypatch):
    """What the DiT and the planner were handed in the run: the render jobs and the planner's top-k at each draw."""
    from mlx_acestep.pipeline import acestep
    from mlx_acestep.planner import lm

    out = {"jobs": [], "top_k": []}
    real_render, real_filter = acestep.render, lm.filter_top_k

    def render(pipe, job, *args, **kwargs):
        out["jobs"].append(job)
        return real_render(pipe, job, *args, **kwargs)

    def filter_top_k(logits, top_k):
        out["top_k"].append(top_k)
        return real_filter(logits, top_k)

    monkeypatch.setattr(acestep, "render", render)
    monkeypatch.setattr(lm, "filter_top_k", filter_top_k)
    return out


def generate(converted, tmp_path, *args, name="a.wav"):
    done = run_cli(
        ["generate", "rain", "-m", converted, "--duration", "10", "--seed", "3", *args, "-o", name], tmp_path
    )
    assert done.returncode == 0, done.output
    return done


def replays_the_same(tmp_path, recorded: dict) -> None:
    """The sidecar records the flags and `--from-metadata` renders the same samples."""
    replay = json.loads((tmp_path / "a.json").read_text())["replay"]
    assert {k: replay[k] for k in recorded} == recorded
    again = run_cli(["generate", "--from-metadata", "a.json", "-o", "b.wav"], tmp_path)
    assert again.returncode == 0, again.output
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])


def test_guidance_kind_interval_and_schedule_reach_the_base_sampler_and_replay(converted, tmp_path, seen):
    flags = ["--guidance-kind", "adg", "--cfg-interval", "0.2", "0.8", "--timesteps", SCHEDULE]
    generate(converted, tmp_path, *BASE, *flags)
    [settings] = [job.settings for job in seen["jobs"]]
    # Upstream: use_adg picks ADG, the interval is the guided share, the schedule runs as given, its steps len - 1.
    assert (settings.guidance, settings.cfg_interval) == ("adg", (0.2, 0.8))
    assert settings.timesteps == [0.97, 0.76, 0.5, 0.28, 0.0] and settings.steps == 4
    replays_the_same(tmp_path, {"guidance_kind": "adg", "cfg_interval": [0.2, 0.8], "timesteps": SCHEDULE})
    assert seen["jobs"][1].settings == settings


@pytest.mark.parametrize("kind", ["apg", "cfg"])
def test_each_guidance_kind_reaches_the_sampler(converted, tmp_path, seen, kind):
    generate(converted, tmp_path, *BASE, "--guidance-kind", kind)
    assert [job.settings.guidance for job in seen["jobs"]] == [kind]


def test_a_turbo_run_takes_the_schedule_too(converted, tmp_path, seen):
    """Upstream's turbo takes a custom schedule as well (the sampler snaps it to turbo's tables, as upstream)."""
    generate(converted, tmp_path, "--no-thinking", "--timesteps", "0.95,0.52,0")
    assert [job.settings.timesteps for job in seen["jobs"]] == [[0.95, 0.52, 0.0]]


def test_lm_top_k_reaches_every_planner_draw_and_replays(converted, tmp_path, seen):
    generate(converted, tmp_path, "--lm-top-k", "7")
    assert seen["top_k"] and set(seen["top_k"]) == {7}
    replays_the_same(tmp_path, {"lm_top_k": 7})


def test_audio_codes_are_rendered_for_their_length_and_replay(converted, tmp_path, seen):
    generate(converted, tmp_path, "--audio-codes", CODE_TEXT)
    [job] = seen["jobs"]
    assert job.condition.codes.tolist() == [CODES]  # the DiT's hints are these codes, the planner not run
    assert not seen["top_k"]
    info = sf.info(str(tmp_path / "a.wav"))
    assert info.frames == len(CODES) // 5 * 48000  # upstream: the song lasts its codes, whatever --duration says
    replays_the_same(tmp_path, {"audio_codes": CODE_TEXT})


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--timesteps", "0.9,abc,0"], "--timesteps must be comma-separated numbers"),
        (["--timesteps", "1.5,0"], "--timesteps must be numbers from 0 to 1"),
        (["--cfg-interval", "0.8", "0.2"], "--cfg-interval must be (start, end) with start <= end"),
        (["--cfg-interval", "0", "2"], "--cfg-interval must be numbers from 0 to 1"),
        (["--lm-top-k", "-1"], "--lm-top-k must be between 0 and"),
        (["--audio-codes", "junk"], "--audio-codes must be <|audio_code_N|> tokens only"),
        (["--audio-codes", "<|audio_code_1|>", "--thinking"], "--thinking writes the codes itself"),
        (["--audio-codes", "<|audio_code_1|>", "--task", "cover", "--src-audio", "ok.wav"], "--audio-codes are for"),
    ],
)
def test_bad_custom_flags_are_refused_by_the_rest_sides_rules(args, needle, tmp_path):
    """The same checks as /release_task's (tests/unit/test_rest_fields.py), named by the flag, before any model."""
    sf.write(tmp_path / "ok.wav", np.zeros((96000, 2), np.float32), 48000)
    assert_one_line_error(run_cli(["generate", "x", "--model", "tiny", *args, "-o", "out.wav"], tmp_path), needle)


def test_the_help_names_every_new_flag():
    text = run_cli(["generate", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--guidance-kind", "--cfg-interval", "--timesteps", "--lm-top-k", "--audio-codes", "--retake-seed"):
        assert flag in text
