"""The text2music pipeline's API on the fixture checkpoints: phases, seeds, post-processing, bad input.

Numerical parity of the whole chain against the reference is the `pipeline_text2music` parity case;
these tests cover what surrounds it.
"""

import warnings

import mlx.core as mx
import numpy as np
import pytest

from mlx_acestep.errors import AceStepError
from mlx_acestep.limits import frames_of as target_frames
from mlx_acestep.pipeline import ACEStep, Cancelled, ModelFolders
from mlx_acestep.pipeline.acestep import PHASES


def folders(converted, dit="acestep-v15-turbo"):
    return ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / dit, converted / "vae")


@pytest.fixture(scope="module")
def pipe(converted):
    return ACEStep(folders(converted))


@pytest.fixture(scope="module")
def song(pipe):
    # 6 s: above the DiT's 128-frame minimum (5.12 s), so the requested length is the DiT's too; short to be quick
    return pipe.generate("gentle piano", "[verse]\nla la", duration=6, seed=11, bpm=90)


def test_a_song_has_the_requested_length_and_every_phase_is_measured(song):
    assert song.audio.shape == (1, 6 * 48000, 2) and song.audio.dtype == np.float32
    assert song.sample_rate == 48000 and song.seeds == [11] and song.duration == 6
    assert set(PHASES) <= set(song.seconds) and all(v >= 0 for v in song.seconds.values())
    assert set(PHASES) <= set(song.peak_memory) and song.peak_memory["dit"] > 0
    assert song.rtf == pytest.approx(6 / song.compute_seconds)
    assert song.latents.shape == (1, target_frames(6), 64)


def test_the_output_is_the_decoded_latents_normalised_to_minus_1_dbfs(pipe, song):
    """Post-processing (spec 5.9): peak limiting, then the library's -1 dBFS peak normalisation."""
    assert np.max(np.abs(song.audio)) == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    from mlx_acestep.loading import load_component

    # The decoder sees ~9 frames around each sample: decoding 32 frames gives the first 16 frames' audio exactly.
    vae = load_component(pipe.folders.vae, "vae", parts=("decoder",))
    raw = np.array(vae.decode(mx.array(song.latents[:, :32])))[0, : 16 * 1920]
    ours = song.audio[0, : 16 * 1920]
    cos = np.sum(raw * ours) / (np.linalg.norm(raw) * np.linalg.norm(ours))
    assert cos > 1 - 1e-6  # a pure gain of the VAE's output


def test_loading_per_phase_gives_the_same_song_as_keeping_everything_loaded(converted, song):
    lean = ACEStep(folders(converted), keep_loaded=False)
    again = lean.generate("gentle piano", "[verse]\nla la", duration=6, seed=11, bpm=90)
    np.testing.assert_array_equal(again.audio, song.audio)
    assert lean.resident() == []  # every phase freed what it loaded


@pytest.fixture(scope="module")
def pair(pipe):
    return pipe.generate("gentle piano", "[verse]\nla la", duration=6, seed=11, bpm=90, batch_size=2)


def test_seeds_repeat_and_differ(song, pair):
    assert pair.seeds == [11, 12] and pair.audio.shape == (2, 288000, 2)
    # item 0 of the batch is the single song with the same seed (batching changes rounding only) ...
    np.testing.assert_allclose(pair.latents[0], song.latents[0], rtol=0, atol=1e-4 * np.abs(song.latents).max())
    # ... and item 1, seed 12, is another song
    assert np.abs(pair.latents[1] - pair.latents[0]).max() > 0.1 * np.abs(pair.latents).max()


def test_base_model_runs_with_guidance(converted):
    base = ACEStep(folders(converted, "acestep-v15-base"))
    assert base.family == "base" and base.sampler_settings().guidance_scale == 7.0
    out = base.generate("gentle piano", duration=6, seed=0, steps=2)
    assert out.audio.shape == (1, 288000, 2) and np.isfinite(out.audio).all()


