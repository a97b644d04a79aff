"""The editing tasks (spec 5.4, 5.8, 5.9, 7): their inputs, the upstream-only sampler extras checked against the
spec's description, every task from the command line on the tiny model, and bad input.

diffusers cannot serve as the reference for cover strength below 1 (it blends velocities at every step
instead of switching condition once, DIFFUSERS-MAPPING D-7) nor for repaint's latent injection, blend and
waveform splice (not in diffusers): those follow the spec's text here.
"""

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from helpers import assert_one_line_error, run_cli

from mlx_acestep.conditioning.tasks import Task, region_frames, region_weights, repaint_settings, splice
from mlx_acestep.diffusion.edits import EditHooks
from mlx_acestep.diffusion.loop import Step
from mlx_acestep.errors import AceStepError
from mlx_acestep.pipeline import ACEStep, ModelFolders

SOURCE_FRAMES = 200  # 8 s: room for the repaint regions below and their ramps, short to be quick


@pytest.fixture(scope="module")
def turbo(converted):
    return ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))


@pytest.fixture(scope="module")
def base(converted):
    return ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-base", converted / "vae"))


@pytest.fixture(scope="module")
def source():
    return np.random.default_rng(0).standard_normal((SOURCE_FRAMES, 64)).astype(np.float32)


# -- task inputs ------------------------------------------------------------------------------------


def test_instructions_and_tracks_are_the_reference_strings():
    assert Task("cover").instruction() == "Generate audio semantic tokens based on the given conditions:"
    assert Task("repaint").instruction() == "Repaint the mask area based on the given conditions:"
    assert Task("extract", track="vocals").instruction() == "Extract the VOCALS track from the audio:"
    assert (
        Task("lego", track="backing_vocals").instruction()
        == "Generate the BACKING_VOCALS track based on the audio context:"
    )
    assert Task("complete", tracks=["drums", "bass"]).instruction() == "Complete the input track with DRUMS | BASS:"
    with pytest.raises(AceStepError, match="unknown track 'kazoo'"):
        Task("extract", track="kazoo")
    assert Task("lego").instruction() == "Generate the track based on the audio context:"  # no track: the generic line
    assert Task("complete").instruction() == "Complete the input track:"
    with pytest.raises(AceStepError, match="unknown task"):
        Task("remix")


def test_region_frames_follow_the_spec_and_refuse_bad_regions():
    assert region_frames(2.0, 6.0, 260, 260) == (50, 150)  # int(s * 48000 // 1920)
    assert region_frames(2.0, None, 260, 260) == (50, 260)  # None: to the end of the source
    for start, end, match in [
        (-1, 4, "before the audio"),
        (6, 2, "inverted"),
        (11, None, "after the end"),
        (2, 12, "ends at 12 s, after the end"),
        (2, -1, "must be after 0 s"),
        (2, -4, "got -4"),
        (2, 0, "leave it out for the end"),
    ]:
        with pytest.raises(AceStepError, match=match):
            region_frames(start, end, 260, 260)


