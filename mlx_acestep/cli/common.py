"""What every verb of the command line shares: one-line errors, progress bars on stderr."""

from __future__ import annotations

import contextlib
import functools

import click

from ..errors import AceStepError


def peak_rss_bytes() -> int:
    """This process's peak resident memory (what the OS counts: weights, buffers, the Python runtime)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


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


class PhaseBars:
    """One stderr progress bar per pipeline phase, driven by the pipeline's Progress callback."""

    LABELS = {
        "encode": "encoding source",
        "lm": "planner LM   ",
        "text": "text encoder",
        "condition": "conditioning ",
        "dit": "diffusion    ",
        "vae": "VAE decode   ",
    }

    def __init__(self):
        self.phase, self.bar, self.started = None, None, 0.0

    def __call__(self, progress) -> None:
        import time

        if progress.phase != self.phase:
            self.close()
            self.phase, self.started = progress.phase, time.perf_counter()
            label = self.LABELS.get(progress.phase, progress.phase)
            self.bar = click.progressbar(
                length=max(progress.total, 1),
                label=label,
                file=click.get_text_stream("stderr"),
                show_pos=progress.phase == "lm",
                item_show_func=lambda item: item,
            )
            self.bar.__enter__()
        self.bar.length = max(progress.total, 1)
        rate = None
        if progress.phase == "lm" and progress.done:  # the planner's units are tokens: say how fast they come
            rate = f"{progress.done / max(time.perf_counter() - self.started, 1e-9):.1f} tokens/s"
        self.bar.update(progress.done - self.bar.pos, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
