"""The pipeline's defaults and wiring through the public API, held to the spec's numbers (spec 5.2, 5.6, 5.7, 5.9,
8.6, 9.2) rather than to what the code returns: the settings each family gets, the VAE's windows on a long song,
the 128-frame minimum, the caption cap, per-item normalisation, ragged batches and the thinking instruction."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.diffusion.sampler import BaseSettings, TurboSettings, turbo_timesteps
from mlx_acestep.engine import Engine
from mlx_acestep.loading import load_component
from mlx_acestep.pipeline import ACEStep, ModelFolders
from mlx_acestep.pipeline.request import sampler_settings

MINUS_1_DBFS = 10 ** (-1 / 20)  # spec 5.9: the library normalises each item's peak to -1 dBFS
SPEC_TURBO_SHIFT3 = [1, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3]  # spec 5.6, the default table
# spec 5.8 table / 8.6: the DiT's instruction for items with planner codes (a cover of the hints), and without
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
TEXT2MUSIC_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"


def folders(converted, dit="acestep-v15-turbo", lm=None):
    return ModelFolders(
        converted / "Qwen3-Embedding-0.6B",
        converted / dit,
        converted / "vae",
        lm=None if lm is None else converted / lm,
    )


@pytest.fixture(scope="module")
def pipe(converted):
    return ACEStep(folders(converted))


@pytest.fixture(scope="module")
def thinker(converted):
    return ACEStep(folders(converted, lm="acestep-5Hz-lm-0.6B"))


# -- sampler defaults per family (spec 9.2; base/SFT take the UI/REST shift 3.0, see README) ----------------


def test_turbo_defaults_are_the_shift_3_table(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults themselves warn about nothing
        settings = pipe.sampler_settings()
    assert isinstance(settings, TurboSettings) and settings.shift == 3.0 and settings.method == "ode"
    np.testing.assert_allclose(turbo_timesteps(settings.shift, settings.timesteps), SPEC_TURBO_SHIFT3, atol=1e-6)


@pytest.mark.parametrize("family, steps", [("base", 32), ("sft", 50)])
def test_base_and_sft_defaults(converted, family, steps):
    settings = (
        ACEStep(folders(converted, "acestep-v15-base")).sampler_settings()
        if family == "base"
        else sampler_settings(family)
    )
    assert isinstance(settings, BaseSettings)
    assert (settings.steps, settings.shift, settings.guidance_scale, settings.guidance) == (steps, 3.0, 7.0, "apg")
    assert settings.cfg_interval == (0.0, 1.0) and settings.method == "ode"
    assert (settings.apg_momentum, settings.apg_norm_threshold) == (-0.75, 2.5)  # spec 5.7


# -- the VAE on a song longer than one window ------------------------------------------------------------


def test_a_long_song_decodes_in_several_windows_like_one_pass(pipe):
    """12 s = 300 frames: more than one 256-frame window. The windows' overlap must hide every seam."""
    windows = []
    song = pipe.generate(
        "slow strings",
        duration=12,
        seed=4,
        normalize=False,
        callback=lambda p: windows.append(p.total) if p.phase == "vae" else None,
    )
    assert max(windows) >= 2, f"the VAE phase reported {max(windows)} window(s) for 300 frames"
    vae = load_component(pipe.folders.vae, "vae", parts=("decoder",))
    whole = np.array(vae.decode(mx.array(song.latents)))  # one pass over all 300 frames
    whole = whole / max(1.0, float(np.abs(whole).max()))  # spec 5.9 step 4: peak-limited only above 1
    assert song.audio.shape == whole.shape == (1, 300 * 1920, 2)
    assert np.abs(song.audio - whole).max() <= 1e-5 * np.abs(whole).max()


# -- the 128-frame minimum (spec 5.2) ---------------------------------------------------------------------


def test_a_short_source_is_rendered_on_128_frames_and_cut_to_its_length(pipe):
    source = np.random.default_rng(0).standard_normal((75, 64)).astype(np.float32)  # 3 s
    result = pipe.generate("piano", task="cover", src_latents=source, seed=1)
    assert result.latents.shape == (1, 128, 64)  # the DiT ran on max(128, 75) frames
    assert result.audio.shape == (1, 75 * 1920, 2) and result.duration == 3.0


@pytest.mark.parametrize(
    "fields, frames",
    [
        ({"duration": 2.0}, 50),  # text2music: upstream accepts any positive length (task_utils.py:117-122)
        ({"duration": 0.1}, 2),  # its floor: a 0.1 s silent target, 2 latent frames
        ({"duration": 3.0, "task": "repaint", "repaint_start": 1.0, "repaint_end": 2.0}, 75),  # a short source
    ],
)
def test_a_short_clip_is_rendered_on_128_frames_and_keeps_its_length(pipe, fields, frames):
    if "task" in fields:
        fields = fields | {"src_latents": np.random.default_rng(0).standard_normal((75, 64)).astype(np.float32)}
    result = pipe.generate("piano", seed=1, steps=2, **fields)
    assert result.latents.shape == (1, 128, 64)
    assert result.audio.shape == (1, frames * 1920, 2) and result.duration == frames * 1920 / 48000


