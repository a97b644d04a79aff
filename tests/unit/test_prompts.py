"""Prompt formatting against the reference's strings, and tokenization edge cases."""

import numpy as np
import pytest
from parity import load_cases

from mlx_acestep.conditioning.prompts import Metas, PromptTokenizer, caption_prompt, instruction, lyric_prompt
from mlx_acestep.errors import AceStepError


@pytest.fixture(scope="module")
def reference_strings(fixtures):
    return load_cases(fixtures)["tokenizers"]["strings"]


def test_caption_prompts_match_the_reference(reference_strings):
    # The raw values behind the stored prompts of the tokenizers case (fixtures README, shapes).
    ours = [
        caption_prompt(
            "A calm piano ballad with soft strings.", Metas(duration=30, bpm=120, timesignature=4, keyscale="C major")
        ),
        caption_prompt("Upbeat electronic dance track, punchy drums.", Metas(duration=12.9)),
    ]
    assert ours == reference_strings["text_prompts"]


def test_lyric_prompts_match_the_reference(reference_strings):
    ours = [
        lyric_prompt("[verse]\nWalking down the street tonight\n[chorus]\nSing it loud", "en"),
        lyric_prompt("[Instrumental]", "unknown"),
    ]
    assert ours == reference_strings["lyric_prompts"]


def test_unknown_language_falls_back_with_a_warning():
    with pytest.warns(UserWarning, match="unknown language 'klingon'"):
        assert lyric_prompt("la la", "klingon").startswith("# Languages\nunknown\n")
    assert lyric_prompt("la", "EN").startswith("# Languages\nen\n")


def test_task_instructions():
    assert instruction() == "Fill the audio semantic mask based on the given conditions:"
    assert instruction("extract", ["vocals"]) == "Extract the VOCALS track from the audio:"
    assert instruction("complete", ["drums", "bass"]) == "Complete the input track with DRUMS | BASS:"
    assert instruction("lego") == "Generate the track based on the audio context:"
    with pytest.raises(AceStepError, match="unknown task"):
        instruction("remix")
    with pytest.raises(AceStepError, match="unknown track"):
        instruction("extract", ["kazoo"])


def test_custom_instruction_gets_its_colon():
    assert caption_prompt("c", task_instruction="Make it loud").startswith("# Instruction\nMake it loud:\n\n")
    assert caption_prompt("c", task_instruction="Keep it:").startswith("# Instruction\nKeep it:\n\n")


def test_metas_string_is_used_verbatim():
    assert "# Metas\nfree text<|endoftext|>\n" in caption_prompt("c", "free text")


def test_truncation_warns_and_padding_is_right_sided(converted):
    tok = PromptTokenizer(converted / "Qwen3-Embedding-0.6B")
    with pytest.warns(UserWarning, match="truncated to 8"):
        ids, mask = tok.batch(["word " * 40, "hi"], max_tokens=8)
    assert ids.shape == (2, 8) and mask[0].all()
    n = int(mask[1].sum())
    assert not mask[1, n:].any() and np.all(ids[1, n:] == tok.pad_id)
    with pytest.raises(AceStepError, match="tokenizer.json: file not found"):
        PromptTokenizer(converted / "vae")