def test_turbo_warns_about_settings_it_ignores_and_runs_upstreams_steps(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = pipe.sampler_settings(guidance=5.0, shift=2.4)
    assert "guidance=5.0 is ignored" in " ".join(str(w.message) for w in caught)
    # upstream always passes its 8 steps: 1 - i/8 at the exact shift, not the nearest shift's table
    assert (settings.shift, settings.steps) == (2.4, 8)
    with pytest.raises(AceStepError, match="steps must be between 1 and 8 on turbo models, got 9"):
        pipe.sampler_settings(steps=9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"duration": 0.05}, "duration must be between 0.1 and 600"),
        ({"duration": 601}, "duration must be between 0.1 and 600"),
        ({"batch_size": 0}, "batch_size must be between 1 and 8"),
        ({"batch_size": 9}, "batch_size must be between 1 and 8"),
        ({"seed": [1, 2]}, "2 seeds for a batch of 1"),
        ({"steps": 0}, "steps must be between 1 and 200"),
        ({"bpm": 1000}, "bpm must be between 30 and 300"),
        ({"caption": "  "}, "caption is empty"),
        ({"method": "heun"}, "unknown sampling method"),
        ({"duration": 60}, "exceed the checkpoint's silence latent"),  # the fixture's silence latent is 40 s
    ],
)
def test_bad_requests_are_one_line_errors(pipe, kwargs, message):
    args = {"caption": "piano", "duration": 10, "seed": 0, **kwargs}
    with pytest.raises(AceStepError, match=message) as info:
        pipe.generate(args.pop("caption"), **args)
    assert "\n" not in str(info.value)


def test_the_callback_reports_every_phase_and_can_cancel(pipe):
    seen = []

    def stop_in_dit(progress):
        seen.append((progress.phase, progress.done, progress.total))
        return not (progress.phase == "dit" and progress.done == 2)

    with pytest.raises(Cancelled, match="cancelled during dit"):
        pipe.generate("piano", duration=10, seed=0, callback=stop_in_dit)
    assert [p for p, _, _ in seen][:4] == ["text", "text", "condition", "condition"]
    assert ("dit", 2, 8) in seen and not any(p == "vae" for p, _, _ in seen)


def test_a_list_of_seeds_gives_one_per_item():
    from mlx_acestep.pipeline.request import resolve_seeds

    assert resolve_seeds([3, 9], 2) == [3, 9] and resolve_seeds(5, 3) == [5, 6, 7]
    randoms = resolve_seeds(None, 2)
    assert len(set(randoms)) == 2 and all(0 <= s < 2**32 for s in randoms)


def test_save_writes_one_file_per_item_atomically(pair, tmp_path):
    import soundfile as sf

    out = pair
    written = out.save(tmp_path / "song.flac")
    assert [p.name for p in written] == ["song_0.flac", "song_1.flac"]
    data, rate = sf.read(written[1], dtype="float32")
    assert rate == 48000 and data.shape == (288000, 2)
    np.testing.assert_allclose(data, out.audio[1], atol=2**-15)  # 16-bit FLAC
    with pytest.raises(AceStepError, match="does not exist"):
        out.save(tmp_path / "missing" / "x.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song_0.flac", "song_1.flac"]


# -- thinking: the planner's codes become the DiT's context ----------------------------------------


@pytest.fixture(scope="module")
def thinker(converted):
    return ACEStep(ModelFolders(**vars(folders(converted)) | {"lm": converted / "acestep-5Hz-lm-0.6B"}))


def test_thinking_plans_metadata_and_codes_then_renders_them(thinker):
    result = thinker.generate("gentle piano", duration=10.5, seed=3, bpm=100, batch_size=2)
    assert result.codes.shape == (2, 52) and len(result.metadata) == 2
    assert all(m["bpm"] == 100 and m["duration"] == 10 and m["keyscale"] for m in result.metadata)
    assert result.audio.shape == (2, target_frames(10.5) * 1920, 2) and "lm" in result.seconds
    assert not np.array_equal(result.codes[0], result.codes[1])  # each item plans with its own seed
    plain = thinker.generate("gentle piano", duration=10.5, seed=3, bpm=100, batch_size=2, thinking=False)
    assert plain.codes is None and plain.metadata == []
    assert not np.allclose(plain.latents, result.latents)


def test_the_planner_may_choose_the_duration(thinker):
    result = thinker.generate("gentle piano", duration=None, seed=5)
    assert result.duration == target_frames(result.metadata[0]["duration"]) * 1920 / 48000
    assert result.codes.shape == (1, result.metadata[0]["duration"] * 5)


def test_hints_are_padded_with_the_silence_latent(thinker):
    from mlx_acestep.conditioning.inputs import code_hints

    model = thinker.residency.get("condition_codes")
    silence = thinker.silence_latent
    codes = np.arange(50).reshape(1, 50) % 64
    frames = target_frames(10.5)  # 262 frames for 250 of hints
    hints = np.array(code_hints(model, codes, 1, frames, silence, mx.float32))
    direct = np.array(model.codes_to_hints(mx.array(codes)))
    np.testing.assert_array_equal(hints[:, :250], direct)
    np.testing.assert_array_equal(hints[:, 250:], np.array(silence[:, :12]))
    assert np.array(code_hints(model, codes, 1, 200, silence, mx.float32)).shape == (1, 200, 64)  # cropped
    with pytest.raises(AceStepError, match="expected \\[2, n\\]"):
        code_hints(model, codes, 2, frames, silence, mx.float32)


