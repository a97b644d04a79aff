"""diffusers 0.42.1 `AceStepPipeline` as a live reference for the six ACE-Step tasks and reference audio.

`run_reference_task(fixtures, variant, task, ...)` builds the pipeline in memory from the fixture checkpoints
(original layout) with `diffusers_modules` from test_convert_diffusers (DIFFUSERS-MAPPING §1, §5.1), runs
`__call__` in float32 with the caller's initial noise as `latents=` and `output_type="latent"`, and returns the
final latents `[B, T, 64]` float32. What diffusers computes per task, and where that is not upstream, is written
up in /work/diffusers_tasks_report.md; read it before using a result as "the upstream answer" (repaint has no
injection/blend/splice here, cover strength < 1 is a per-step blend, no 128-frame minimum, ...).

Determinism: the only unseeded draw left in the pipeline is the VAE posterior sample of source and reference
audio (`vae.encode(x).latent_dist.sample()`, pipeline_ace_step.py:624 and :692). It is patched to return the
posterior MEAN (spec §5.10 / pitfall 30: upstream samples, parity uses the mean). The initial noise is injected;
the ODE scheduler draws nothing. `src_latents=` / `ref_latents=` bypass the VAE altogether (given latents).

The pipeline is not built with `from_pretrained` of a saved folder: diffusers' condition encoder allocates a
15000-frame silence buffer and the fixture ships 1000 frames (mapping §1.2 rule 4), so a tiny folder does not
load; `diffusers_modules` re-registers the buffer at the fixture's length instead. Importing the test module
test_convert_diffusers is fine (it imports only helpers/mlx_acestep/mlx_acestep.convert, nothing imports back).

Cost: the fixture VAE is narrow but runs at 48 kHz; encoding takes ~1.5-3 s of CPU per second of audio
(1-2 threads). Source audio of ~1-2 s keeps a task run at a few seconds; reference audio is always encoded as
a 30 s clip by diffusers (`prepare_reference_audio_latents`), ~60-100 s on this CPU. Encodes are memoised
per pipeline by input content, so a pytest session pays each distinct clip once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from test_convert_diffusers import TEXT_ENCODER, diffusers_modules

TASKS = ("text2music", "cover", "repaint", "extract", "lego", "complete")
_PIPELINES: dict[tuple[str, str], object] = {}


def build_reference_pipeline(fixtures: Path, variant: str):
    """diffusers' AceStepPipeline (float32, CPU) on the fixture checkpoints of `variant` ("turbo" or "base")."""
    key = (str(fixtures), variant)
    if key in _PIPELINES:
        return _PIPELINES[key]
    import torch
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, Qwen3Model

    ckpt = Path(fixtures) / "checkpoints"
    dit = ckpt / f"acestep-v15-{variant}"
    config = json.loads((dit / "config.json").read_text())
    silence = load_file(str(dit / "silence_latent.safetensors"))["silence_latent"]  # [1, 64, T] channel-first
    modules = diffusers_modules(config, load_file(str(dit / "model.safetensors")), silence)
    pipe = AceStepPipeline(
        vae=AutoencoderOobleck.from_pretrained(str(ckpt / "vae")).eval(),
        text_encoder=Qwen3Model.from_pretrained(str(ckpt / TEXT_ENCODER)).eval(),
        tokenizer=AutoTokenizer.from_pretrained(str(ckpt / TEXT_ENCODER)),
        # As a converted folder's scheduler/ (mapping §1.1): the pipeline passes its own sigmas.
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        **modules,
    )
    pipe.set_progress_bar_config(disable=True)
    assert {m.dtype for m in (pipe.vae, pipe.text_encoder, pipe.transformer, pipe.condition_encoder)} == {torch.float32}
    assert pipe.is_turbo == (variant == "turbo")
    _memoise_vae_encode(pipe.vae)
    _PIPELINES[key] = pipe
    return pipe


def _memoise_vae_encode(vae):
    """Cache `vae.encode` by input content (the posterior is deterministic once `sample` returns the mean), and let
    a call substitute given latents: `vae.injected` lists, in the pipeline's encode order (source at
    pipeline_ace_step.py:1032/692, then reference at :1044/624), a `[B, 64, T]` tensor to return instead of
    encoding, or None to encode for real. Empty list: every encode is real."""
    from types import SimpleNamespace

    encode, cache = vae.encode, {}
    vae.injected = []

    def cached(x, return_dict=True):
        if vae.injected:
            given = vae.injected.pop(0)
            if given is not None:
                return SimpleNamespace(latent_dist=SimpleNamespace(mean=given, sample=lambda generator=None: given))
        arr = x.detach().cpu().contiguous().numpy()
        key = (arr.shape, str(arr.dtype), hashlib.sha1(arr.tobytes()).hexdigest(), return_dict)
        if key not in cache:
            cache[key] = encode(x, return_dict=return_dict)
        return cache[key]

    vae.encode = cached


