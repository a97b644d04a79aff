"""The whole text2music run, phase by phase, MLX beside the PyTorch reference (also `mlx-acestep bench`).

    python benchmarks/bench_pipeline.py --random-weights --durations 30,120          # real size, random weights
    python benchmarks/bench_pipeline.py --random-weights --precisions float32,q8,q4
    python benchmarks/bench_pipeline.py --tiny --durations 10                        # checks that it runs

What is measured and how: `benchmarks/pipeline_runs.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.pipeline_runs import markdown, plot, run_benchmark  # noqa: E402
from mlx_acestep.errors import AceStepError  # noqa: E402
from mlx_acestep.hub import resolve_model  # noqa: E402

# Measured on a 2-core x86 CPU (benchmarks/RESULTS.md): the real-size pipeline costs ~12.5 s of compute per second
# of audio in float32; bf16 / q8 / q4 have no CPU fast path (~40x slower). On Metal there is no estimate.
CPU_SECONDS_PER_AUDIO_SECOND = {"float32": 12.5, "bfloat16": 500.0, "float16": 500.0, "q8": 500.0, "q4": 500.0}
LONG_RUN_SECONDS = 15 * 60


def cpu_estimate_seconds(seconds: list[float], precisions: list[str], tiny: bool, reference) -> float:
    """Roughly how long a run takes on a CPU (0 for --tiny and on Metal)."""
    import mlx.core as mx

    if tiny or mx.metal.is_available():
        return 0.0
    sides = 1 if reference is False else 2  # the PyTorch reference side costs about the same in float32
    return sum(CPU_SECONDS_PER_AUDIO_SECOND.get(p, 500.0) * d for d in seconds for p in precisions) * sides


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--durations", default="10,30,60,120,240", show_default=True, help="Comma list of song lengths in seconds."
)
@click.option("--precisions", default="float32", show_default=True, help="Comma list of float32, bfloat16, q8, q4.")
@click.option(
    "--random-weights", is_flag=True, help="Build the real-size model with random weights (no download; cached)."
)
@click.option("--tiny", is_flag=True, help="A tiny random model instead (checks that the benchmark runs).")
@click.option(
    "--model", default=None, help="A converted or convertible model (folder, repo id) instead of random weights."
)
@click.option(
    "--reference/--no-reference",
    default=None,
    help="Run the PyTorch reference too (default: when torch and diffusers are installed).",
)
@click.option("--cache-dir", default=None, help="Where converted and random-weight models are kept.")
@click.option(
    "-o",
    "--output",
    default="bench",
    show_default=True,
    help="Output prefix: writes PREFIX.md, PREFIX.json and PREFIX.png.",
)
@click.option("--yes", is_flag=True, help="Run even when the estimate is long (over 15 minutes).")
@click.option("--clean", is_flag=True, help="Remove the random-weight models this benchmark built, and stop.")
def main(durations, precisions, random_weights, tiny, model, reference, cache_dir, output, yes, clean):
    """Real-time factor and peak memory per phase (text, condition, DiT, VAE), MLX beside the PyTorch reference.

    Each run is a fresh process. On Linux the MLX side preloads OpenBLAS when it is installed (MLX's
    wheel bundles a much slower reference BLAS); the table says which BLAS each side used.
    """
    if clean:
        import shutil

        from mlx_acestep.cache import cache_root

        folder = cache_root(cache_dir) / "random-weights"  # only this benchmark writes there
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        click.echo(f"removed {folder} ({size / 1e9:.1f} GB)" if size else f"nothing to remove in {folder}")
        return
    if not (random_weights or tiny or model):
        raise click.ClickException("choose --random-weights, --tiny or --model")
    try:
        seconds = [float(d) for d in durations.split(",")]
    except ValueError:
        raise click.ClickException(f"--durations: expected numbers separated by commas, got {durations!r}") from None
    if any(not 10 <= d <= 600 for d in seconds):
        raise click.ClickException("--durations must lie between 10 and 600 seconds")
    estimate = cpu_estimate_seconds(seconds, precisions.split(","), tiny, reference)
    if estimate > LONG_RUN_SECONDS and not yes:
        raise click.ClickException(
            f"this would take about {estimate / 3600:.1f} h on this machine's CPU ({len(seconds)} durations x "
            f"{len(precisions.split(','))} precisions{' x 2 sides' if reference is not False else ''}); pass --yes to run "
            "it, or fewer / shorter --durations (e.g. --durations 10,30)"
        )
    target = None
    if model:  # converted once here, so the children only load its folders
        folders = resolve_model(model, cache_dir=cache_dir, lm=None, log=lambda m: click.echo(m, err=True))
        target = json.dumps({k: str(v) for k, v in vars(folders).items() if v is not None})
    try:
        rows = run_benchmark(
            seconds,
            precisions.split(","),
            model=target,
            tiny=tiny,
            reference=reference,
            cache_dir=cache_dir,
            log=lambda m: click.echo(m, err=True),
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    table = markdown(rows)
    click.echo(table)
    prefix = Path(output)
    prefix.with_suffix(".md").write_text(table + "\n")
    prefix.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    if plot(rows, prefix.with_suffix(".png")):
        click.echo(f"wrote {prefix.with_suffix('.md')}, .json and .png", err=True)
    else:
        click.echo(f"wrote {prefix.with_suffix('.md')} and .json (no plot: pip install matplotlib)", err=True)


if __name__ == "__main__":
    try:
        main()
    except AceStepError as e:
        raise SystemExit(f"Error: {e}") from None
