"""What every verb of the command line shares: one-line errors, progress bars on stderr."""

from __future__ import annotations

import contextlib
import functools
import sys

import click

from ..errors import AceStepError, FieldError
from ..limits import DTYPE_CHOICES, QUANTIZE_CHOICES, TEXT_FILE_BYTES
from ..names import DEFAULT_REPO, LM_SIZES

# The model flags every verb that loads a model shares, as (param name, flag(s), click settings); one set of names
# and defaults, so `generate`, `train` and `serve` take the same model the same way.
MODEL_FLAGS = (
    (
        "model",
        ("-m", "--model"),
        dict(
            default=DEFAULT_REPO,
            show_default=True,
            help="Hugging Face repo id, a checkpoint folder (original or diffusers layout, or converted), or 'tiny'.",
        ),
    ),
    (
        "dit",
        ("--dit",),
        dict(default=None, help="DiT: turbo, base, sft, or a folder inside the model (default: turbo)."),
    ),
    (
        "dtype",
        ("--dtype",),
        dict(
            type=click.Choice(DTYPE_CHOICES),
            default="auto",
            show_default=True,
            help="Compute dtype when converting a PyTorch checkpoint (auto: bfloat16 on a GPU, float32 on the CPU).",
        ),
    ),
    (
        "quantize",
        ("--quantize",),
        dict(
            type=click.Choice(QUANTIZE_CHOICES),
            default="none",
            show_default=True,
            help="Quantize the DiT's and text encoder's linear layers when converting.",
        ),
    ),
    (
        "lm",
        ("--lm",),
        dict(
            type=click.Choice(LM_SIZES),
            default=None,
            help="Planner LM size (default 1.7B, or the one the model has).",
        ),
    ),
    (
        "lm_quantize",
        ("--lm-quantize",),
        dict(
            type=click.Choice(QUANTIZE_CHOICES),
            default="none",
            show_default=True,
            help="Quantize the planner's linear layers when converting (embedding and head stay 8-bit).",
        ),
    ),
    (
        "cache_dir",
        ("--cache-dir",),
        dict(
            default=None, help="Where converted models are kept (default $MLX_ACESTEP_CACHE or ~/.cache/mlx-acestep)."
        ),
    ),
    (
        "reconvert",
        ("--reconvert",),
        dict(is_flag=True, help="Convert the PyTorch checkpoint again even if a cached conversion exists."),
    ),
)
PLANNER_FLAGS = ("lm", "lm_quantize")


def model_options(planner: bool = True, build: bool = True, **helps: str):
    """Add the model flags to a verb (`helps`: {param: help} where a verb says it its own way). `planner=False`
    leaves out the planner's flags. With `build`, the command receives them as one `source: ModelSource`
    (`model_source`); without, as its own parameters (`generate`: --from-metadata may fill them in first)."""

    def decorate(fn):
        wrapped = fn
        if build:

            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                values = {name: kwargs.pop(name) for name, _, _ in MODEL_FLAGS if name in kwargs}
                return fn(*args, source=model_source(values, planner), **kwargs)

        for name, flags, settings in reversed(MODEL_FLAGS):
            if planner or name not in PLANNER_FLAGS:
                wrapped = click.option(
                    *flags, name, **{**settings, **({"help": helps[name]} if name in helps else {})}
                )(wrapped)
        return wrapped

    return decorate


def model_source(values: dict, planner: bool = True):
    """The `ModelSource` of the model flags' values: "none" is no quantization, no --lm the model's own planner
    (or none at all where the verb has no planner)."""
    from ..source import ModelSource

    return ModelSource(
        model=values.get("model", DEFAULT_REPO),
        dit=values.get("dit"),
        dtype=values.get("dtype", "auto"),
        quantize=values.get("quantize"),
        lm=(values.get("lm") or "auto") if planner else None,
        lm_quantize=values.get("lm_quantize"),
        cache_dir=values.get("cache_dir"),
        reconvert=bool(values.get("reconvert")),
    )


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
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        yield advance


class PhaseBars:
    """One stderr progress bar per pipeline phase, driven by the pipeline's Progress callback."""

    LABELS = {
        "encode": "encoding source",
        "write": "planner writes",
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
                file=sys.stderr,
                show_pos=progress.phase in ("lm", "write"),
                item_show_func=lambda item: item,
            )
            self.bar.__enter__()
        self.bar.length = max(progress.total, 1)
        rate = None
        if progress.phase in ("lm", "write") and progress.done:  # the planner's units are tokens: say how fast
            rate = f"{progress.done / max(time.perf_counter() - self.started, 1e-9):.1f} tokens/s"
        self.bar.update(progress.done - self.bar.pos, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def read_text_arg(path: str, what: str) -> str:
    """A caption or lyrics file (or `-`, stdin) as text, read up to what the models can use."""
    import codecs

    try:
        if path == "-":
            head = sys.stdin.buffer.read(TEXT_FILE_BYTES)
        else:
            with open(path, "rb") as f:
                head = f.read(TEXT_FILE_BYTES)
        # not final: a character cut in two at the limit is held back, any other bad byte is still an error
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < TEXT_FILE_BYTES)
    except (OSError, UnicodeDecodeError) as e:
        raise AceStepError(f"{path}: cannot read {what} ({e.__class__.__name__}: {e})") from None