@contextmanager
def _posterior_mean_and_threads(threads):
    """VAE posterior sample -> its mean (removes the unseeded draw at pipeline_ace_step.py:624/:692); fixed threads."""
    import torch
    from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution

    original_sample, old_threads = OobleckDiagonalGaussianDistribution.sample, torch.get_num_threads()
    # Deliberate deviation from upstream (spec §5.10): the reference samples mean + std*eps with an unseeded RNG.
    OobleckDiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        OobleckDiagonalGaussianDistribution.sample = original_sample
        torch.set_num_threads(old_threads)


def expected_latent_length(pipe, *, duration=None, src_samples=None, audio_codes=None) -> int:
    """The latent length T diffusers samples at (pipeline_ace_step.py:1006-1013, 1031, 529, 687, 692-695).

    codes: 5 frames per parsed code (longest item); source audio: the VAE length floor(samples / 1920),
    whatever `duration` says; otherwise ceil(duration * 25) with duration None/<=0 -> 60 s. No 128-frame minimum.
    """
    if audio_codes:
        codes = [audio_codes] if isinstance(audio_codes, str) else list(audio_codes)
        return max(len(re.findall(r"<\|audio_code_(\d+)\|>", c)) for c in codes) * int(
            pipe.audio_token_detokenizer.config.pool_window_size
        )
    if src_samples is not None:
        return src_samples // math.prod(pipe.vae.config.downsampling_ratios)
    duration = 60.0 if duration is None or duration <= 0 else duration
    return math.ceil(duration * pipe.latents_per_second)