# -- the caption cap: 256 tokens of prompt (spec 3.2) -----------------------------------------------------


def test_the_caption_prompt_is_cut_at_256_tokens_with_a_warning(pipe):
    """Captions differing only past token 256 of the prompt give the same song; differing before it, another."""
    encode = pipe.tokenizer.tokenizer.encode
    words = ["rain"] * 400
    prefix = len(encode(f"# Instruction\n{TEXT2MUSIC_INSTRUCTION}\n\n# Caption\n"))  # spec 3.2's prompt head

    def changed_at(token):  # the caption with one word changed where the prompt reaches `token`
        n = next(i for i in range(len(words)) if prefix + len(encode(" ".join(words[:i]))) >= token)
        return " ".join(words[:n] + ["thunder"] + words[n + 1 :])

    def song(caption, expect_cut):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = pipe.generate(caption, duration=5, seed=2, thinking=False).latents  # 5 s: the DiT's minimum
        cut = [str(w.message) for w in seen if "truncated to 256" in str(w.message)]
        assert bool(cut) == expect_cut, [str(w.message) for w in seen]
        return out

    base = song(" ".join(words), True)
    np.testing.assert_array_equal(song(changed_at(266), True), base)  # past the cap: cut away
    assert np.abs(song(changed_at(240), True) - base).max() > 1e-3  # inside it: heard
    song(" ".join(words[: (256 - prefix) // len(encode("rain rain")) - 20]), False)  # well inside: no warning


# -- batches: per-item normalisation, ragged prompts ------------------------------------------------------


def test_each_item_of_a_batch_is_normalised_on_its_own(pipe):
    pair = pipe.generate("gentle piano", duration=5, seed=[11, 40], batch_size=2)
    peaks = np.abs(pair.audio).max(axis=(1, 2))
    np.testing.assert_allclose(peaks, [MINUS_1_DBFS] * 2, rtol=1e-5)
    raw = np.abs(pipe.generate("gentle piano", duration=5, seed=[11, 40], batch_size=2, normalize=False).audio)
    assert abs(raw[0].max() / raw[1].max() - 1) > 1e-3  # the items differ in level, so one factor would show


@pytest.mark.live
def test_a_ragged_thinking_batch_gets_the_reference_condition(thinker, fixtures, monkeypatch):
    """With thinking each item has the planner's own caption and metadata: a ragged text batch. The DiT must get
    what the reference composes for those prompts (transformers' Qwen3 without a padding mask, diffusers' condition
    encoder with the key masks; spec 3.2-3.3). The reference's DiT then attends to the padding (spec 12), so the
    shorter item is not what it is alone, but the longest one is."""
    from test_conditioning import reference_composition

    from mlx_acestep.conditioning.prompts import caption_prompt, lyric_prompt

    seen = {}

    class Spy(Engine):  # what the condition step is asked for, and what the sampler is handed
        def condition(self, dit, text, job):
            seen["items"] = list(job.items)
            return super().condition(dit, text, job)

        def denoise(self, dit, condition, *args, **kwargs):
            seen["states"] = np.array(condition[0])
            return super().denoise(dit, condition, *args, **kwargs)

    monkeypatch.setattr(thinker, "engine", Spy(thinker.silence_latent))
    pair = thinker.generate("gentle piano", duration=10, seed=[3, 8], batch_size=2)
    items = seen["items"]
    captions = [caption_prompt(i.caption, i.metas, i.instruction) for i in items]
    lyrics = [lyric_prompt(i.lyrics, i.language) for i in items]
    silence = np.array(thinker.silence_latent[0, :750])
    reference = reference_composition(fixtures, 750, [silence], None, captions, lyrics)
    text_mask, want = reference[1], reference[6].numpy()
    assert text_mask.sum(1)[0] != text_mask.sum(1)[1], "the planner wrote prompts of equal length: no ragged batch"
    assert seen["states"].shape == want.shape
    assert np.abs(seen["states"] - want).max() <= 1e-4 * np.abs(want).max()
    longest = int(np.argmax(text_mask.sum(1)))
    alone = thinker.generate("gentle piano", duration=10, seed=[3, 8][longest])
    assert np.abs(pair.latents[longest] - alone.latents[0]).max() <= 1e-5 * np.abs(alone.latents).max()


# -- thinking: what the DiT is told (spec 8.6) -------------------------------------------------------------


def test_planner_items_get_the_cover_instruction_and_the_planner_caption(thinker, monkeypatch):
    seen = []

    class Spy(Engine):
        def condition(self, dit, text, job):
            seen.append(list(job.items))
            return super().condition(dit, text, job)

    monkeypatch.setattr(thinker, "engine", Spy(thinker.silence_latent))
    result = thinker.generate("gentle piano", duration=5, seed=3)
    (items,) = seen
    assert [i.instruction for i in items] == [COVER_INSTRUCTION]
    assert items[0].caption == result.metadata[0]["caption"] != "gentle piano"
    seen.clear()
    thinker.generate("gentle piano", duration=5, seed=3, thinking=False)
    assert [i.instruction for i in seen[0]] == [TEXT2MUSIC_INSTRUCTION]
    assert seen[0][0].caption == "gentle piano"
