"""Text to music and the editing tasks: a `GenerationRequest` -> 48 kHz stereo audio (spec 5, 7, 8).

    pipe = ACEStep.from_pretrained("ACE-Step/Ace-Step1.5")
    result = pipe.generate("gentle piano, warm strings", lyrics="[verse] ...", duration=30, seed=7)
    result.save("song.wav")

Phases, each timed and with its peak memory recorded: `lm` (the planner, when
thinking), `encode` (source / reference audio of the editing tasks), `text`
(tokenizer and Qwen3 text encoder), `condition` (condition encoder and context
latents), `dit` (the sampler), `vae` (chunked decode), `post` (peak limiting,
repaint's splice, -1 dBFS normalisation). Weight loading is timed apart as
`load`. With `keep_loaded=False` each phase loads only the modules it runs and
frees them afterwards (`residency.py`), so peak memory is that of the largest
phase, not the sum.

The library never prints: progress goes to `callback`, notices to `warnings`.
All MLX work of a pipeline runs on its own thread (`worker.py`), so it may be
called from any thread; calls wait for each other, and `callback` runs on that
thread. Peak-memory figures are MLX's, process-wide (two pipelines running at
once see each other's memory).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..checkpoint import Checkpoint
from ..conditioning.inputs import ConditionInput, PromptTokens, tokenize_items
from ..conditioning.sources import read_audio, source_frames
from ..diffusion.sampler import BaseSettings, TurboSettings, steps_of
from ..engine import ConditionJob, Engine
from ..hub import ModelFolders
from ..limits import HOP, SAMPLE_RATE, SECONDS, VAE_OVERLAP, seconds_of
from ..names import DEFAULT_REPO
from ..source import ModelSource
from .adapters import PipelineAdapters
from .custom import check_codebook
from .fit import check_fit, folder_bytes, planned_run
from .memory import default_vae_window, device, run_limits
from .postprocess import postprocess
from .prepare import prepare
from .render import RenderJob, render
from .request import GenerationRequest, resolve_seeds, sampler_settings
from .residency import PhaseMeter, Residency
from .results import Generated, GenerationResult, ProgressCallback, reporter
from .slow import slow_run_warning
from .songwriter import audio_codes, check_writing, create_sample, format_sample, think, understand, write_first
from .spread import check_share, generate_spread, spreads
from .stream import GenerationStream, start_stream
from .worker import Worker

# "write" first when the planner writes the song (sample, format), "lm" when it plans, "encode" for editing tasks
PHASES = ("text", "condition", "dit", "vae", "post")


class ACEStep:
    """The pipeline over converted folders: request resolution, residency, the worker thread, results."""

    def __init__(
        self,
        folders: ModelFolders,
        *,
        keep_loaded: bool = True,
        vae_chunk: int | None = None,
        vae_overlap: int = VAE_OVERLAP,
        cache_limit_gb: float = 2.0,
        check_memory: bool = True,
        name: str | None = None,
    ):
        """`keep_loaded=False` loads each phase's modules when it starts and frees them after (lowest peak
        memory, for one-shot use); True keeps them loaded across calls (apps that generate repeatedly). `vae_chunk`:
        the VAE's window in latent frames (default: by the machine's memory on Metal, 256 elsewhere).
        `check_memory=False` runs even what the estimate says will not fit in the device's memory (fit.py)."""
        self.folders = folders
        self.keep_loaded = keep_loaded
        self.vae_chunk, self.vae_overlap = vae_chunk or default_vae_window(), vae_overlap
        self.cache_limit, self.check_memory = int(cache_limit_gb * 2**30), check_memory
        checkpoint = Checkpoint(folders, name)
        self.name, self.config, self.dtype, self.family = (
            checkpoint.name,
            checkpoint.config,
            checkpoint.dtype,
            checkpoint.family,
        )
        self.tokenizer, self.silence_latent = checkpoint.tokenizer, checkpoint.silence_latent
        self.quantize = checkpoint.quantize
        self.engine = Engine(self.silence_latent)  # tests may hand in another (a spy, a fake decoder)
        self.residency = Residency(folders, keep_loaded, int(np.prod(self.config.fsq_input_levels)))
        self._worker = Worker(f"mlx-acestep {self.name}")
        self.adapters = PipelineAdapters(self.config, self.residency, self._worker)  # LoRA / LoKr on the decoder
        weakref.finalize(self, self._worker.close, False)

    # The adapters' public API (README), on `self.adapters` (pipeline/adapters.py).
    def load_lora(self, path, scale: float = 1.0, name: str | None = None, fuse: bool = False):
        return self.adapters.load(path, scale, name, fuse)

    def set_lora_scale(self, name: str, scale: float) -> None:
        self.adapters.set_scale(name, scale)

    def unload_lora(self, name: str | None = None) -> None:
        self.adapters.unload(name)

    def loras(self) -> list[tuple[str, float]]:
        return self.adapters.loaded()

    # The planner as a songwriter and a listener (pipeline/songwriter.py): each returns a SongSheet.
    create_sample = create_sample
    format_sample = format_sample
    understand = understand
    audio_codes = audio_codes  # a recording's 5 Hz codes, without the planner
    think = think  # the planner's metadata for a caption and lyrics, without codes

    def close(self) -> None:
        """Free the modules and stop the pipeline's thread (a later call starts them again)."""
        self.unload()
        self._worker.close()

    def __enter__(self) -> ACEStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | ModelSource = DEFAULT_REPO,
        *,
        source: ModelSource | None = None,
        log: Callable[[str], None] | None = None,
        **kwargs,
    ) -> ACEStep:
        """Load the model a `ModelSource` names: a converted MLX folder, a PyTorch checkpoint root (original or
        diffusers layout, converted once into the cache), a Hugging Face repo id (downloaded, converted, cached) or
        "tiny". `from_pretrained(source=ModelSource("tiny", lm=None))`, or its fields as keywords:
        `from_pretrained("tiny", lm=None)` (`dit`, `dtype`, `quantize`, `q_group_size`, `lm`, `lm_quantize`,
        `cache_dir`, `reconvert`: see `ModelSource`). Other keyword arguments go to the constructor (`keep_loaded`,
        `vae_chunk`, ...).
        """
        options = {name: kwargs.pop(name) for name in ModelSource.options() if name in kwargs}
        if isinstance(model, ModelSource):
            source, model = (model if source is None else source), DEFAULT_REPO
        if source is None:
            source = ModelSource(model, **options)
        elif options or model != DEFAULT_REPO:
            raise TypeError(f"from_pretrained: give source= or the model's keywords, not both ({', '.join(options)})")
        from ..hub import resolve_source

        return cls(resolve_source(source, log), **kwargs)

    # -- what the model allows -----------------------------------------------------------------

    @property
    def max_seconds(self) -> int:
        """The longest song this checkpoint renders: 600 s, or less if its silence latent is shorter."""
        return int(min(SECONDS[1], seconds_of(self.silence_latent.shape[1])))

    def sampler_settings(
        self, steps: int | None = None, shift: float | None = None, guidance: float | None = None, method: str = "ode"
    ) -> TurboSettings | BaseSettings:
        """The model family's defaults with the given overrides; turbo warns about what it ignores."""
        return sampler_settings(self.family, steps, shift, guidance, method, stacklevel=3)

    def weight_bytes(self) -> int:
        """The bytes of every component's weights (what the pipeline holds once all are loaded)."""
        folders = self.folders
        return sum(folder_bytes(f) for f in (folders.text_encoder, folders.dit, folders.vae, folders.lm))

    @staticmethod
    def device_memory() -> int:
        """The bytes the device allows one run (Metal's recommended working set, elsewhere the machine's memory)."""
        return device().allowed

    def resident(self) -> list[str]:
        """The modules loaded right now (roles, or whole components with `keep_loaded`)."""
        return self.residency.resident()

    def unload(self) -> None:
        """Free every loaded module (they load again on the next call)."""
        self._worker.run(self.residency.clear)

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest | str | None = None,
        lyrics: str | None = None,
        /,
        *,
        callback: ProgressCallback | None = None,
        **fields,
    ) -> GenerationResult:
        """Generate from a `GenerationRequest`, or from its fields: `generate("gentle piano", "[verse] ...", duration=30)`.

        The fields and what they mean: `GenerationRequest`. In short: `seed` one int (item i uses
        seed + i), a list (one per item) or None (random); `steps`, `shift`, `guidance` default per model
        family (turbo runs 1 to 8 steps and ignores guidance, with a warning); `thinking` (default: when the model has a
        planner LM) runs the 5 Hz planner first, which writes the metadata left out (and the duration when
        `duration` is None) and the audio codes the DiT renders; `task` is text2music or an editing task
        (cover, repaint, extract, lego, complete) on `src_audio`; `ref_audio` lends its timbre. `sample="..."` lets
        the planner write the song from one sentence first, `format=True` lets it tidy the caption and lyrics first
        (`result.sheets` holds what it wrote, `result.request` the request as rendered).
        `callback(Progress)` is called as work advances; returning False cancels (raises `Cancelled`).
        """
        run = self._resolve(request, lyrics, fields)
        return self._worker.run(lambda: self._limited(lambda: self._generate(*run, callback)), run[0])

    def generate_stream(
        self,
        request: GenerationRequest | str | None = None,
        lyrics: str | None = None,
        /,
        *,
        callback: ProgressCallback | None = None,
        **fields,
    ) -> GenerationStream:
        """`generate`, the audio handed out window by window as the VAE decodes it (`pipeline/stream.py`):

            stream = pipe.generate_stream("gentle piano", duration=120, seed=7)
            stream.info.metadata                   # the sidecar's inputs, before the first window
            for item, start, audio in stream:      # raw VAE output, in order, each sample final
                play(audio)

        The chunks joined are `generate`'s waveform before post-processing, bit for bit; `audio.finish_blocks`
        applies the peak limiting and -1 dBFS normalisation once the song's peak is known."""
        run = self._resolve(request, lyrics, fields)
        self._worker.run(lambda: None, run[0])  # the caller's arrays computed here, as `generate` does
        return GenerationStream(
            self._worker, lambda stream: self._limited(lambda: self._generate(*run, callback, stream))
        )

    def _resolve(self, request, lyrics, fields):
        """The request and what depends on the model, resolved on the caller's thread so warnings point at its line."""
        if lyrics is not None:
            fields["lyrics"] = lyrics
        if isinstance(request, GenerationRequest):
            request = request.replace(**fields) if fields else request
        else:
            request = GenerationRequest(**({"caption": request} if request is not None else {}), **fields)
        self.check(request)
        thinking = request.thinking_for(self.folders.lm is not None)
        for notice in request.notices(thinking):
            warnings.warn(notice, stacklevel=3)
        duration = request.duration_for(thinking)
        settings = request.sampler_settings(self.family, stacklevel=4)
        frames = source_frames(request.src_audio, request.src_latents)
        call_adapters = self.adapters.read_call(request.loras)  # bad adapter files fail before any work
        run = planned_run(self, request, thinking, duration or (frames and seconds_of(frames)), settings)
        if self.check_memory:  # before anything loads: a run that cannot fit fails now, not minutes in
            check_fit(self, run)
        slow = slow_run_warning(self, run.seconds, steps_of(settings), run.batch * (1 + run.guided))
        if slow:
            warnings.warn(slow, stacklevel=3)
        return request, thinking, duration, settings, call_adapters

    def _limited(self, run):
        """`run()` under the memory policy for its whole length, the planner's phase included (memory.py)."""
        with run_limits(self.cache_limit):
            return run()

    def check(self, request: GenerationRequest) -> None:
        """What this model cannot run, refused before any work (`generate` calls it, a server at submission): a
        base-only task on another DiT, a song to write without the planner."""
        request.check_model(self.family, self.name)
        check_codebook(request, self.residency.codebook_size)
        check_writing(self, request)

    def _generate(self, request, thinking, duration, settings, call_adapters, callback, stream=None, lead=None):
        if lead is None and spreads(request, stream):  # under mlx.launch: each rank renders its share
            return generate_spread(self._generate, request, thinking, duration, settings, call_adapters, callback)
        seeds = resolve_seeds(request.seed, request.batch_size)
        meter = PhaseMeter()
        report = reporter(callback, self._worker.cancel)
        interrupted = functools.partial(reporter(None, self._worker.cancel), "lm", 0, 0)  # Ctrl-C between tokens
        request, sheets = write_first(self, request, seeds[0] if lead is None else lead, meter, report)
        duration = request.duration_for(thinking) if sheets else duration
        if lead is not None:
            check_share(thinking, duration)
        prepared = prepare(self, request, thinking, duration, settings, seeds, meter, report, interrupted, lead)
        frames = prepared.frames
        sink = None if stream is None else start_stream(stream, prepared, request, seeds, sheets)
        out = self._render(prepared.job, report, meter, call_adapters, sink)
        with meter.phase("post"):
            audio = (
                postprocess(
                    out.waveform,
                    frames * HOP,
                    request.job,
                    prepared.source_wave,
                    prepared.region,
                    request.normalize,
                )
                if sink is None
                else np.zeros((len(seeds), 0, 2), np.float32)  # it went out in the stream's chunks
            )
        return GenerationResult(
            audio=audio,
            sample_rate=SAMPLE_RATE,
            seeds=seeds,
            duration=seconds_of(frames),
            seconds=dict(meter.seconds),
            peak_memory=dict(meter.peak),
            latents=np.array(out.latents.astype(mx.float32)),
            metadata=[p.metadata for p in prepared.plans],
            codes=prepared.job.condition.codes,
            sheets=sheets,
            request=request,
        )

    def _render(self, job: RenderJob, report, meter: PhaseMeter, adapters=(), sink=None) -> Generated:
        return self._limited(lambda: render(self, job, report, meter, list(adapters), sink))

    def generate_from_tokens(
        self,
        tokens: PromptTokens,
        frames: int,
        noise: mx.array,
        settings: TurboSettings | BaseSettings | None = None,
        *,
        items: Sequence[ConditionInput] | None = None,
        codes: np.ndarray | None = None,
        sources: Sequence[tuple[mx.array, mx.array, bool]] | None = None,
        timbre_frames: int | None = None,
        seed: int = 0,
        callback: ProgressCallback | None = None,
        meter: PhaseMeter | None = None,
    ) -> Generated:
        """The pipeline after tokenization: text encoder -> condition -> sampler -> VAE (no post-processing).

        `noise` is the starting `[B, frames, 64]` latent noise. `items` carry reference latents (None:
        the silence latent's first `timbre_frames`, default the config's 750, as the reference).
        `codes` `[B, n]` are planner audio codes: their detokenized hints become the context (spec 5.3).
        `sources` are the editing tasks' (source latents `[frames, C]`, chunk mask `[frames]`, is_cover) per item.
        """
        items = items or [ConditionInput("-")] * tokens.text_ids.shape[0]
        condition = ConditionJob(items, frames, codes, sources, timbre_frames or self.config.timbre_fix_frame, seed)
        job = RenderJob(tokens, noise, settings or self.sampler_settings(), condition)
        report = reporter(callback, self._worker.cancel)
        return self._worker.run(lambda: self._render(job, report, meter or PhaseMeter()), noise, items, sources)

    def encode_condition(self, items: Sequence[ConditionInput], frames: int, seed: int = 0):
        """What the DiT is given for text2music `items` over `frames` latent frames: (encoder states `[B, L, E]`,
        context latents `[B, frames, 128]`), through the same phases as `generate`."""

        def run():
            tokens = tokenize_items(self.tokenizer, items)
            text = self.residency.run("text_encoder", lambda encoder: self.engine.encode_text(encoder, tokens))
            job = ConditionJob(items, frames, timbre_frames=self.config.timbre_fix_frame, seed=seed)
            return self.residency.run("condition", lambda dit: self.engine.condition(dit, text, job))

        return self._worker.run(run)

    def encode_audio(
        self, audio: str | Path | np.ndarray, seed: int = 0, meter=None, what: str = "source audio", progress=None
    ) -> mx.array:
        """A recording (a file at any rate, or a 48 kHz `[samples, channels]` array) -> VAE latents `[T, 64]`,
        a seeded draw from the posterior as the reference samples it (spec 5.10)."""
        wave = read_audio(audio, what)

        def encode(vae):
            return self.engine.encode_audio(vae, wave, seed, self.vae_chunk, self.vae_overlap, progress)

        return self._worker.run(lambda: self.residency.run("vae_encoder", encode, meter), wave)
