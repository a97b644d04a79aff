"""The `mlx-acestep` command line: one sub-command per verb."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import click

from .. import __version__
from ..errors import AceStepError
from ..pipeline.tasks import TASKS


def user_errors(fn):
    """Turn AceStepError into a one-line `Error: ...` and exit code 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AceStepError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@contextlib.contextmanager
def progress_bar(label: str):
    """A stderr progress bar driven by the library's (done, total) callbacks."""
    with click.progressbar(length=1, label=label, file=click.get_text_stream("stderr")) as bar:

        def advance(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        yield advance


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-acestep")
def main():
    """ACE-Step 1.5 music generation in MLX."""


@main.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option(
    "--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
    help="Storage and compute dtype of the converted weights.",
)
@click.option(
    "--quantize", type=click.Choice(["none", "q8", "q4"]), default="none", show_default=True,
    help="Quantize the linear layers that allow it (convolutions, hence the VAE, stay in --dtype).",
)
@click.option("--q-group-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
              help="Quantization group size.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@user_errors
def convert(src, dst, dtype, quantize, q_group_size, force):
    """Convert the PyTorch checkpoints under SRC into MLX folders in DST.

    SRC is a checkpoint root in the original ACE-Step 1.5 layout (vae/,
    acestep-v15-*/, Qwen3-Embedding-0.6B/, acestep-5Hz-lm-*/), a diffusers
    pipeline folder (model_index.json, transformer/, condition_encoder/, ...;
    written out under the original folder names) or a single component folder. DST is written atomically and gets one folder per
    converted component. Components not supported yet are listed as skipped.
    """
    from ..convert import ConvertOptions, convert_checkpoints

    opts = ConvertOptions(dtype=dtype, quantize=quantize, group_size=int(q_group_size), force=force)
    report = convert_checkpoints(src, dst, opts, log=click.echo)
    click.echo(f"wrote {len(report.converted)} component(s) to {dst}" + (f", skipped {len(report.skipped)}" if report.skipped else ""))


@main.command()
@click.argument("audio_in", type=click.Path(path_type=str))
@click.argument("audio_out", type=click.Path(path_type=str))
@click.option("--vae", "vae_dir", required=True, type=click.Path(path_type=str),
              help="Converted VAE folder (DST/vae from `mlx-acestep convert`).")
@click.option("--chunk", default=256, show_default=True, help="Decode window in latent frames (25 per second).")
@click.option("--overlap", default=16, show_default=True, help="Frames of context on each side of a window.")
@click.option("--sample/--mean", default=False, show_default=True,
              help="Decode a draw from the latent distribution (as the reference pipeline does) or its mean.")
@click.option("--seed", default=0, show_default=True, help="Seed for --sample.")
@user_errors
def reconstruct(audio_in, audio_out, vae_dir, chunk, overlap, sample, seed):
    """Encode AUDIO_IN with the VAE and decode it back into AUDIO_OUT (.wav or .flac).

    A quick check of a converted VAE and of what its 25 Hz latents keep.
    Input of any format libsndfile reads is resampled to 48 kHz stereo.
    """
    import mlx.core as mx
    import numpy as np

    from ..audio import load_audio, peak_limit, save_audio
    from ..loading import load_component

    if chunk <= 0 or overlap < 0:
        raise AceStepError(f"--chunk must be positive and --overlap non-negative (got {chunk}, {overlap})")
    audio = load_audio(audio_in)
    vae = load_component(vae_dir, "vae")
    x = mx.array(audio)[None]
    with progress_bar("encoding") as advance:
        mean, std = vae.encode_moments_chunked(x, progress=advance)
    latents = vae.sample(mean, std, key=mx.random.key(seed)) if sample else mean
    parts = []
    with progress_bar("decoding") as advance:
        for done, total, piece in vae.iter_decode(latents, chunk=chunk, overlap=overlap):
            advance(done, total)
            parts.append(np.array(piece))
    wave = peak_limit(np.concatenate(parts, axis=0))
    save_audio(audio_out, wave)
    click.echo(f"wrote {audio_out}: {len(wave) / 48000:.2f} s, {latents.shape[1]} latent frames")


class PhaseBars:
    """One stderr progress bar per pipeline phase, driven by the pipeline's Progress callback."""

    LABELS = {"lm": "planner LM   ", "text": "text encoder", "condition": "conditioning ", "dit": "diffusion    ",
              "vae": "VAE decode   "}

    def __init__(self):
        self.phase, self.bar = None, None

    def __call__(self, progress) -> None:
        if progress.phase != self.phase:
            self.close()
            self.phase = progress.phase
            label = self.LABELS.get(progress.phase, progress.phase)
            self.bar = click.progressbar(length=max(progress.total, 1), label=label, file=click.get_text_stream("stderr"))
            self.bar.__enter__()
        self.bar.length = max(progress.total, 1)
        self.bar.update(progress.done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _check_task_audio(job, src_audio: str | None, ref_audio: str | None) -> None:
    """The task's audio files, checked before any model loads: present, decodable, 1 to 600 s long."""
    import soundfile as sf

    from ..pipeline.tasks import check_seconds

    if job.needs_source and src_audio is None:
        raise AceStepError(f"--task {job.name} needs --src-audio")
    if not job.needs_source and src_audio is not None:
        raise AceStepError("--src-audio is for the editing tasks; choose one with --task")
    for flag, path in (("--src-audio", src_audio), ("--ref-audio", ref_audio)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise AceStepError(f"{flag} {path}: file not found")
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AceStepError(f"{flag} {path}: cannot decode audio ({e})") from None
        check_seconds(info.duration, f"{flag} {path}")
        if flag == "--src-audio":
            frames = int(info.duration * 48000) // 1920
            job.region(frames, frames)


def _load_for_task(job, model, dit, **kwargs):
    """The pipeline; a base-only task on a model without the base DiT says which checkpoint it needs."""
    from ..pipeline import ACEStep
    from ..pipeline.tasks import BASE_ONLY

    try:
        return ACEStep.from_pretrained(model, dit=dit, **kwargs)
    except AceStepError as e:
        if job.name in BASE_ONLY and "no DiT" in str(e):
            raise AceStepError(f"the {job.name} task needs the base model (acestep-v15-base), which {model} lacks: {e}") from None
        raise


def describe_plan(meta: dict) -> str:
    """The planner's metadata on one line, caption last."""
    names = (("bpm", "bpm"), ("keyscale", "key"), ("timesignature", "time signature"), ("language", "language"),
             ("duration", "duration"))
    parts = [f"{label} {meta[k]}" for k, label in names if meta.get(k) not in (None, "")]
    if meta.get("caption"):
        parts.append(f"caption: {meta['caption']}")
    return "".join(c if c.isprintable() else "?" for c in ", ".join(parts))


def _output_paths(output: str | None, fmt: str | None, batch: int, seed_hint: str) -> tuple[Path, str]:
    """The output file (checked writable before any work) and its format."""
    import os

    path = Path(output) if output else Path(f"acestep-{seed_hint}.{fmt or 'wav'}")
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        path, suffix = path.with_suffix(f".{fmt or 'wav'}"), fmt or "wav"
    if suffix not in ("wav", "flac"):
        raise AceStepError(f"{path}: unsupported output format .{suffix} (use .wav or .flac)")
    if fmt and fmt != suffix:
        raise AceStepError(f"--format {fmt} does not match the output file {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AceStepError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise AceStepError(f"{parent}: output folder is not writable")
    if path.is_dir():
        raise AceStepError(f"{path}: is a folder; give a file name")
    return path, suffix


@main.command()
@click.argument("caption")
@click.option("--lyrics", default=None, help="Lyrics text ([verse], [chorus] ... tags; default [Instrumental]).")
@click.option("--lyrics-file", type=click.Path(dir_okay=False, path_type=str), default=None, help="Read the lyrics from a file.")
@click.option("--duration", type=float, default=None, help="Seconds of audio, 10 to 600 (default 30; editing tasks: the source's length).")
@click.option("--bpm", type=int, default=None, help="Tempo for the metadata block (default N/A).")
@click.option("--key", "keyscale", default=None, help='Key and scale, e.g. "C major" (default N/A).')
@click.option("--time-signature", default=None, help="Beats per bar, e.g. 4 (default N/A).")
@click.option("--language", default="unknown", show_default=True, help="Vocal language code (en, zh, ja, ...).")
@click.option("--seed", type=int, default=None, help="Random seed (item i of a batch uses seed + i); default random.")
@click.option("--batch", type=int, default=1, show_default=True, help="Songs to generate at once, 1 to 8.")
@click.option("--steps", type=int, default=None, help="Diffusion steps (base/SFT; turbo always runs 8). Default per model.")
@click.option("--shift", type=float, default=None, help="Timestep shift (default 3; turbo snaps to 1, 2 or 3).")
@click.option("--guidance", type=float, default=None, help="CFG scale for base/SFT (default 7; turbo has none).")
@click.option("--model", default="ACE-Step/Ace-Step1.5", show_default=True,
              help="Hugging Face repo id, a checkpoint folder (original or diffusers layout, or converted), or 'tiny'.")
@click.option("--dit", default=None, help="DiT folder inside the model, e.g. acestep-v15-base (default: turbo).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Compute dtype when converting a PyTorch checkpoint.")
@click.option("--quantize", type=click.Choice(["none", "q8", "q4"]), default="none", show_default=True,
              help="Quantize the DiT's and text encoder's linear layers when converting.")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac"]), default=None, help="Output format (default: from -o, else wav).")
@click.option("-o", "--output", default=None, help="Output file (default acestep-SEED.wav); a batch adds _0, _1, ...")
@click.option("--cache-dir", default=None, help="Where converted models are kept (default $MLX_ACESTEP_CACHE or ~/.cache/mlx-acestep).")
@click.option("--reconvert", is_flag=True, help="Convert the PyTorch checkpoint again even if a cached conversion exists.")
@click.option("--no-normalize", is_flag=True, help="Skip the -1 dBFS peak normalisation.")
@click.option("--thinking/--no-thinking", default=None,
              help="Run the 5 Hz planner LM first: it fills in the metadata you left out and writes the audio codes "
                   "the DiT renders. Default: on when the model has a planner.")
@click.option("--lm", type=click.Choice(["0.6B", "1.7B", "4B"]), default=None,
              help="Planner LM size (default 1.7B, or the one the model has).")
@click.option("--lm-quantize", type=click.Choice(["none", "q8", "q4"]), default="none", show_default=True,
              help="Quantize the planner's linear layers when converting (embedding and head stay 8-bit).")
@click.option("--lm-cfg-scale", type=float, default=2.0, show_default=True, help="The planner's CFG scale for the codes.")
@click.option("--lm-temperature", type=float, default=0.85, show_default=True, help="The planner's sampling temperature.")
@click.option("--lm-top-p", type=float, default=0.9, show_default=True, help="The planner's nucleus (top-p) sampling.")
@click.option("--task", type=click.Choice(TASKS), default="text2music", show_default=True,
              help="text2music, or an editing task on --src-audio: cover (re-style), repaint (regenerate a region), "
                   "extract / lego (pull out / add --track), complete (add --tracks). extract, lego, complete need the base DiT.")
@click.option("--src-audio", type=click.Path(dir_okay=False, path_type=str), default=None, help="The source recording of an editing task.")
@click.option("--ref-audio", type=click.Path(dir_okay=False, path_type=str), default=None, help="A recording whose timbre to borrow (any task).")
@click.option("--repaint-start", type=float, default=0.0, show_default=True, help="repaint/lego: region start in seconds.")
@click.option("--repaint-end", type=float, default=None, help="repaint/lego: region end in seconds (default: the end of the source).")
@click.option("--track", default=None, help="extract/lego: the track, e.g. vocals, drums, bass, guitar.")
@click.option("--tracks", default=None, help="complete: comma-separated tracks to add, e.g. drums,bass.")
@click.option("--cover-strength", type=float, default=1.0, show_default=True,
              help="cover: the share of steps conditioned on the source (below 1 the rest follow the caption alone).")
@user_errors
def generate(caption, lyrics, lyrics_file, duration, bpm, keyscale, time_signature, language, seed, batch, steps, shift,
             guidance, model, dit, dtype, quantize, fmt, output, cache_dir, reconvert, no_normalize, thinking, lm,
             lm_quantize, lm_cfg_scale, lm_temperature, lm_top_p, task, src_audio, ref_audio, repaint_start, repaint_end,
             track, tracks, cover_strength):
    """Generate music from CAPTION (a description: genre, mood, instruments).

    \b
    mlx-acestep generate "gentle piano, warm strings" --duration 30 -o piano.wav
    mlx-acestep generate "gentle piano" --lm 0.6B --lm-quantize q8 -o piano.wav   # a smaller, faster planner
    mlx-acestep generate "jazz trio" --task cover --src-audio song.wav -o jazz.wav
    mlx-acestep generate "choir" --task repaint --src-audio song.wav --repaint-start 20 --repaint-end 30 -o fix.wav
    mlx-acestep generate "gentle piano" --model tiny --duration 10 -o a.wav   # offline smoke test (noise)
    """
    import warnings

    from ..pipeline.acestep import MAX_BATCH, MAX_SECONDS, MIN_SECONDS
    from ..pipeline.tasks import BASE_ONLY, Task

    if lyrics is not None and lyrics_file is not None:
        raise AceStepError("give --lyrics or --lyrics-file, not both")
    if lyrics_file is not None:
        try:
            lyrics = Path(lyrics_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AceStepError(f"{lyrics_file}: cannot read the lyrics ({e.__class__.__name__}: {e})") from None
    job = Task(task, repaint_start, repaint_end, track, [t.strip() for t in tracks.split(",")] if tracks else None, cover_strength)
    _check_task_audio(job, src_audio, ref_audio)
    if duration is None and not job.needs_source:
        duration = 30.0
    if duration is not None and not MIN_SECONDS <= duration <= MAX_SECONDS:
        raise AceStepError(f"--duration must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds, got {duration:g}")
    if not 1 <= batch <= MAX_BATCH:
        raise AceStepError(f"--batch must be between 1 and {MAX_BATCH}, got {batch}")
    if job.needs_source and thinking:
        raise AceStepError(f"--thinking is for text2music; the {task} task follows its source audio")
    if job.needs_source:
        thinking = False
    if job.name in BASE_ONLY and dit is None:
        dit = "acestep-v15-base"
    if thinking is False and (lm is not None or lm_quantize != "none"):
        raise AceStepError("--lm and --lm-quantize choose the planner; they mean nothing with --no-thinking")
    if lm_temperature < 0 or not 0 < lm_top_p <= 1 or lm_cfg_scale <= 0:
        raise AceStepError("--lm-temperature must be >= 0, --lm-top-p in (0, 1] and --lm-cfg-scale > 0")
    path, _ = _output_paths(output, fmt, batch, str(seed) if seed is not None else "random")

    def show_warning(message, category, filename, lineno, file=None, line=None):
        click.echo(f"warning: {message}", err=True)

    bars = PhaseBars()
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        pipe = _load_for_task(
            job, model, dit=dit, dtype=dtype, quantize=None if quantize == "none" else quantize, cache_dir=cache_dir,
            lm=None if thinking is False else (lm or "auto"), lm_quantize=None if lm_quantize == "none" else lm_quantize,
            reconvert=reconvert, log=lambda m: click.echo(m, err=True), keep_loaded=False,
        )
        if model == "tiny":
            click.echo("note: --model tiny has random weights; it checks the pipeline end to end and produces noise", err=True)
        try:
            result = pipe.generate(
                caption, lyrics if lyrics is not None else "[Instrumental]", duration=duration, seed=seed, batch_size=batch,
                bpm=bpm, key=keyscale, time_signature=time_signature, language=language, steps=steps, shift=shift,
                guidance=guidance, normalize=not no_normalize, thinking=thinking, lm_cfg_scale=lm_cfg_scale,
                lm_temperature=lm_temperature, lm_top_p=lm_top_p, task=task, src_audio=src_audio, ref_audio=ref_audio,
                repaint_start=repaint_start, repaint_end=repaint_end, track=job.track, tracks=job.tracks,
                cover_strength=cover_strength, callback=bars,
            )
        finally:
            bars.close()
    if output is None and seed is None:
        path = path.with_name(f"acestep-{result.seeds[0]}{path.suffix}")
    written = result.save(path)
    for i, (p, s) in enumerate(zip(written, result.seeds)):
        click.echo(f"wrote {p} ({result.duration:g} s, 48 kHz stereo, seed {s})")
        if result.metadata:
            click.echo("  planner: " + describe_plan(result.metadata[i]))
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    click.echo(f"RTF {result.rtf:.2f}x real time ({phases}); peak memory {result.peak_memory_bytes / 2**30:.2f} GB")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def bench(args):
    """Real-time factor and peak memory per phase, MLX beside the PyTorch reference (`mlx-acestep bench --help`).

    The benchmark and its PyTorch reference runners live in the source checkout's `benchmarks/`
    (they are not part of the installed package): this runs `benchmarks/bench_pipeline.py`.
    """
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pipeline.py"
    if not script.is_file():
        raise AceStepError("the benchmarks live in the source checkout (git clone the project, pip install -e \".[bench]\", "
                           "then run `mlx-acestep bench` or `python benchmarks/bench_pipeline.py` there)")
    raise SystemExit(subprocess.call([sys.executable, str(script), *args], env=dict(os.environ)))


if __name__ == "__main__":
    main()