def run_reference_task(
    fixtures,
    variant,
    task,
    *,
    caption,
    lyrics,
    noise,
    src_wave=None,
    ref_wave=None,
    repaint_start=None,
    repaint_end=None,
    track=None,
    tracks=None,
    steps,
    shift,
    guidance,
    duration,
    bpm=None,
    keyscale=None,
    timesignature=None,
    language="en",
    src_latents=None,
    ref_latents=None,
    cover_strength=1.0,
    cover_switch=False,
    audio_codes=None,
    instruction=None,
    timesteps=None,
    cfg_interval=(0.0, 1.0),
    threads=2,
) -> np.ndarray:
    """Final latents `[B, T, 64]` float32 of diffusers' AceStepPipeline for one task on the fixture checkpoint.

    fixtures: the fixture root (the `fixtures` pytest fixture); variant: "turbo" | "base"; task: one of TASKS.
    caption / lyrics: a string (repeated for every batch row) or a list of B strings.
    noise: initial latents `[B, T, 64]`; T must be `expected_latent_length(...)` (checked).
    src_wave: source audio `[2, S]` (or `[B, 2, S]`), 48 kHz, float; diffusers neither resamples, nor makes it
        stereo, nor clamps, nor pads: pass what the VAE should see. The latent length follows it.
    ref_wave: reference (timbre) audio `[2, S]`, 48 kHz: one clip for the whole batch.
    src_latents / ref_latents: instead of a waveform, VAE latents `[T, 64]` (src also `[B, T, 64]`) that the
        pipeline's encode returns as its "sample" (a zero waveform of T*1920 samples stands in for the source, so
        T and the duration metadata follow T; any stand-in serves the reference, whose segment choice is then
        moot). Skips the slow fixture VAE and feeds both sides of a parity test the same latents.
    repaint_start / repaint_end: seconds (repaint and lego with a source); end None or <= 0 = to the end.
    track: extract/lego track name; tracks: list of track names for complete.
    duration: `audio_duration` (seconds). It only sets T when there is neither source nor codes; it always sets the
        "- duration: N seconds" metadata line (None/<=0 with a source -> the source length; otherwise 60 s).
    cover_strength: diffusers' `audio_cover_strength`: a blend s*v_cover + (1-s)*v_text2music at EVERY step
        (mapping D-7), not upstream's switch.
    cover_switch: instead emulate upstream's switch (spec §5.8) with two diffusers calls: the cover call stopped
        after int(K*s) steps, then text2music (silence context, all-ones mask, text2music instruction, same
        caption/lyrics/metas/reference) on the remaining schedule. Splitting a run this way is bit-exact
        (checked: cover stopped at step 4 + resumed with `timesteps=schedule[4:]` == one 8-step call). Only
        for unguided runs (turbo, or guidance <= 1): a second call would restart the APG momentum.
    cfg_interval: passed verbatim as diffusers' (start, end) on 1 - t (mirrored vs upstream, mapping D-3).
    threads: torch threads for the call (the fixtures were made with 2); None leaves them alone.
    """
    import torch

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    pipe = build_reference_pipeline(Path(fixtures), variant)
    noise = torch.as_tensor(np.asarray(noise, np.float32))
    batch = noise.shape[0]
    if (src_wave is not None and src_latents is not None) or (ref_wave is not None and ref_latents is not None):
        raise ValueError("give a waveform or latents for the source / reference, not both")
    src = None if src_wave is None else torch.as_tensor(np.asarray(src_wave, np.float32))
    ref = None if ref_wave is None else torch.as_tensor(np.asarray(ref_wave, np.float32))
    injected_src = injected_ref = None
    if src_latents is not None:
        injected_src = torch.as_tensor(np.asarray(src_latents, np.float32))
        injected_src = (injected_src[None] if injected_src.dim() == 2 else injected_src).transpose(1, 2).contiguous()
        hop = math.prod(pipe.vae.config.downsampling_ratios)
        src = torch.zeros(*injected_src.shape[:1], pipe.vae.config.audio_channels, injected_src.shape[-1] * hop)
    if ref_latents is not None:
        if np.ndim(ref_latents) != 2:
            raise ValueError("ref_latents must be [T, 64]: diffusers takes one reference clip per call")
        injected_ref = torch.as_tensor(np.asarray(ref_latents, np.float32))[None].transpose(1, 2).contiguous()
        ref = torch.zeros(pipe.vae.config.audio_channels, 1920)
    if ref is not None and ref.dim() != 2:
        raise ValueError("ref_wave must be [channels, samples]: diffusers takes one reference clip per call")
    want = expected_latent_length(
        pipe, duration=duration, src_samples=None if src is None else src.shape[-1], audio_codes=audio_codes
    )
    if tuple(noise.shape[1:]) != (want, pipe.transformer.config.audio_acoustic_hidden_dim):
        raise ValueError(
            f"noise must be [B, {want}, 64] for this call (diffusers' latent length), got {tuple(noise.shape)}"
        )

    def per_row(x):
        return [x] * batch if isinstance(x, str) else list(x)

    common = dict(
        prompt=per_row(caption),
        lyrics=per_row(lyrics),
        vocal_language=language,
        guidance_scale=guidance,
        shift=shift,
        num_inference_steps=steps,
        output_type="latent",
        return_dict=False,
        bpm=bpm,
        keyscale=keyscale,
        timesignature=timesignature,
        reference_audio=ref,
        cfg_interval_start=cfg_interval[0],
        cfg_interval_end=cfg_interval[1],
    )
    first = dict(
        common,
        latents=noise,
        audio_duration=duration,
        instruction=instruction,
        task_type=task,
        track_name=track,
        complete_track_classes=tracks,
        src_audio=src,
        audio_codes=audio_codes,
        repainting_start=repaint_start,
        repainting_end=repaint_end,
        timesteps=timesteps,
        audio_cover_strength=cover_strength,
    )
    is_cover = task == "cover" or bool(audio_codes)

    def call(**kwargs):
        # What vae.encode returns, in the pipeline's order: source (unless codes replace it), then reference.
        order = [injected_src] if kwargs.get("src_audio") is not None and not kwargs.get("audio_codes") else []
        order += [injected_ref] if kwargs.get("reference_audio") is not None else []
        pipe.vae.injected = order if any(o is not None for o in order) else []
        try:
            return pipe(**kwargs)[0]
        finally:
            pipe.vae.injected = []

    with _posterior_mean_and_threads(threads):
        if not (cover_switch and is_cover and cover_strength < 1.0):
            return call(**first).detach().cpu().numpy().astype(np.float32)
        if guidance > 1.0 and not pipe.is_turbo:
            raise ValueError("cover_switch emulation needs an unguided run (APG momentum would restart)")
        schedule = (
            list(timesteps)
            if timesteps is not None
            else pipe._get_timestep_schedule(num_inference_steps=steps, shift=shift, dtype=torch.float32).tolist()
        )
        switch = int(len(schedule) * cover_strength)  # upstream: steps k >= int(K*s) use the non-cover condition
        x = noise
        if switch > 0:

            def stop(p, step, t, kwargs):
                if step == switch - 1:
                    p._interrupt = True
                return kwargs

            x = call(**dict(first, timesteps=schedule, audio_cover_strength=1.0, callback_on_step_end=stop))
        # The non-cover half: text2music without source -> silence context, chunk mask 1 (cover's mask is all 1).
        t_len = noise.shape[1]
        d2 = duration if duration is not None and duration > 0 else t_len / pipe.latents_per_second
        if expected_latent_length(pipe, duration=d2) != t_len:
            raise ValueError(
                f"cover_switch: duration {d2} does not give the cover's {t_len} frames; pass a matching duration"
            )
        second = dict(common, latents=x, audio_duration=d2, task_type="text2music", timesteps=schedule[switch:])
        return call(**second).detach().cpu().numpy().astype(np.float32)


