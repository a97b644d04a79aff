"""Phase 1, the constrained `<think>` metadata block (spec 8.3, 8.4), and the whole planner on the fixture LM.

The fixture LM has random weights, so what it writes is noise; what must hold whatever it writes: the block
parses into every field, each value is valid, the fields the user gave are kept verbatim, and phase 2 writes
exactly int(5 d) codes. Stub LMs that always prefer one token drive the constraint into its corners.
"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.conditioning.prompts import LANGUAGES
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.planner.constraint import (
    FIELDS,
    KEYSCALES,
    TIME_SIGNATURES,
    MetadataConstraint,
    parse_think,
    write_metadata,
)
from mlx_acestep.planner.lm import Planner, load_planner_tokenizer

LM = "acestep-5Hz-lm-0.6B"


@pytest.fixture(scope="module")
def planner(converted):
    return Planner(load_component(converted / LM, "lm"), load_planner_tokenizer(converted / LM))


def assert_valid(meta: dict):
    assert set(meta) == set(FIELDS), meta
    assert 30 <= meta["bpm"] <= 300 and 10 <= meta["duration"] <= 600
    assert meta["keyscale"] in KEYSCALES and meta["language"] in LANGUAGES and meta["timesignature"] in TIME_SIGNATURES
    assert "\n" not in meta["caption"]


@pytest.mark.parametrize("seed", range(8))
def test_every_think_block_parses_into_valid_fields(planner, seed):
    result = planner.think("warm lofi beat with soft keys", "[verse]\nla la la", {}, seed=seed)
    assert result.text.startswith("<think>\nbpm:") and result.text.endswith("\n</think>")
    assert result.metadata == parse_think(result.text)
    assert_valid(result.metadata)
    assert planner.tokenizer.decode(result.tokens) == result.text


@pytest.mark.parametrize(
    "user",
    [
        {"bpm": 128},
        {"keyscale": "F# minor", "language": "en"},
        {"duration": 45, "timesignature": "3", "bpm": 72},
        {"caption": "a given caption: with a colon"},
    ],
)
def test_user_fields_are_kept_verbatim(planner, user):
    for seed in range(3):
        meta = planner.think("calm piano", "[Instrumental]", user, seed=seed).metadata
        assert {k: meta[k] for k in user} == user
        assert_valid(meta)


def test_sampling_is_seeded(planner):
    first = planner.think("calm piano", "[Instrumental]", {}, seed=5).tokens
    assert planner.think("calm piano", "[Instrumental]", {}, seed=5).tokens == first
    assert any(planner.think("calm piano", "[Instrumental]", {}, seed=s).tokens != first for s in (6, 7))


def test_parse_undoes_yaml_wrapping():
    text = (
        "<think>\nbpm: 120\ncaption: An emotional ballad. The track opens with\n  piano and strings, then\n"
        "  drums.\nduration: 180\nkeyscale: D minor\nlanguage: en\ntimesignature: 4\n</think>"
    )
    assert parse_think(text) == {
        "bpm": 120,
        "caption": "An emotional ballad. The track opens with piano and strings, then drums.",
        "duration": 180,
        "keyscale": "D minor",
        "language": "en",
        "timesignature": "4",
    }


# -- the constraint's corners, driven by stub LMs ---------------------------------------------------


def stub_lm(constraint, prefer):
    """A `step` whose logits prefer the tokens of `prefer` (best first), then everything else equally."""
    logits = np.zeros(constraint.vocab_size, np.float32)
    for rank, text in enumerate(prefer):
        for i in constraint.tokenizer.encode(text, add_special_tokens=False)[:1]:
            logits[i] = max(logits[i], 20.0 - rank)
    return lambda ids: mx.array(logits)


def argmax(scores):
    return int(mx.argmax(scores).item())


@pytest.fixture(scope="module")
def constraint(planner):
    return planner.constraint


def test_numbers_stay_in_range(constraint):
    # always "9" first: bpm and duration can take two nines but not three (999 > 300, 600)
    meta = write_metadata(stub_lm(constraint, ["9", "\n", " x"]), constraint, {}, argmax).metadata
    assert (meta["bpm"], meta["duration"]) == (99, 99)
    # "0" before "3": no leading zero, then 300 and not 3000; "3" before "0": 33 (330 > 300), duration 333
    meta = write_metadata(stub_lm(constraint, ["0", "3", "\n", " x"]), constraint, {}, argmax).metadata
    assert (meta["bpm"], meta["duration"]) == (300, 300)
    meta = write_metadata(stub_lm(constraint, ["3", "0", "\n", " x"]), constraint, {}, argmax).metadata
    assert (meta["bpm"], meta["duration"]) == (33, 333)
    assert_valid(meta)


def test_a_caption_that_never_ends_is_cut_at_512_tokens(constraint):
    result = write_metadata(stub_lm(constraint, [" la", "\n"]), constraint, {}, argmax)
    assert_valid(result.metadata)
    assert result.metadata["caption"] == " ".join(["la"] * 512)  # the reference's cap on the caption it writes


def test_a_caption_ends_at_an_unindented_line_and_continues_at_an_indented_one(constraint):
    """The stub wants " la", " song", a line break, " A" (indented: the caption goes on), a line break, then "x"
    (not indented: the caption is over and the next field name is forced)."""
    script = iter([" la", " song", "\n", " A", "\n", "x"])
    ids = {t: constraint.tokenizer.encode(t, add_special_tokens=False) for t in (" la", " song", "\n", " A", "x")}
    assert all(len(v) == 1 for v in ids.values())  # single tokens in the fixture vocabulary
    state = {"want": None}

    def step(new):
        if state["want"] is None or (new and new[-1] == ids[state["want"]][0]):
            state["want"] = next(script, "x")
        logits = np.zeros(constraint.vocab_size, np.float32)
        logits[ids[state["want"]][0]] = 10.0
        return mx.array(logits)

    result = write_metadata(step, constraint, {"bpm": 90}, argmax)
    assert "\ncaption: la song\n A\nduration:" in result.text
    assert result.metadata["caption"] == "la song A"
    assert_valid(result.metadata)


def test_the_vocabulary_past_the_tokenizer_and_special_tokens_never_reach_the_caption(constraint, planner):
    ok = np.array(constraint.caption_ok)
    assert not ok[len(planner.tokenizer) :].any()
    for token in ("<think>", "</think>", "<|im_end|>", "<|audio_code_0|>", "`"):
        assert not ok[
            planner.tokenizer.convert_tokens_to_ids(token) if token != "`" else planner.tokenizer.encode(token)[0]
        ]


def test_a_tokenizer_without_think_tokens_is_refused(planner):
    class NoThink:
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if "think" in text else [3]

    with pytest.raises(AceStepError, match="no <think>"):
        MetadataConstraint(NoThink(), 16)


# -- the whole planner ------------------------------------------------------------------------------


@pytest.mark.parametrize("duration, n_codes", [(10, 50), (10.5, 52), (12.34, 61)])
def test_a_plan_has_exactly_the_codes_of_its_duration(planner, duration, n_codes):
    plan = planner.plan("calm piano", duration=duration, bpm=100, seed=1)
    assert plan.codes.shape == (n_codes,) and plan.codes.min() >= 0 and plan.codes.max() < planner.codes.count
    assert plan.metadata["bpm"] == 100 and plan.metadata["duration"] == int(duration)
    assert plan.think and plan.seconds["think"] > 0


def test_all_metas_given_skip_phase_one(planner):
    plan = planner.plan("calm piano", duration=10, bpm=90, keyscale="A minor", timesignature="3/4", seed=2)
    assert plan.think == ""
    assert plan.metadata == {"bpm": 90, "keyscale": "A minor", "timesignature": "3", "duration": 10}


def test_the_planner_chooses_the_duration_when_none_is_given(planner):
    plan = planner.plan("calm piano", seed=3)
    assert 10 <= plan.metadata["duration"] <= 600 and plan.codes.shape == (plan.metadata["duration"] * 5,)
    for seed in range(4):  # a checkpoint that renders at most 12 s
        assert 10 <= planner.plan("calm piano", seed=seed, max_duration=12).metadata["duration"] <= 12
