"""The conditioning entry point: requests -> packed encoder states, against the reference composition.

The reference side is assembled as the upstream handler does it (spec 3.2, 3.3, 5.1, 5.4):
the prompts written out literally, the checkpoint's tokenizer (transformers), transformers'
Qwen3Model without an attention mask, its embedding table for lyrics, and diffusers'
AceStepConditionEncoder fed `silence_latent[:, :750]` for items without a reference.
"""

import warnings

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import diffusers_condition_encoder, rel_err, require

from mlx_acestep.conditioning.inputs import (
    ConditionInput,
    encode_prompts,
    reference_clips,
    timbre_window,
    tokenize_items,
)
from mlx_acestep.conditioning.prompts import Metas, instruction
from mlx_acestep.errors import AceStepError

CAPTIONS = [
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\nA calm piano ballad with soft strings."
    "\n\n# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n<|endoftext|>\n",
    "# Instruction\nExtract the DRUMS track from the audio:\n\n# Caption\nFast breakbeat drum and bass with a rolling sub bass, "
    "chopped vocal samples and bright pads\n\n# Metas\n- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n"
    "<|endoftext|>\n",
]
LYRICS = [
    "# Languages\nen\n\n# Lyric\n[verse]\nWalking down the street tonight\n[chorus]\nSing it loud<|endoftext|>",
    "# Languages\nfr\n\n# Lyric\n[Instrumental]<|endoftext|>",
]


class Conditioner:
    """Requests -> the DiT's condition through the package's own steps (the README's conditioning example)."""

    def __init__(self, text_dir, dit_dir):
        from mlx_acestep.conditioning.prompts import PromptTokenizer
        from mlx_acestep.loading import load_component, load_silence_latent

        self.tokenizer = PromptTokenizer(text_dir)
        self.text_encoder = load_component(text_dir, "text_encoder")
        self.dit = load_component(dit_dir, "dit")
        self.silence = load_silence_latent(dit_dir)
        self.timbre_frames = self.dit.config.timbre_fix_frame

    def tokenize(self, items):
        return tokenize_items(self.tokenizer, items)

    def references(self, items, seed=0):
        return reference_clips(items, self.silence, self.timbre_frames, self.dit.dtype, seed)

    def __call__(self, items, seed=0, frames=16):
        """The text encoder's states and the prepared condition's fields, as one namespace."""
        from types import SimpleNamespace

        text = encode_prompts(self.text_encoder, self.tokenize(items))
        dtype = self.dit.dtype
        refer, order = self.references(items, seed)
        b = len(items)
        src = mx.broadcast_to(self.silence[:, :frames].astype(dtype), (b, frames, 64))
        prepared = self.dit.prepare_condition(
            text.text_hidden_states.astype(dtype),
            text.text_attention_mask,
            text.lyric_hidden_states.astype(dtype),
            text.lyric_attention_mask,
            refer,
            mx.array(order),
            src,
            mx.ones((b, frames)),
            mx.zeros((b,), mx.bool_),
            self.silence,
        )
        return SimpleNamespace(**vars(text), **vars(prepared))