def _smoke(fixtures: Path, real_reference: bool = True):
    """Every task once on tiny shapes (1.2 s sources = 30 frames; text2music 2 s = 50 frames), reference audio as
    injected latents and (unless `--fast`; ~1-2 min: diffusers always encodes a 30 s clip) as a waveform."""
    import time

    rng = np.random.default_rng(0)
    wave = (
        0.3 * np.sin(np.linspace(0, 440 * 2 * np.pi * 1.2, 57600))[None] + 0.05 * rng.standard_normal((2, 57600))
    ).astype(np.float32)
    common = dict(caption="soft rain piano", lyrics="[Instrumental]", steps=8, shift=3.0, guidance=1.0, bpm=90)
    cases = [
        ("turbo", "text2music", dict(duration=2.0)),
        ("turbo", "cover", dict(src_wave=wave, duration=None)),
        ("turbo", "cover", dict(src_wave=wave, duration=None, cover_strength=0.5)),
        ("turbo", "cover", dict(src_wave=wave, duration=None, cover_strength=0.5, cover_switch=True)),
        ("turbo", "repaint", dict(src_wave=wave, duration=None, repaint_start=0.4, repaint_end=0.8)),
        ("base", "extract", dict(src_wave=wave, duration=None, track="vocals", steps=4, guidance=3.0)),
        (
            "base",
            "lego",
            dict(src_wave=wave, duration=None, track="drums", repaint_start=0.2, repaint_end=-1, steps=4, guidance=3.0),
        ),
        ("base", "complete", dict(src_wave=wave, duration=None, tracks=["bass", "drums"], steps=4, guidance=3.0)),
        (
            "turbo",
            "text2music",
            dict(duration=2.0, audio_codes="".join(f"<|audio_code_{c}|>" for c in (5, 900, 63999, 12, 7))),
        ),
    ]
    cases.append(("turbo", "extract", dict(src_latents=rng.standard_normal((30, 64)), duration=None, track="bass")))
    cases.append(
        (
            "turbo",
            "cover",
            dict(src_latents=rng.standard_normal((30, 64)), ref_latents=rng.standard_normal((750, 64)), duration=None),
        )
    )
    if real_reference:
        cases.append(("turbo", "text2music", dict(duration=2.0, ref_wave=wave)))
    for variant, task, kw in cases:
        kw = {**common, **kw}
        pipe = build_reference_pipeline(fixtures, variant)
        samples = (
            kw["src_wave"].shape[-1]
            if "src_wave" in kw
            else kw["src_latents"].shape[0] * 1920
            if "src_latents" in kw
            else None
        )
        t = expected_latent_length(
            pipe, duration=kw.get("duration"), src_samples=samples, audio_codes=kw.get("audio_codes")
        )
        noise = rng.standard_normal((2, t, 64)).astype(np.float32)
        start = time.time()
        got = run_reference_task(fixtures, variant, task, noise=noise, **kw)
        extra = ",".join(
            k
            for k in ("src_latents", "ref_latents", "ref_wave", "audio_codes", "cover_strength", "cover_switch")
            if k in kw
        )
        print(
            f"{variant:5} {task:10} {extra:27} -> {got.shape} {got.dtype} finite={np.isfinite(got).all()} "
            f"max|x|={np.abs(got).max():.3f} {time.time() - start:.1f}s",
            flush=True,
        )
        assert got.shape == noise.shape and got.dtype == np.float32 and np.isfinite(got).all()
        if kw.get("repaint_start") is not None:  # the region frames the pipeline conditions on
            import torch

            mask = pipe._build_chunk_mask(
                task_type=task,
                latent_length=t,
                batch_size=1,
                device="cpu",
                dtype=torch.float32,
                acoustic_dim=64,
                repainting_start=kw["repaint_start"],
                repainting_end=kw["repaint_end"],
                has_src_audio=True,
            )
            print("      chunk mask frames set:", np.flatnonzero(mask[0, :, 0].numpy()).tolist())


if __name__ == "__main__":
    import sys

    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # parity.py, helpers.py
    from parity import fixtures_dir

    _smoke(fixtures_dir(), real_reference="--fast" not in sys.argv)
