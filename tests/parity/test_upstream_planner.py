"""The planner's codes phase against upstream at 6d467e4 (`scripts/upstream_planner.py`): the prompts its
`build_formatted_prompt_with_cot` writes (the current form, April 2026, and its legacy-uncond toggle) character for
character and token for token, and the codes its `_generate_with_cfg_custom` picks greedily under CFG from them
with its codes-phase constraint (exactly the requested number of codes, then EOS)."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from upstream import cases, load

from mlx_acestep.loading import load_component
from mlx_acestep.planner.lm import CodeTokens, codes_prompts, generate_codes, load_planner_tokenizer

LM = "acestep-5Hz-lm-0.6B"
PROMPTS = cases("planner:codes_prompt")
GREEDY = cases("planner:codes_cfg_greedy")


@pytest.fixture(scope="module")
def tokenizer(fixtures):
    return load_planner_tokenizer(fixtures / "checkpoints" / LM)


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_codes_prompts_are_upstreams(name, tokenizer):
    _, outputs, args = load(PROMPTS[name])
    form = args["form"].replace("_", "-")
    cond, uncond = codes_prompts(args["caption"], args["lyrics"], args["meta"], args["negative"], form)
    assert (cond, uncond) == (PROMPTS[name]["prompts"]["cond"], PROMPTS[name]["prompts"]["uncond"])
    assert tokenizer.encode(cond) == outputs["cond_ids"].tolist()
    assert tokenizer.encode(uncond) == outputs["uncond_ids"].tolist()
    PARITY_ERRORS.append((f"upstream {name}", "prompt token ids", 0.0, 0.0))


def test_the_forms_differ_from_each_other_and_from_february():
    meta = {"bpm": 90}
    forms = [codes_prompts("calm piano", "[verse]", meta, form=f) for f in ("current", "legacy-uncond", "february")]
    assert len({uncond for _, uncond in forms}) == 3 and forms[0][0] == forms[1][0] != forms[2][0]


@pytest.mark.parametrize("name", sorted(GREEDY))
def test_greedy_codes_under_cfg_are_upstreams(name, converted, tokenizer):
    inputs, outputs, args = load(GREEDY[name])
    lm = load_component(converted / LM, "lm")
    codes = CodeTokens.from_tokenizer(tokenizer)
    n = args["n_codes"]
    ours = generate_codes(
        lm,
        inputs["cond_ids"].tolist(),
        inputs["uncond_ids"].tolist(),
        n,
        codes,
        tokenizer.pad_token_id,
        cfg_scale=args["cfg_scale"],
        temperature=0.0,
    )
    theirs = outputs["tokens"]
    assert theirs[n] == codes.eos_id and len(theirs) == n + 1  # upstream's constraint: n codes, then EOS
    np.testing.assert_array_equal(np.array(ours) + codes.first_id, theirs[:n])
    PARITY_ERRORS.append((f"upstream {name}", "greedy codes", 0.0, 0.0))
    mx.clear_cache()
