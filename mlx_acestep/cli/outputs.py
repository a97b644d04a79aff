"""`generate`'s output names and seeds, settled before any work so nothing is found wrong after minutes of it.

`-o` may hold `{seed}`, `{index}`, `{caption}` (slugified) and `{date}`; without placeholders a batch gets
`name_0.wav`, `name_1.wav`, ... The default name is `acestep-{seed}`: each item named by its own seed, and never
one that exists (`-2`, `-3`, ... are appended). An explicit name that exists is an error unless --overwrite, and
an output is never one of the inputs. Each file's sidecar `NAME.json` is held to the same rules.
"""

from __future__ import annotations

import os
import re
import string
import time
from pathlib import Path

from ..errors import AceStepError
from ..names import AUDIO_FORMATS

PLACEHOLDERS = ("seed", "index", "caption", "date")
DEFAULT_TEMPLATE = "acestep-{seed}"
# File systems stop at 255 bytes; the hidden temp file a write goes through (`.NAME.<pid>-<random>.partial`) needs
# ~30 more.
MAX_NAME_BYTES = 220


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a caption: lower case, words joined by '-'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "song"


def parse_seeds(values) -> int | list[int] | None:
    """`--seed` as given: repeated and/or comma-separated (`--seed 1,2,3`), or one int from a replay."""
    items = values if isinstance(values, (list, tuple)) else [] if values is None else [values]
    seeds = []
    for value in items:
        for part in str(value).split(","):
            if part.strip():
                try:
                    seeds.append(int(part))
                except ValueError:
                    raise AceStepError(f"--seed {part.strip()!r} is not a whole number") from None
    return None if not seeds else seeds[0] if len(seeds) == 1 else seeds


def _fields(template: str) -> set[str]:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise AceStepError(
            f"-o {template}: {e} (placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
        ) from None
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise AceStepError(
            f"-o {template}: unknown placeholder {{{sorted(unknown)[0]}}} "
            f"(use {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
        )
    return names


def _is_folder(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except OSError:  # a name too long to look up: not a folder (the length check below names it)
        return False


def output_paths(
    output: str | None, fmt: str | None, seeds: list[int], caption: str, overwrite: bool, inputs: dict[str, str | None]
) -> list[Path]:
    """One checked path per item (see the module's docstring)."""
    from ..audio import check_output
    from ..pipeline.results import item_paths

    if output == "-":  # not a name: `-o -` wrote a file called `-.wav`
        raise AceStepError("-o -: audio is not written to standard output; give a file name (e.g. -o song.wav)")
    if output is not None and (
        Path(output).name in ("", ".", "..") or output.endswith(("/", os.sep)) or _is_folder(output)
    ):  # `-o .` wrote hidden `..wav` / `..json`
        raise AceStepError(f"-o {output}: a folder, not a file name (e.g. -o {Path(output) / 'song.wav'})")
    template = output or DEFAULT_TEMPLATE
    suffix = Path(template).suffix.lower().lstrip(".") if "{" not in Path(template).suffix else ""
    if not suffix:
        template, suffix = f"{template}.{fmt or 'wav'}", fmt or "wav"
    if suffix not in AUDIO_FORMATS:
        raise AceStepError(
            f"{template}: unsupported output format .{suffix} (use {', '.join('.' + f for f in AUDIO_FORMATS)})"
        )
    if fmt and fmt != suffix:
        raise AceStepError(f"--format {fmt} does not match the output file {template}")
    fields = _fields(template)
    date = time.strftime("%Y%m%d-%H%M%S")
    if fields:
        try:
            names = [
                Path(template.format(seed=s, index=i, caption=slug(caption), date=date)) for i, s in enumerate(seeds)
            ]
        except (ValueError, TypeError) as e:  # a format spec: {seed:q}
            raise AceStepError(f"-o {template}: {e}") from None
        if len(set(names)) < len(names):
            if output is None:  # the default names items by seed: the same seed twice
                raise AceStepError(
                    "--seed gives two items the same seed (the same song, the same name); give different seeds"
                )
            raise AceStepError(f"-o {template} gives several items the same name; add {{seed}} or {{index}}")
    else:
        names = item_paths(Path(template), len(seeds))
    longest = max(names, key=lambda p: len(os.fsencode(p.name)))
    if len(os.fsencode(longest.name)) > MAX_NAME_BYTES:
        raise AceStepError(
            f"-o: the file name {longest.name[:40]}... is {len(os.fsencode(longest.name))} bytes long "
            f"(at most {MAX_NAME_BYTES})"
        )
    parent = names[0].parent if str(names[0].parent) else Path(".")
    if not parent.is_dir():
        raise AceStepError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise AceStepError(f"{parent}: output folder is not writable")
    if output is None:  # the default never replaces anything: the first free -2, -3, ... for all items
        n, base = 1, names
        while any(p.exists() or p.with_suffix(".json").exists() for p in names):
            n += 1
            names = [p.with_name(f"{p.stem}-{n}{p.suffix}") for p in base]
        return names
    for item in names:
        sidecar = item.with_suffix(".json")
        for written in (item, sidecar):  # never an input, even with --overwrite
            for flag, given in inputs.items():
                if given not in (None, "-") and Path(given).exists() and written.resolve() == Path(given).resolve():
                    raise AceStepError(f"{written}: is the {flag} file; choose another output name")
        if sidecar.is_dir():
            raise AceStepError(
                f"{sidecar}: is a folder; {item.name}'s metadata goes there (choose another output name)"
            )
        if os.path.lexists(sidecar) and not overwrite:
            raise AceStepError(f"{sidecar}: already exists (pass --overwrite to replace it and {item.name})")
        check_output(item, overwrite)
    return names


def checked_paths(params: dict, request, inputs: tuple[str, ...]) -> list[Path]:
    """`output_paths` for generate's flags, checked in rank 0's folder under mlx.launch (it writes the files);
    every rank stops on its error."""
    from .. import distributed

    if params["stream"] and distributed.size() > 1:
        raise AceStepError("--stream writes as it renders, on one machine: run it without mlx.launch")
    named = {"--" + name.replace("_", "-"): params[name] for name in inputs}
    args = (params["output"], params["fmt"], request.seed, request.caption, params["overwrite"], named)
    return [Path(p) for p in distributed.on_leader(lambda: [str(p) for p in output_paths(*args)])]
