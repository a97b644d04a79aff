"""The planner as songwriter and listener on the pipeline (fixture checkpoints with the tiny planner): the three
tasks' API, their bad input, and generation that writes or tidies the song first and replays without the planner."""

import numpy as np
import pytest

from mlx_acestep.errors import AceStepError, RequestError
from mlx_acestep.pipeline import ACEStep, Cancelled, GenerationRequest, ModelFolders
from mlx_acestep.planner import tasks

BUDGET = 150  # the tiny LM rambles to upstream's 3500-token budget: a shorter one keeps these tests fast


def folders(converted, lm=True):
    lm = converted / "acestep-5Hz-lm-0.6B" if lm else None
    return ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae", lm)


@pytest.fixture(scope="module")
def pipe(converted):
    return ACEStep(folders(converted))


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TOKENS", BUDGET)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 48000)) / 48000
    return np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1).astype(np.float32)


def test_create_sample_is_seeded_and_reports_its_tokens(pipe):
    events = []
    sheet = pipe.create_sample("a folk song about leaving home", seed=3, callback=events.append)
    assert sheet.task == "create" and sheet.seed == 3 and sheet.instrumental is False
    assert pipe.create_sample("a folk song about leaving home", seed=3).tokens == sheet.tokens
    assert {e.phase for e in events} == {"write"} and events[-1].done == events[-1].total == len(sheet.tokens)
    with pytest.raises(Cancelled):
        pipe.create_sample("a folk song", callback=lambda p: False)


def test_format_sample_keeps_what_the_user_gave(pipe):
    sheet = pipe.format_sample(
        "piano", "[verse]\nla", bpm=90, key="d minor", time_signature="3/4", language="fr", seed=1
    )
    assert (sheet.bpm, sheet.keyscale, sheet.timesignature, sheet.language) == (90, "D minor", "3", "fr")
    assert sheet.task == "format" and "language:" not in sheet.text  # upstream skips a language it was given


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda p: p.format_sample("piano", bpm=400), "bpm must be"),
        (lambda p: p.format_sample("piano", key="H major"), "unknown key 'H major'"),
        (lambda p: p.create_sample("x", language="xx"), "unknown language 'xx'"),
        (lambda p: p.create_sample("x", temperature=-1), "lm_temperature must be"),
        (lambda p: p.understand(tone(0.5)), "between 1 and 600 s"),
        (lambda p: p.understand(np.zeros((48000, 2), np.float32)), "the recording is silent"),
        (lambda p: p.understand(np.full((48000, 2), np.nan, np.float32)), "NaN or infinite"),
        (lambda p: p.understand("missing.wav"), "not found"),
    ],
)
def test_bad_input_is_a_one_line_error(pipe, call, needle):
    with pytest.raises(AceStepError) as e:
        call(pipe)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_understand_hears_the_codes_of_a_recording(pipe):
    sheet = pipe.understand(tone(1.0), seed=2)  # short: its VAE encode is most of the cost
    assert sheet.task == "understand" and sheet.codes.shape == (5,)  # 1 s = 25 latent frames = 5 codes
    assert sheet.text.startswith("<think>\nbpm:")


def test_a_model_without_a_planner_says_which_to_add(converted):
    lean = ACEStep(folders(converted, lm=False))
    for call in (lambda: lean.create_sample("x"), lambda: lean.generate(sample="x", duration=10)):
        with pytest.raises(AceStepError, match="needs the planner LM.*lm='1.7B'"):
            call()


def test_a_sample_is_written_then_rendered_and_replays_without_the_planner(pipe):
    song = pipe.generate(sample="a folk song", duration=10, seed=5)
    (sheet,) = song.sheets
    assert sheet.task == "create" and song.request.sample is None and "write" in song.seconds
    assert song.request.caption == (sheet.caption.strip() or "a folk song")
    assert song.request.duration == 10  # what the request gave wins over what the planner wrote
    again = pipe.generate(song.request)
    assert "write" not in again.seconds and np.array_equal(again.audio, song.audio)


def test_format_tidies_the_draft_first_and_keeps_the_given_values(pipe):
    song = pipe.generate("piano", "[verse]\nla", format=True, bpm=90, duration=5, seed=5)
    assert [s.task for s in song.sheets] == ["format"] and song.request.bpm == 90 and not song.request.format
    plain = pipe.generate("piano", "[verse]\nla", bpm=90, duration=5, seed=5)
    assert plain.sheets == [] and "write" not in plain.seconds


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"caption": "piano", "sample": "a song"}, "give a caption or a sample, not both"),
        ({"caption": "piano", "instrumental": True}, "instrumental goes with sample"),
        ({}, "the caption is empty"),
    ],
)
def test_sample_requests_are_checked(fields, needle):
    with pytest.raises(RequestError, match=needle):
        GenerationRequest(**fields)
