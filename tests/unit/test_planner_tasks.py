"""The planner's text tasks on the fixture LM (sampled, as they run by default): every value a `SongSheet` holds is
valid whatever the LM writes, the values a user fixes come back verbatim, a seed reproduces a sheet, and the
answers are read back as upstream reads them. Upstream parity: tests/parity/test_upstream_planner_tasks.py."""

import warnings

import pytest

from mlx_acestep.conditioning.prompts import LANGUAGES
from mlx_acestep.limits import BPM, PLANNER_SECONDS
from mlx_acestep.names import KEYSCALES, TIME_SIGNATURES
from mlx_acestep.planner import tasks
from mlx_acestep.planner.lm import Planner
from mlx_acestep.planner.tasks import answer_lyrics, parse_answer

LM = "acestep-5Hz-lm-0.6B"
BUDGET = 120  # tokens: enough for the block's first fields on the rambling tiny LM, and fast


@pytest.fixture(scope="module")
def planner(converted):
    return Planner.load(converted / LM)


def run(planner, task: str, seed: int, **given):
    if task == "create":
        return tasks.create_sample(planner, "a calm piano song", seed=seed, max_tokens=BUDGET, **given)
    if task == "format":
        return tasks.format_sample(planner, "piano", "[verse]\nla", seed=seed, max_tokens=BUDGET, **given)
    return tasks.understand_codes(planner, [5, 17, 900, 3, 2000], seed=seed, max_tokens=BUDGET, **given)


def assert_valid(sheet) -> None:
    assert sheet.bpm is None or BPM[0] <= sheet.bpm <= BPM[1]
    assert sheet.duration is None or PLANNER_SECONDS[0] <= sheet.duration <= PLANNER_SECONDS[1]
    assert sheet.keyscale is None or sheet.keyscale in KEYSCALES
    assert sheet.language is None or sheet.language in LANGUAGES
    assert sheet.timesignature is None or sheet.timesignature in TIME_SIGNATURES
    assert isinstance(sheet.caption, str) and isinstance(sheet.lyrics, str)


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_value_of_a_sheet_is_valid(planner, task, seed):
    sheet = run(planner, task, seed)
    assert_valid(sheet)
    assert sheet.text.startswith("<think>\nbpm:") and 0 < len(sheet.tokens) <= BUDGET
    assert sheet.bpm is not None  # the first field is always reached, and its value is from the tree


@pytest.mark.parametrize(
    "task, given",
    [
        ("create", {"language": "fr"}),
        ("format", {"bpm": 133, "duration": 47, "keyscale": "Eb minor", "timesignature": "6", "language": "de"}),
    ],
)
def test_user_values_come_back_verbatim(planner, task, given):
    for seed in (0, 1):
        sheet = run(planner, task, seed, **given)
        assert {k: getattr(sheet, k) for k in given} == given
        assert_valid(sheet)


def test_a_seed_reproduces_a_sheet_and_another_seed_differs(planner):
    first = run(planner, "create", 7)
    assert run(planner, "create", 7).tokens == first.tokens
    assert any(run(planner, "create", s).tokens != first.tokens for s in (8, 9))


def test_empty_inputs_are_upstreams_no_user_input(planner, monkeypatch):
    prompts = []
    monkeypatch.setattr(tasks, "write_task", lambda *a, **k: [])
    monkeypatch.setattr(tasks, "task_prompt", lambda task, text: prompts.append(text) or "x")
    tasks.create_sample(planner, "  ")
    tasks.format_sample(planner, "", "")
    tasks.understand_codes(planner, [])
    assert prompts == [
        "NO USER INPUT\n\ninstrumental: false",
        "# Caption\nNO USER INPUT\n\n# Lyric\n[Instrumental]",
        "NO USER INPUT",
    ]


def test_a_long_query_is_cut_with_a_warning(planner, monkeypatch):
    prompts = []
    monkeypatch.setattr(tasks, "write_task", lambda *a, **k: [])
    monkeypatch.setattr(tasks, "task_prompt", lambda task, text: prompts.append(text) or "x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks.create_sample(planner, "la " * 2000)
    assert any("first 256 tokens of the query" in str(w.message) for w in caught)
    assert len(planner.tokenizer.encode(prompts[0].split("\n\ninstrumental")[0])) <= 256


def test_an_answer_is_read_as_upstream_reads_it():
    text = (
        "<think>\nbpm: 120\ncaption: An emotional ballad. The track opens with\n  piano, then\n  drums.\n"
        "duration: 180\ngenres: folk\n<skipped>\nkeyscale: D minor\nlanguage: en\ntimesignature: 4\n</think>\n\n"
        "# Lyric\n[verse]\nhello<|im_end|>"
    )
    assert parse_answer(text) == {
        "bpm": 120,
        "caption": "An emotional ballad. The track opens with piano, then drums.",
        "duration": 180,
        "genres": "folk",
        "keyscale": "D minor",
        "language": "en",
        "timesignature": "4",
    }
    assert answer_lyrics(text) == "[verse]\nhello"
    assert parse_answer("<think>\nbpm: fast\nmood: calm\n</think>") == {"bpm": "fast"}  # upstream keeps the text
    assert answer_lyrics("<think>\nbpm: 90") == ""


def test_a_garbled_answer_leaves_its_fields_empty():
    sheet = tasks._sheet("create", ("<think>\nbpm: 999\nkeyscale: H major\n</think>", [1]), {}, "", 0.0, 0)
    assert (sheet.bpm, sheet.keyscale, sheet.lyrics) == (None, None, "")
