"""What every verb of the command line shares: one-line errors, progress bars on stderr."""

from __future__ import annotations

import contextlib
import functools

import click

from ..errors import AceStepError, FieldError


def peak_rss_bytes() -> int:
    """This process's peak resident memory (what the OS counts: weights, buffers, the Python runtime)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def flag_names(command: click.Command, renames: dict[str, str] | None = None) -> dict[str, str]:
    """{field name: the flag that sets it}, read from the command's own options: a field is named by the option
    whose parameter has its name (`time_signature` <- `--time-signature`), or by `renames` {field: parameter}
    where they differ (`batch_size` <- `batch`). An argument is named as its usage line shows it (CAPTION)."""

    def shown(param: click.Parameter) -> str:
        if isinstance(param, click.Option):
            return max(param.opts, key=lambda o: (o.startswith("--"), len(o)))
        return param.human_readable_name

    names = {p.name: shown(p) for p in command.params if p.name}
    for field, param in (renames or {}).items():
        if param in names:
            names[field] = names[param]
    return names


def user_errors(fn=None, /, **renames: str):
    """Turn AceStepError into a one-line `Error: ...` and exit code 1, without a traceback; a FieldError names
    the flag that set the field (`--duration must be ...`), through `flag_names(command, renames)`.

    `@user_errors`, or `@user_errors(batch_size="batch")` where a field's option has another parameter name."""
    if fn is None:
        return functools.partial(user_errors, **renames)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FieldError as e:
            ctx = click.get_current_context(silent=True)
            names = flag_names(ctx.command, renames) if ctx is not None else {}
            raise click.ClickException(e.render(names)) from None
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