def test_thinking_without_a_planner_is_a_clear_error(pipe):
    with pytest.raises(AceStepError, match="thinking needs the planner LM"):
        pipe.generate("x", duration=10, thinking=True)
    assert pipe.generate("x", steps=1, thinking=False).duration == 30  # no planner, no source: 30 s


# -- residency: with keep_loaded=False the DiT and VAE phases hold only their own modules ------------


@pytest.mark.parametrize("case", ["text2music", "thinking", "cover"])
def test_the_dit_and_vae_phases_hold_only_the_denoiser_and_the_vae_decoder(converted, case):
    """A phase that loaded the condition encoder with the FSQ modules (thinking, cover) must free them too."""
    pipe = ACEStep(
        ModelFolders(**vars(folders(converted)) | {"lm": converted / "acestep-5Hz-lm-0.6B"}), keep_loaded=False
    )
    seen: dict[str, set] = {}

    def record(progress):
        if progress.phase in ("dit", "vae") and progress.done > 0:  # done 0 is announced before the phase loads
            seen.setdefault(progress.phase, set()).update(pipe.resident())

    kwargs = dict(duration=5, seed=2, bpm=90, key="C major", time_signature=4, callback=record)
    if case == "cover":
        kwargs.update(task="cover", src_latents=np.random.default_rng(0).standard_normal((130, 64)).astype(np.float32))
    result = pipe.generate("gentle piano", thinking=case == "thinking", **kwargs)
    assert seen == {"dit": {"denoiser"}, "vae": {"vae"}}
    assert pipe.resident() == []
    if case == "thinking":  # the same request without the planner: the DiT phase holds no more with it
        from mlx.utils import tree_flatten

        plain = pipe.generate("gentle piano", thinking=False, **kwargs)
        # MLX's peak counts the whole process (other tests' models too), the same in both runs. The prompts differ
        # in their instruction line (a few condition tokens: +10 kB measured); a leak would add the condition
        # encoder and FSQ modules' weights (1.7 MB here).
        leaked = sum(v.nbytes for _, v in tree_flatten(pipe.residency.get("condition_codes").parameters()))
        pipe.unload()
        assert result.peak_memory["dit"] - plain.peak_memory["dit"] < leaked / 4, (
            result.peak_memory,
            plain.peak_memory,
        )


# -- apps and threads ---------------------------------------------------------------------------------


