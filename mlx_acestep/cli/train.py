"""`mlx-acestep train`: a LoRA for the DiT from a folder of songs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import click

from ..training.config import TRAIN, TrainConfig
from .common import model_options, user_errors


def _option(name: str, type=None):
    """A TrainConfig setting's flag (`--grad-accum` for grad_accum): its default and help are the config's own."""
    field = TRAIN[name]
    return click.option(
        f"--{name.replace('_', '-')}",
        type=type,
        default=field.default,
        show_default=field.default not in (None, 0),
        help=field.help,
    )


@click.command()
@click.argument("dataset", type=click.Path(file_okay=False, path_type=str))
@click.option("-o", "--output", required=True, help="The adapter folder to write (a PEFT folder; must be new or ours).")
@_option("rank", type=int)
@_option("alpha", type=float)
@_option("dropout", type=float)
@click.option("--targets", default="self,cross", show_default=True, help="Attention to adapt: self, cross or both.")
@_option("steps", type=int)
@_option("epochs", type=int)
@_option("lr", type=float)
@_option("warmup", type=int)
@_option("batch", type=int)
@_option("grad_accum", type=int)
@_option("crop_seconds", type=float)
@_option("seed", type=int)
@_option("save_every", type=int)
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from its last checkpoint.")
@_option("preview_every", type=int)
@click.option(
    "--no-checkpointing",
    is_flag=True,
    help="Keep the decoder's activations: steps ~1.3x faster, ~1 GB more for the 2B at a 30 s crop.",
)
@user_errors  # outside model_options: a bad model flag is a one-line error too
# The planner LM plays no part in training (captions and lyrics are given), so train has no --lm / --lm-quantize.
@model_options(
    planner=False,
    dtype="The frozen base's dtype (auto: bfloat16 on a GPU, float32 on the CPU).",
    quantize="Quantize the frozen base (QLoRA): less memory, the adapter stays float32.",
    cache_dir="The model cache (also holds the preprocessed clips).",
)
def train(
    dataset,
    output,
    source,
    rank,
    alpha,
    dropout,
    targets,
    steps,
    epochs,
    lr,
    warmup,
    batch,
    grad_accum,
    crop_seconds,
    seed,
    save_every,
    resume,
    preview_every,
    no_checkpointing,
):
    """Train a LoRA adapter for the DiT on the songs in DATASET.

    DATASET is a folder of audio files, each with a caption: a sidecar `song.txt` (and `song.lyrics.txt`), or a
    `metadata.csv` / `metadata.jsonl` with columns file, caption, lyrics, bpm, key, time_signature, language.
    Clips are preprocessed once (VAE latents and the condition, cached); then only the decoder is in memory.
    OUTPUT gets a PEFT folder (`--lora OUTPUT` applies it), a model card, train_log.jsonl and checkpoint/.

    \b
    mlx-acestep train my-songs/ -o my-style --steps 1000
    mlx-acestep train my-songs/ -o my-style --resume --steps 2000
    mlx-acestep generate "my style, piano" --lora my-style -o test.wav
    mlx.launch --hostfile hosts.json --backend ring -- mlx-acestep train my-songs/ -o my-style   # across Macs: README
    """
    from ..training import train_lora

    kinds = tuple(t.strip() for t in targets.split(",") if t.strip())
    if "both" in kinds:
        kinds = ("self", "cross")
    config = TrainConfig(
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        targets=kinds,
        steps=steps,
        epochs=epochs,
        lr=lr,
        warmup=warmup,
        batch=batch,
        grad_accum=grad_accum,
        crop_seconds=crop_seconds,
        seed=seed,
        save_every=save_every,
        preview_every=preview_every,
        checkpointing=not no_checkpointing,
    )
    from ..training import TrainingStopped

    bars = _TrainBars()
    try:
        with _stop_on_first_interrupt(bars) as stop:
            out = train_lora(dataset, output, config, source=source, resume=resume, callback=bars, stop=stop)
    except TrainingStopped as e:
        bars.close()
        click.echo(str(e), err=True)
        sys.exit(130)  # what a shell reports for Ctrl-C
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began: at once
        from ..training.state import resume_hint

        bars.close()
        click.echo(f"interrupted; {resume_hint(Path(output).expanduser())}", err=True)
        sys.exit(130)
    finally:
        bars.close()
    from .. import distributed

    if distributed.is_leader():  # under mlx.launch the others wrote nothing
        click.echo(f"wrote {out} (a PEFT adapter: mlx-acestep generate ... --lora {out})")


@contextlib.contextmanager
def _stop_on_first_interrupt(bars: _TrainBars):
    """Once training has begun, the first Ctrl-C asks the run to stop after the step under way and save a
    checkpoint of it (the trainer's `stop`); a second one, or one while preprocessing, stops at once. Across ranks
    (mlx.launch) Ctrl-C stops at once: the ranks would not all see it at the same step."""
    from .. import distributed

    stop = threading.Event()
    if distributed.size() > 1 or threading.current_thread() is not threading.main_thread():
        yield None
        return

    def interrupted(signum, frame):
        if stop.is_set() or not bars.training:
            raise KeyboardInterrupt
        stop.set()
        # os.write, not click.echo: a handler that writes to a buffered stream the bar may be writing to can fail
        message = "\nstopping once the step under way is done and saved (Ctrl-C again stops now, without saving it)\n"
        os.write(sys.stderr.fileno(), message.encode())

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _TrainBars:
    """Stderr progress bars for the trainer's phases (preprocessing, training), and a line per save and preview."""

    def __init__(self):
        self.bar, self.phase, self.training = None, None, False

    def __call__(self, progress) -> None:
        if progress.phase == "setup":
            self.training = True
            click.echo(progress.extra["batch"], err=True)
            return
        if progress.phase != self.phase and progress.phase in ("preprocess", "train"):
            self.close()
            self.phase = progress.phase
            label = "preprocessing" if progress.phase == "preprocess" else "training     "
            self.bar = click.progressbar(
                length=progress.total,
                label=label,
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda item: item,
            )
            self.bar.__enter__()
        if self.bar is None or progress.phase not in ("preprocess", "train"):
            if progress.phase in ("save", "preview"):
                click.echo(f"\n{progress.phase} at step {progress.step}", err=True)
            return
        info = None
        if progress.phase == "train":
            rate = progress.step / max(progress.seconds, 1e-9)
            info = f"loss {progress.loss:.4f}  lr {progress.lr:.2e}  {rate:.2f} steps/s"
        self.bar.update(progress.step - self.bar.pos, info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
