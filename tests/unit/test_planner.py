"""The planner's prompts, its sampler and the audio-code phase (spec 8.2, 8.4, 8.5) on the fixture LM."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component
from mlx_acestep.planner.lm import (
    CodeTokens,
    chat,
    codes_prompts,
    filter_top_k,
    filter_top_p,
    generate_codes,
    load_planner_tokenizer,
    metadata_yaml,
    sample,
)

LM = "acestep-5Hz-lm-0.6B"


def test_chat_template_renders_as_the_reference(fixtures):
    """Phase 1 against the checkpoint's own chat template; the closed phase-2 turn against the spec's rendering of
    the standard Qwen3 template (spec 8.2: the tiny fixture LM ships a simplified ChatML template without the
    reasoning split, so it cannot serve for phase 2)."""
    tok = load_planner_tokenizer(fixtures / "checkpoints" / LM)
    messages = [{"role": "system", "content": "SYS\n\n"}, {"role": "user", "content": "# Caption\nx\n\n# Lyric\ny\n"}]
    head = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat("SYS\n\n", "# Caption\nx\n\n# Lyric\ny\n") == head
    think = "bpm: 120\ncaption: calm piano\nduration: 30"
    assert (
        chat("SYS\n\n", "# Caption\nx\n\n# Lyric\ny\n", think) == head + f"<think>\n{think}\n</think>\n\n<|im_end|>\n"
    )
    assert chat("SYS\n\n", "# Caption\nx\n\n# Lyric\ny\n", "") == head + "<think>\n\n</think>\n\n<|im_end|>\n"


def test_metadata_yaml_sorts_keys_and_normalises_values():
    text = metadata_yaml(
        {
            "timesignature": "3/4",
            "bpm": "96",
            "keyscale": "D minor",
            "caption": "warm",
            "duration": 30,
            "language": "en",
        }
    )
    assert text == "bpm: 96\ncaption: warm\nduration: 30\nkeyscale: D minor\nlanguage: en\ntimesignature: 3"


def test_unconditional_prompt_uses_a_meaningful_negative_prompt_only():
    """The February form (0.4's runs replay with it); the current one is held to upstream's own prompts in
    tests/parity/test_upstream_planner.py."""
    cond, uncond = codes_prompts("calm piano", "[verse]", {"bpm": 90}, form="february")
    assert (
        "<think>\nbpm: 90\n</think>" in cond and "<think>\n\n</think>" in uncond and "# Caption\ncalm piano" in uncond
    )
    _, uncond = codes_prompts("calm piano", "[verse]", {"bpm": 90}, negative="harsh noise", form="february")
    assert "# Caption\nharsh noise" in uncond


def test_code_range_comes_from_the_tokenizer(fixtures):
    codes = CodeTokens.from_tokenizer(load_planner_tokenizer(fixtures / "checkpoints" / LM))
    assert (codes.first_id, codes.count, codes.eos_id) == (538, 2048, 514)  # the tiny LM: 2048 codes
    assert codes.limit(1000).count == 1000 and codes.limit(64000) == codes  # capped by the DiT's codebook


def test_the_head_over_code_rows_matches_the_full_head(converted):
    """The codes phase computes only the code rows of the output head: the same numbers, float and quantized."""
    import mlx.nn as nn

    lm = load_component(converted / LM, "lm")
    h = lm.hidden(mx.array([[1, 2, 3, 4]]))
    full = lm.head()(h)
    np.testing.assert_allclose(
        np.array(lm.head(538, 538 + 2048)(h)), np.array(full[..., 538 : 538 + 2048]), rtol=1e-5, atol=1e-5
    )
    nn.quantize(lm, group_size=32, bits=8)
    full = lm.head()(h)
    np.testing.assert_allclose(np.array(lm.head(538, 600)(h)), np.array(full[..., 538:600]), rtol=1e-5, atol=1e-5)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = mx.log(mx.array([0.5, 0.2, 0.15, 0.1, 0.05]))
    kept = np.isfinite(np.array(filter_top_p(logits, 0.8)))
    assert kept.tolist() == [True, True, True, False, False]  # 0.5 + 0.2 < 0.8 <= 0.85
    assert np.isfinite(np.array(filter_top_p(logits, 0.3))).tolist() == [True, False, False, False, False]


def test_sampling_follows_temperature_and_top_p():
    """20000 draws against the exact distribution: top-p 0.8 on the raw softmax, then temperature 0.5."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    logits = mx.broadcast_to(mx.log(mx.array(p, mx.float32)), (20000, 5))
    draws = np.array(sample(logits, 0.5, 0.8, mx.random.key(3)))
    want = p[:3] ** 2 / np.sum(p[:3] ** 2)  # tempered by 1/0.5 over the three kept tokens
    freq = np.bincount(draws, minlength=5) / draws.size
    assert freq[3:].sum() == 0
    assert np.abs(freq[:3] - want).max() < 0.015  # ~4 standard errors
    assert np.array(sample(logits[:1], 0.0, 0.9, mx.random.key(0))).tolist() == [0]  # temperature 0: argmax


def test_top_k_then_top_p_as_upstreams_sampler():
    """llm_inference.py:418-436, 2581-2585: top-k keeps the k likeliest (ties with the k-th too), then top-p runs on
    the softmax of what is left, then temperature."""
    logits = mx.log(mx.array([0.1, 0.4, 0.2, 0.2, 0.1]))
    assert np.isfinite(np.array(filter_top_k(logits, 2))).tolist() == [False, True, True, True, False]  # a tie
    assert np.isfinite(np.array(filter_top_k(logits, 0))).all()  # 0: off
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    many = mx.broadcast_to(mx.log(mx.array(p, mx.float32)), (20000, 5))
    draws = np.array(sample(many, 1.0, 0.75, mx.random.key(5), top_k=3))
    kept = p[:3] / p[:3].sum()  # top-k 3 leaves 0.59 / 0.24 / 0.18; top-p 0.75 then keeps the first two
    want = kept[:2] / kept[:2].sum()
    freq = np.bincount(draws, minlength=5) / draws.size
    assert freq[2:].sum() == 0 and np.abs(freq[:2] - want).max() < 0.015


def test_codes_phase_writes_exactly_the_requested_codes(converted, fixtures):
    lm = load_component(converted / LM, "lm")
    tok = load_planner_tokenizer(converted / LM)
    codes = CodeTokens.from_tokenizer(tok)
    cond, uncond = codes_prompts("calm piano", "[Instrumental]", {"bpm": 90, "duration": 10})
    args = (lm, tok.encode(cond), tok.encode(uncond), 50, codes, tok.pad_token_id)
    seen = []
    out = generate_codes(*args, seed=7, callback=lambda d, n: seen.append(d))
    assert out.shape == (50,) and out.min() >= 0 and out.max() < codes.count
    assert seen[-1] == 50
    np.testing.assert_array_equal(generate_codes(*args, seed=7), out)  # seeded
    assert not np.array_equal(generate_codes(*args, seed=8), out)
    greedy = generate_codes(*args, temperature=0.0)
    np.testing.assert_array_equal(greedy, cfg_argmax_reference(lm, tok, cond, uncond, 50, codes))
    unguided = generate_codes(*args, cfg_scale=1.0, temperature=0.0)  # the conditional row alone, no mask
    np.testing.assert_array_equal(unguided, cfg_argmax_reference(lm, tok, cond, uncond, 50, codes, scale=1.0))
    with pytest.raises(AceStepError, match="at least one code"):
        generate_codes(*args[:3], 0, *args[4:])


def cfg_argmax_reference(lm, tok, cond, uncond, n, codes, scale=2.0):
    """The same decode the slow, obvious way: full forwards over the growing left-padded batch, no cache."""
    from mlx_acestep.planner.lm import left_pad

    rows = [tok.encode(cond), tok.encode(uncond)]
    out = []
    for _ in range(n):
        ids, mask = left_pad(rows, tok.pad_token_id)
        logits = lm.logits(ids, key_mask=mask)[:, -1].astype(mx.float32)
        guided = np.array(logits[1] + scale * (logits[0] - logits[1]))
        allowed = np.zeros_like(guided, bool)
        allowed[codes.first_id : codes.first_id + codes.count] = True
        token = int(np.argmax(np.where(allowed, guided, -np.inf)))
        out.append(token - codes.first_id)
        rows = [r + [token] for r in rows]
    return np.array(out)