def test_repaint_modes_and_blend_ramps():
    assert repaint_settings("balanced", 0.5) == (0.5, 12, 0.025)
    assert repaint_settings("conservative") == (1.0, 25, 0.05) and repaint_settings("aggressive") == (0.0, 0, 0.0)
    w = region_weights(10, 4, 6, 2)  # ramps of two frames just outside [4, 6), end points excluded
    np.testing.assert_allclose(w, [0, 0, 1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3, 0, 0], rtol=1e-6)
    # the song's edges cut a ramp short: it spans what is left, linspace(0, 1, n + 2)[1:-1] (upstream's)
    np.testing.assert_allclose(region_weights(8, 2, 6, 4), [1 / 3, 2 / 3, 1, 1, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)


def test_edit_hooks_inject_the_renoised_source_outside_the_region_then_blend():
    x, src, eps = (mx.array(np.random.default_rng(i).standard_normal((1, 8, 4)).astype(np.float32)) for i in range(3))
    keep = mx.array(np.r_[np.ones(3), np.zeros(3), np.ones(2)].reshape(1, 8, 1))
    hooks = EditHooks(source=src, keep=keep, inject_fraction=0.5, blend=1 - keep)

    def step(k):  # what the loop hands a correction after step k of 4, which ends at t = 0.25
        return Step(k, 4, 0.5, 0.25, x_in=None, v=None, velocity=None, noise=eps, x=x)

    out = np.array(hooks.after_step(step(1)))  # step 1 < round(4 * 0.5)
    want = np.where(np.array(keep) > 0, 0.25 * np.array(eps) + 0.75 * np.array(src), np.array(x))
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert np.array_equal(np.array(hooks.after_step(step(2))), np.array(x))  # no injection from step 2
    np.testing.assert_allclose(np.array(hooks.finish(x)), np.where(np.array(keep) > 0, np.array(src), np.array(x)))


def test_splice_keeps_the_source_outside_the_region():
    gen, src = np.ones((20 * 1920, 2), np.float32), np.zeros((15 * 1920, 2), np.float32)
    out = splice(gen, src, 5, 10, 0.01)  # 480-sample cross-fades
    assert (
        (out[: 5 * 1920 - 480] == 0).all()
        and (out[5 * 1920 : 10 * 1920] == 1).all()
        and (out[10 * 1920 + 480 :] == 0).all()
    )
    assert 0 < out[5 * 1920 - 240, 0] < 1


# -- the upstream-only paths, through the pipeline --------------------------------------------------


def test_cover_strength_zero_is_text2music_from_the_start(turbo, source):
    """Below 1 the cover switches, after int(K a) steps, to the text2music prompt over a silence context: with
    a = 0 that is the whole run, i.e. plain text2music with the same noise."""
    kw = dict(seed=4, batch_size=1)
    switched = turbo.generate("calm piano", task="cover", src_latents=source, cover_strength=0.0, **kw).latents
    plain = turbo.generate("calm piano", duration=SOURCE_FRAMES * 1920 / 48000, **kw).latents
    np.testing.assert_allclose(switched, plain, rtol=1e-5, atol=1e-5)
    full = turbo.generate("calm piano", task="cover", src_latents=source, **kw).latents
    half = turbo.generate("calm piano", task="cover", src_latents=source, cover_strength=0.5, **kw).latents
    assert not np.allclose(half, full, atol=1e-3) and not np.allclose(half, plain, atol=1e-3)


@pytest.mark.parametrize("mode", ["balanced", "conservative"])
def test_repaint_keeps_the_source_outside_region_and_ramps(turbo, source, mode):
    latents = turbo.generate(
        "calm piano", task="repaint", src_latents=source, repaint_start=4, repaint_end=6, repaint_mode=mode, seed=2
    ).latents[0]
    a, b = 100, 150
    ramp = repaint_settings(mode)[1]
    np.testing.assert_allclose(latents[: a - ramp], source[: a - ramp], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(latents[b + ramp :], source[b + ramp :], rtol=1e-6, atol=1e-6)
    assert np.abs(latents[a:b] - source[a:b]).max() > 0.1


def _repaint(turbo, source, **kw):
    return turbo.generate("calm piano", task="repaint", src_latents=source, seed=2, steps=4, **kw).latents[0]


def test_aggressive_and_a_zero_ramp_leave_the_latents_unblended(turbo, source):
    """Upstream blends only with crossfade frames above 0 (modeling_acestep_v15_turbo.py:2214): aggressive, whose
    frames are 0, keeps what the DiT made outside the region, and injection alone does not pin it to the source."""
    for kw in ({"repaint_mode": "aggressive"}, {"repaint_latent_crossfade_frames": 0}):
        latents = _repaint(turbo, source, repaint_start=4, repaint_end=6, **kw)
        assert np.abs(latents[:100] - source[:100]).max() > 0.1, kw


def test_explicit_latent_crossfade_is_the_blend_of_that_width(turbo, source):
    """The blend computed by hand, as upstream's `_repaint_boundary_blend` with 6 frames around [3, 125): the ramp
    before the region is cut to 3 frames by the song's start and spans them (1/4, 2/4, 3/4)."""
    region = {"repaint_start": 3 * 1920 / 48000, "repaint_end": 5.0}  # frames [3, 125)
    unblended = _repaint(turbo, source, repaint_latent_crossfade_frames=0, **region)
    blended = _repaint(turbo, source, repaint_latent_crossfade_frames=6, **region)
    w = np.zeros(SOURCE_FRAMES, np.float32)
    w[:3], w[3:125], w[125:131] = [0.25, 0.5, 0.75], 1.0, np.linspace(1, 0, 8)[1:-1]
    want = w[:, None] * unblended + (1 - w[:, None]) * source
    np.testing.assert_allclose(blended, want, rtol=1e-5, atol=1e-5)
    assert np.abs(blended - _repaint(turbo, source, **region)).max() > 1e-3  # the mode's 12 frames differ


def test_explicit_wav_crossfade_is_the_splice_of_that_length(turbo, monkeypatch):
    """The waveform splice by hand: the source outside [12, 37) frames, 0.1 s (4800 samples, upstream's
    int(d * 48000)) ramps just outside the region, on the VAE's output as the splice receives it."""
    from mlx_acestep.pipeline import postprocess

    seen = []
    real = postprocess.splice
    monkeypatch.setattr(postprocess, "splice", lambda gen, *a: seen.append((gen.copy(), a)) or real(gen, *a))
    result, wave = _repaint_wave(turbo, repaint_wav_crossfade_sec=0.1)
    out = result.audio[0]
    (generated, (_, a, b, xfade)), n = seen[0], out.shape[0]
    assert (a, b, xfade) == (12, 37, 0.1)
    w = np.zeros(n, np.float32)
    w[12 * 1920 : 37 * 1920] = 1.0
    w[12 * 1920 - 4800 : 12 * 1920] = np.linspace(0, 1, 4802)[1:-1]
    w[37 * 1920 : 37 * 1920 + 4800] = np.linspace(1, 0, 4802)[1:-1]
    want = w[:, None] * generated + (1 - w[:, None]) * wave[:n]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_crossfades_are_for_repaint_and_lego(turbo, source):
    with pytest.raises(AceStepError, match="repaint_latent_crossfade_frames is for repaint and lego, not for cover"):
        turbo.generate("x", task="cover", src_latents=source, repaint_latent_crossfade_frames=4)
    with pytest.raises(AceStepError, match="repaint_wav_crossfade_sec must be between 0 and 600"):
        turbo.generate("x", task="repaint", src_latents=source, repaint_wav_crossfade_sec=-0.1)


def _repaint_wave(turbo, **kw):
    """A repaint of [0.5, 1.5) s (frames [12, 37)) of a 2.5 s recording (62 whole frames): short, as the VAE
    encode of the source is most of the run's cost."""
    wave = np.random.default_rng(1).uniform(-0.3, 0.3, (int(48000 * 2.5), 2)).astype(np.float32)
    result = turbo.generate(
        "calm piano", task="repaint", src_audio=wave, repaint_start=0.5, repaint_end=1.5, seed=2, normalize=False, **kw
    )
    return result, wave


def test_repaint_splices_the_source_waveform(turbo):
    result, wave = _repaint_wave(turbo)
    out = result.audio[0]
    assert out.shape == (62 * 1920, 2)
    fade = int(0.025 * 48000)  # balanced mode: 0.025 s cross-fades just outside the region, frames [12, 37)
    np.testing.assert_array_equal(out[: 12 * 1920 - fade], wave[: 12 * 1920 - fade])
    np.testing.assert_array_equal(out[37 * 1920 + fade :], wave[37 * 1920 + fade : out.shape[0]])
    assert np.abs(out[12 * 1920 : 37 * 1920] - wave[12 * 1920 : 37 * 1920]).max() > 0.1  # the region is new


def test_base_only_tasks_need_a_base_model(turbo, base, source):
    with pytest.raises(AceStepError, match="the extract task needs a base model"):
        turbo.generate("x", task="extract", track="vocals", src_latents=source)
    out = base.generate("x", task="extract", track="vocals", src_latents=source, steps=2, seed=1)
    assert out.latents.shape == (1, SOURCE_FRAMES, 64)


def test_task_input_errors(turbo, source):
    for kwargs, match in [
        (dict(task="cover"), "needs source audio"),
        (dict(src_latents=source), "src_audio is for the editing tasks"),
        (dict(task="cover", src_latents=source, thinking=True), "thinking is for text2music"),
        (dict(task="cover", src_latents=source[:, :3]), r"must be \[frames, 64\]"),
        (dict(task="cover", src_audio=np.zeros((1000, 2), np.float32)), "lasts 0.02 s"),
    ]:
        with pytest.raises(AceStepError, match=match):
            turbo.generate("x", **kwargs)


# -- every task from the command line on the tiny model ---------------------------------------------


def cli(*args, cwd):
    return run_cli(["generate", *args], cwd, env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    "task, extra",
    [
        ("cover", ["--ref-audio", "src.wav"]),
        ("repaint", ["--repaint-start", "0.5", "--repaint-end", "1"]),
        ("extract", ["--track", "vocals"]),
        ("lego", ["--track", "drums"]),
        ("complete", ["--tracks", "drums,bass"]),
    ],
)
def test_every_task_runs_from_the_cli_and_keeps_the_source_length(task, extra, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path.parent / "task-cache"))
    monkeypatch.chdir(tmp_path)
    sf.write("src.wav", np.random.default_rng(3).uniform(-0.3, 0.3, (int(1.5 * 44100), 1)).astype(np.float32), 44100)
    result = cli(
        "soft rain",
        "--model",
        "tiny",
        "--task",
        task,
        "--src-audio",
        "src.wav",
        *extra,
        "--seed",
        1,
        "-o",
        "out.wav",
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert sf.info("out.wav").frames == int(1.5 * 48000) // 1920 * 1920  # the source's length, in whole frames
    assert "encode" in result.output.split("RTF", 1)[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--task", "cover"], "the cover task needs source audio (--src-audio)"),
        (["--task", "cover", "--src-audio", "missing.wav"], "file not found"),
        (["--task", "cover", "--src-audio", "corrupt.wav"], "cannot decode audio"),
        (["--task", "cover", "--src-audio", "short.wav"], "lasts 0.50 s"),
        (["--task", "repaint", "--src-audio", "ok.wav", "--repaint-start", "1", "--repaint-end", "0.5"], "inverted"),
        (["--task", "repaint", "--src-audio", "ok.wav", "--repaint-start", "5"], "after the end of the audio"),
        (["--task", "extract", "--src-audio", "ok.wav", "--track", "kazoo"], "unknown track 'kazoo'"),
        (["--src-audio", "ok.wav"], "for the editing tasks"),
        (["--task", "cover", "--src-audio", "ok.wav", "--thinking"], "--thinking is for text2music"),
        (
            ["--task", "cover", "--src-audio", "ok.wav", "--repaint-wav-crossfade-sec", "0.1"],
            "--repaint-wav-crossfade-sec is for repaint and lego, not for cover",
        ),
        (
            ["--task", "repaint", "--src-audio", "ok.wav", "--repaint-latent-crossfade-frames", "-2"],
            "--repaint-latent-crossfade-frames must be between 0 and 15000",
        ),
    ],
)
def test_bad_task_input_is_one_line_and_writes_nothing(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write("short.wav", np.zeros((24000, 2), np.float32), 48000)
    sf.write("ok.wav", np.zeros((96000, 2), np.float32), 48000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really")
    assert_one_line_error(run_cli(["generate", "x", "--model", "tiny", *args, "-o", "out.wav"]), needle)
    assert not (tmp_path / "out.wav").exists()


def test_cover_noise_starts_near_the_source_and_is_for_covers_only(turbo):
    """cover_noise_strength c: the run starts from the source noised to the schedule time nearest 1 - c, so a high
    c stays closer to the source than a plain cover (upstream's option; its MLX path drops it)."""
    source = np.random.default_rng(0).standard_normal((130, 64)).astype(np.float32)  # 5.2 s: the DiT's 128 frames
    kw = dict(task="cover", src_latents=source, seed=4, dcw=False)
    plain = turbo.generate("piano", **kw).latents[0]
    near = turbo.generate("piano", cover_noise_strength=0.9, **kw).latents[0]
    assert np.abs(near - source).mean() < np.abs(plain - source).mean()
    with pytest.raises(AceStepError, match="cover_noise_strength is for the cover tasks, not for repaint"):
        turbo.generate("piano", task="repaint", src_latents=source, cover_noise_strength=0.5)


def test_cover_nofsq_is_cover_from_the_raw_source_latents(turbo, monkeypatch):
    """Upstream's cover-nofsq ("Remix"): cover's instruction, but is_cover off, so the context holds the source's
    own 25 Hz latents instead of their 5 Hz FSQ round trip (conditioning_masks.py: is_cover = task == "cover")."""
    from mlx_acestep.engine import Engine

    seen = {}

    class Spy(Engine):  # what the condition step is asked for and makes
        def condition(self, dit, text, job):
            seen[job.items[0].instruction] = [c for _, _, c in job.sources]
            states, seen["context"] = super().condition(dit, text, job)
            return states, seen["context"]

    monkeypatch.setattr(turbo, "engine", Spy(turbo.silence_latent))
    source = np.random.default_rng(1).standard_normal((130, 64)).astype(np.float32)  # 5.2 s: the DiT's 128 frames
    turbo.generate("piano", task="cover-nofsq", src_latents=source, seed=2)
    assert seen[Task("cover").instruction()] == [False]  # cover's instruction, no FSQ
    np.testing.assert_allclose(np.array(seen["context"][0, :, :64]), source, atol=1e-6)  # the raw latents
    turbo.generate("piano", task="cover", src_latents=source, seed=2)
    assert np.abs(np.array(seen["context"][0, :, :64]) - source).max() > 1e-2  # cover hears the FSQ round trip


def test_repaint_leaves_the_chunk_mask_at_one_by_default_and_marks_the_region_when_explicit(turbo, monkeypatch):
    """Upstream's chunk_mask_mode (default auto since March 2026): the DiT's context mask channel is 1 everywhere
    in auto and 1 only inside the region in explicit; the injection region is the same in both."""
    from mlx_acestep.engine import Engine

    seen = {}

    class Spy(Engine):
        def condition(self, dit, text, job):
            states, seen["context"] = super().condition(dit, text, job)
            return states, seen["context"]

    monkeypatch.setattr(turbo, "engine", Spy(turbo.silence_latent))
    source = np.random.default_rng(1).standard_normal((130, 64)).astype(np.float32)  # 5.2 s: the DiT's 128 frames
    kw = dict(task="repaint", src_latents=source, repaint_start=2, repaint_end=4, seed=2)
    auto = turbo.generate("piano", **kw).latents
    assert (np.array(seen["context"][0, :, 64:]) == 1).all()
    explicit = turbo.generate("piano", chunk_mask_mode="explicit", **kw).latents
    mask = np.array(seen["context"][0, :, 64])
    assert (mask[50:100] == 1).all() and (mask[:50] == 0).all() and (mask[100:] == 0).all()
    assert np.abs(np.array(auto) - np.array(explicit)).max() > 1e-3
    with pytest.raises(AceStepError, match="unknown chunk_mask_mode 'model'"):
        turbo.generate("piano", chunk_mask_mode="model", **kw)


def test_an_older_repaint_sidecar_replays_with_the_explicit_mask_it_was_made_with(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("MLX_ACESTEP_CACHE", str(tmp_path.parent / "task-cache"))
    monkeypatch.chdir(tmp_path)
    # 1.5 s: the source's VAE encode (twice) is most of the test; [0.5, 1) leaves source on both sides of the region
    sf.write("src.wav", np.random.default_rng(3).uniform(-0.3, 0.3, (int(1.5 * 44100), 1)).astype(np.float32), 44100)
    base = ["rain", "--model", "tiny", "--task", "repaint", "--src-audio", "src.wav", "--repaint-start", "0.5"]
    base += ["--repaint-end", "1", "--seed", 4, "--no-dcw"]
    result = cli(*base, "--chunk-mask-mode", "explicit", "-o", "explicit.wav", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    explicit = sf.read("explicit.wav")[0]
    meta = json.loads((tmp_path / "explicit.json").read_text())
    assert meta["chunk_mask_mode"] == "explicit"
    del meta["replay"]["chunk_mask_mode"]  # as 0.4 wrote it: the region was always marked then
    (tmp_path / "old.json").write_text(json.dumps(meta))
    again = cli("--from-metadata", "old.json", "-o", "again.wav", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert (sf.read("again.wav")[0] == explicit).all()
    bad = cli(*base, "--chunk-mask-mode", "2.0", "-o", "bad.wav", cwd=tmp_path)  # click's usage error
    assert bad.exit_code == 2 and "'2.0' is not one of 'auto', 'explicit'" in bad.output


def test_the_crossfade_flags_reach_the_request():
    import click

    from mlx_acestep.cli.repaint_options import REPAINT_FIELDS, repaint_options
    from mlx_acestep.pipeline.request import GenerationRequest

    declared = {p.name for p in repaint_options(click.command()(lambda **kw: None)).params}
    assert declared == set(REPAINT_FIELDS) <= set(GenerationRequest.__dataclass_fields__)