@pytest.fixture(scope="module")
def builder(converted):
    return Conditioner(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo")


def requests(clips):
    return [
        ConditionInput(
            caption="A calm piano ballad with soft strings.",
            lyrics="[verse]\nWalking down the street tonight\n[chorus]\nSing it loud",
            metas=Metas(duration=30, bpm=120, timesignature=4, keyscale="C major"),
            language="en",
        ),
        ConditionInput(
            caption="Fast breakbeat drum and bass with a rolling sub bass, chopped vocal samples and bright pads",
            language="fr",
            instruction=instruction("extract", ["drums"]),
            reference_latents=clips,
        ),
    ]


def reference_tokens(tokenizer, texts, max_tokens):
    rows = [tokenizer(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
    length = max(map(len, rows))
    ids = np.full((len(rows), length), tokenizer.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, True
    return ids, mask


def reference_composition(fixtures, frames, clips, dtype=None, captions=CAPTIONS, lyrics=LYRICS):
    """The reference's condition for the caption and lyric prompts (item 0 without a reference, item 1 with
    `clips`): transformers' Qwen3 and diffusers' condition encoder, in float32 or `dtype`
    -> (text ids, text mask, lyric ids, lyric mask, text hidden, lyric hidden, states, mask)."""
    torch = require("torch")
    transformers = require("transformers")
    require("diffusers")
    from safetensors.numpy import load_file

    dtype = dtype or torch.float32
    ckpt = fixtures / "checkpoints"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(ckpt / "Qwen3-Embedding-0.6B"))
    text_ids, text_mask = reference_tokens(tokenizer, captions, 256)
    lyric_ids, lyric_mask = reference_tokens(tokenizer, lyrics, 2048)
    qwen = transformers.Qwen3Model.from_pretrained(str(ckpt / "Qwen3-Embedding-0.6B"), attn_implementation="sdpa")
    qwen = qwen.eval().to(dtype)
    silence = load_file(str(ckpt / "acestep-v15-turbo" / "silence_latent.safetensors"))["silence_latent"]
    state = load_file(str(ckpt / "acestep-v15-turbo" / "model.safetensors"))
    config = __import__("json").loads((ckpt / "acestep-v15-turbo" / "config.json").read_text())
    encoder = diffusers_condition_encoder(config, state, silence).to(dtype)
    refer = np.concatenate([silence.transpose(0, 2, 1)[:, :frames], np.stack(clips)])
    with torch.no_grad():
        text_hidden = qwen(input_ids=torch.from_numpy(text_ids)).last_hidden_state
        lyric_hidden = qwen.embed_tokens(torch.from_numpy(lyric_ids))
        want_h, want_mask = encoder(
            text_hidden,
            torch.from_numpy(text_mask),
            lyric_hidden,
            torch.from_numpy(lyric_mask),
            torch.from_numpy(refer).to(dtype),
            torch.tensor([0] + [1] * len(clips)),  # item 0: silence; item 1: the clips
        )
    return (
        text_ids,
        text_mask,
        lyric_ids,
        lyric_mask,
        text_hidden.float(),
        lyric_hidden.float(),
        want_h.float(),
        want_mask,
    )


@pytest.mark.live
def test_matches_reference_composition_batch_with_ragged_prompts_and_references(fixtures, builder):
    frames = builder.timbre_frames
    assert frames == 750  # from the checkpoint's config (timbre_fix_frame)
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal((frames, 64)).astype(np.float32) for _ in range(2)]  # item 1: two references
    text_ids, text_mask, lyric_ids, lyric_mask, text_hidden, lyric_hidden, want_h, want_mask = reference_composition(
        fixtures, frames, clips
    )
    assert text_mask.sum(1).tolist()[0] != text_mask.sum(1).tolist()[1]  # ragged on both sides
    assert lyric_mask.sum(1).tolist()[0] != lyric_mask.sum(1).tolist()[1]

    np.testing.assert_array_equal(builder.tokenize(requests(clips))[0], text_ids)
    got = builder(requests(clips))
    np.testing.assert_array_equal(np.array(got.text_attention_mask), text_mask)
    np.testing.assert_array_equal(np.array(got.lyric_attention_mask), lyric_mask)
    assert rel_err(np.array(got.text_hidden_states), text_hidden.numpy()) < 1e-4
    np.testing.assert_array_equal(np.array(got.lyric_hidden_states), lyric_hidden.numpy())
    err = rel_err(np.array(got.encoder_hidden_states), want_h.numpy())
    PARITY_ERRORS.append(("conditioning entry point", "encoder_hidden_states", err, 1e-4))
    assert err < 1e-4
    np.testing.assert_array_equal(np.array(got.encoder_attention_mask), want_mask.numpy())


def test_timbre_window_keeps_exact_clips_and_repeats_short_ones():
    clip = mx.array(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    np.testing.assert_array_equal(np.array(timbre_window(clip, 30)), np.array(clip))
    np.testing.assert_array_equal(np.array(timbre_window(clip[None], 30, np.random.default_rng(1))), np.array(clip))
    short = clip[:7]
    out = np.array(timbre_window(short, 30))
    assert out.shape == (30, 4)
    # a repeated clip: every frame is one of the 7, each consecutive pair in the clip's cyclic order
    rows = [int(np.flatnonzero((np.array(short) == r).all(1))[0]) for r in out]
    assert all((b - a) % 7 == 1 for a, b in zip(rows[:10], rows[1:10]))


def test_timbre_window_takes_one_slice_from_each_third_of_a_long_clip():
    long = np.arange(300, dtype=np.float32)[:, None].repeat(2, 1)  # frame index as the value
    out = np.array(timbre_window(long, 30, np.random.default_rng(7)))[:, 0]
    for i, piece in enumerate(np.split(out, 3)):
        assert np.all(np.diff(piece) == 1)  # contiguous
        assert 100 * i <= piece[0] and piece[-1] < 100 * (i + 1)  # inside third i
    again = np.array(timbre_window(long, 30, np.random.default_rng(7)))[:, 0]
    other = np.array(timbre_window(long, 30, np.random.default_rng(8)))[:, 0]
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_reference_shorter_than_the_window_is_repeated_not_an_error(builder):
    rng = np.random.default_rng(2)
    clip = rng.standard_normal((250, 64)).astype(np.float32)  # 10 s: three repeats fill the 30 s window exactly
    got = builder(requests(clip))
    want = builder(requests(np.tile(clip, (3, 1))))
    np.testing.assert_array_equal(np.array(got.encoder_hidden_states), np.array(want.encoder_hidden_states))
    tiny = rng.standard_normal((3, 64)).astype(np.float32)  # 0.12 s
    refer, order = builder.references(requests(tiny))
    assert refer.shape == (2, 750, 64) and order.tolist() == [0, 1]
    assert np.isin(np.array(refer[1]), tiny).all()
    assert np.isfinite(np.array(builder(requests(tiny)).encoder_hidden_states)).all()


@pytest.mark.parametrize("caption", ["", "   \n\t"])
def test_empty_caption_is_a_clear_error(builder, caption):
    with pytest.raises(AceStepError, match="item 0: the caption is empty"):
        builder([ConditionInput(caption=caption)])


@pytest.mark.parametrize(
    "clips, message",
    [
        (np.zeros((0, 64), np.float32), "item 1: reference latents are empty"),
        (np.zeros((50, 32), np.float32), "item 1: reference latents have 32 channels, expected 64"),
        (np.zeros((2, 50, 64), np.float32), r"item 1: reference latents must be \[T, C\]"),
        ([], "item 1: the list of reference latents is empty"),
    ],
)
def test_bad_reference_latents_are_clear_errors(builder, clips, message):
    with pytest.raises(AceStepError, match=message):
        builder(requests(clips))


def test_empty_batch_is_a_clear_error(builder):
    with pytest.raises(AceStepError, match="batch is empty"):
        builder([])


def test_long_lyrics_are_truncated_with_a_warning_and_unknown_language_falls_back(builder):
    lyrics = "\n".join(f"[verse] line {i} of a very long song that keeps going" for i in range(400))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = builder([ConditionInput(caption="Ballad", lyrics=lyrics, language="klingon")])
    messages = [str(w.message) for w in caught]
    assert any("truncated to 2048" in m for m in messages), messages
    assert any("unknown language 'klingon'" in m for m in messages), messages
    assert got.lyric_hidden_states.shape[1] == 2048
    with pytest.warns(UserWarning, match="unknown language"):
        ids = builder.tokenize([ConditionInput(caption="Ballad", language="klingon")])[2][0]
    assert "# Languages\nunknown\n" in builder.tokenizer.tokenizer.decode(ids)


# bf16 floor: the reference's own bf16 error on the same batch (transformers' Qwen3 and diffusers' condition
# encoder cast to bf16) less 3 dB: ours may be at most twice the reference's error power. Measured: ours 41.3 dB.
BF16_MARGIN_DB = 3.0


@pytest.mark.live
def test_bfloat16_entry_point_against_float32(fixtures, builder, tmp_path):
    import shutil

    from helpers import drawn_seeds, snr_db

    from mlx_acestep.convert import ConvertOptions, convert_checkpoints

    for name in ("Qwen3-Embedding-0.6B", "acestep-v15-turbo"):
        shutil.copytree(fixtures / "checkpoints" / name, tmp_path / "src" / name)
    convert_checkpoints(tmp_path / "src", tmp_path / "bf16", ConvertOptions(dtype="bfloat16"))
    half = Conditioner(tmp_path / "bf16" / "Qwen3-Embedding-0.6B", tmp_path / "bf16" / "acestep-v15-turbo")
    torch = require("torch")
    for seed in drawn_seeds():
        clips = [np.random.default_rng(seed).standard_normal((750, 64)).astype(np.float32)]
        got = half(requests(clips)).encoder_hidden_states
        assert got.dtype == mx.bfloat16
        snr = snr_db(np.array(got.astype(mx.float32)), np.array(builder(requests(clips)).encoder_hidden_states))
        want = reference_composition(fixtures, half.timbre_frames, clips)[6].numpy()
        ref_half = reference_composition(fixtures, half.timbre_frames, clips, torch.bfloat16)[6].numpy()
        floor = snr_db(ref_half, want) - BF16_MARGIN_DB
        PARITY_ERRORS.append(("conditioning bfloat16 SNR dB", f"seed {seed}", snr, floor))
        assert snr >= floor, f"seed {seed}: {snr:.1f} dB < {floor:.1f} dB (replay with MLX_ACESTEP_HALF_SEEDS)"