def test_generate_from_a_worker_thread_then_the_main_thread_then_two_at_once(pipe, song):
    """Web and macOS apps generate off the main thread: every call gives the same song, whichever thread asks."""
    import threading

    results, errors = {}, []

    def work(name):
        try:
            results[name] = pipe.generate("gentle piano", "[verse]\nla la", duration=6, seed=11, bpm=90).audio
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {e!r}")

    worker = threading.Thread(target=work, args=("worker",))
    worker.start()
    worker.join()
    work("main")
    pair = [threading.Thread(target=work, args=(f"both-{i}",)) for i in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    assert not errors, errors
    for name, audio in results.items():
        np.testing.assert_array_equal(audio, song.audio, err_msg=name)


def test_a_process_that_generated_on_threads_exits_cleanly(tmp_path):
    """MLX gives each thread streams that must be freed on that thread before the process ends, else it aborts
    ("terminate called without an active exception", exit 134): the pipeline's own thread does that."""
    import subprocess
    import sys

    code = f"""
import threading, warnings
warnings.simplefilter("ignore")
from mlx_acestep import ACEStep
pipe = ACEStep.from_pretrained("tiny", cache_dir={str(tmp_path)!r})
t = threading.Thread(target=lambda: pipe.generate("piano", duration=1, seed=1, thinking=False))
t.start(); t.join()
print("done")
"""
    for _ in range(2):  # without the fix it aborted in 3 of 3 runs
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "done" in out.stdout, (out.returncode, out.stderr[-500:])


def test_a_full_retake_is_the_retake_seeds_song_and_a_partial_one_lies_between(pipe):
    """Upstream's retake mixes the seed's noise with the retake seed's: at variance 1 the song is the other seed's
    (cos(pi/2) is 6e-17, not 0), below it a variation of the song."""
    kw = dict(duration=5, dcw=False)
    song, other = (pipe.generate("gentle piano", seed=s, **kw).latents for s in (1, 7))
    full = pipe.generate("gentle piano", seed=1, retake_seed=7, retake_variance=1.0, **kw).latents
    np.testing.assert_allclose(full, other, atol=1e-5 * np.abs(other).max())
    part = pipe.generate("gentle piano", seed=1, retake_seed=7, retake_variance=0.2, **kw).latents
    distance = lambda a, b: float(np.abs(a - b).mean())  # noqa: E731
    assert 0 < distance(part, song) < distance(part, other)
    with pytest.warns(UserWarning, match="a retake seed without a retake variance changes nothing"):
        pipe.generate("gentle piano", seed=1, retake_seed=7, **kw)


def test_thinking_renders_a_short_clip_from_its_codes(thinker):
    """A 3 s clip under the planner: upstream forces "3" as the duration and writes int(3 * 5) codes
    (constrained_logits_processor.py:1285-1295, 1913-1915); its DiT still runs 128 frames, the clip keeps 3 s."""
    result = thinker.generate("gentle piano", duration=3.0, seed=3, bpm=100)
    assert result.codes.shape == (1, 15) and result.metadata[0]["duration"] == 3
    assert result.latents.shape == (1, 128, 64) and result.audio.shape == (1, 75 * 1920, 2)
    with pytest.raises(AceStepError, match=r"^duration 0.1 s is shorter than one planner code \(0.2 s\)"):
        thinker.generate("gentle piano", duration=0.1, seed=3)


def _stop_at_the_prompt(monkeypatch, part: str) -> list:
    """Runs stop once the DiT's prompt is written; the list gets each run's first item's `part`."""
    from mlx_acestep.pipeline import prepare

    seen = []

    def record(tokenizer, items, *args):
        seen.append(getattr(items[0], part))
        raise RuntimeError("stopped once the prompt was written")

    monkeypatch.setattr(prepare, "tokenize_items", record)
    return seen


def test_a_custom_instruction_gives_way_to_covers_under_the_planner(thinker, monkeypatch):
    """Upstream turns text2music with codes, the planner's included, into a cover of them and replaces the instruction
    with cover's (generate_music_request.py:47-56, called before any use of it): the DiT reads cover's line, and the
    user is told the instruction was not used. Without the planner the instruction is read as sent."""
    seen = _stop_at_the_prompt(monkeypatch, "instruction")
    custom = "Generate a segment of the DRUMS track based on the audio context:"
    with pytest.warns(UserWarning, match="the instruction was not used"), pytest.raises(RuntimeError, match="stopped"):
        thinker.generate("gentle piano", duration=10, seed=3, bpm=100, instruction=custom, thinking=True)
    with pytest.raises(RuntimeError, match="stopped"):
        thinker.generate("gentle piano", duration=10, seed=3, instruction=custom, thinking=False)
    assert seen == ["Generate audio semantic tokens based on the given conditions:", custom]


def test_the_lego_sft_checkpoint_reads_the_global_caption(converted, tmp_path, monkeypatch):
    """A DiT whose config says `is_lego_sft` (upstream's SFT-stems lego checkpoint) gets upstream's caption blocks
    (conditioning_text.py:92-115), typed here: Global and Local for a whole track, Local alone for "a segment",
    "Mask Control" true only with the explicit chunk mask; any other DiT reads the caption alone."""
    import json
    import shutil

    dit = tmp_path / "acestep-v15-turbo"
    shutil.copytree(converted / "acestep-v15-turbo", dit)
    config = json.loads((dit / "config.json").read_text())
    (dit / "config.json").write_text(json.dumps(config | {"is_lego_sft": True}))
    seen = _stop_at_the_prompt(monkeypatch, "caption")
    segment = "Generate a segment of the DRUMS track based on the audio context:"
    source = np.zeros((200, 64), np.float32)
    explicit = {"task": "repaint", "src_latents": source, "repaint_start": 1, "chunk_mask_mode": "explicit"}
    sft = ModelFolders(converted / "Qwen3-Embedding-0.6B", dit, converted / "vae")
    runs = [(sft, {"duration": 5}), (sft, {"duration": 5, "instruction": segment}), (sft, explicit)]
    runs.append((folders(converted), {"duration": 5}))
    for model, extra in runs:
        with pytest.raises(RuntimeError, match="stopped"):
            ACEStep(model).generate("tight funk drums", global_caption="a funk song", **extra)
    assert seen == [
        "Global: a funk song\nLocal: tight funk drums\nMask Control: false",
        "Local: tight funk drums\nMask Control: false",
        "Global: a funk song\nLocal: tight funk drums\nMask Control: true",
        "tight funk drums",
    ]
