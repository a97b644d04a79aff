"""`mlx-acestep cache`: where converted models are kept, what is there, and removing entries."""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
from pathlib import Path

import click

from ..cachedir import CONVERSION_FILE as MARKER  # only folders holding it are ever removed
from ..errors import AceStepError
from .common import user_errors


def _entries(cache: Path) -> list[Path]:
    """The converter's entries (real folders holding its marker; a link is never one)."""
    if cache.exists() and not cache.is_dir():
        raise AceStepError(f"{cache}: is a file, not a folder (the model cache, --cache-dir / $MLX_ACESTEP_CACHE)")
    folder = cache / "converted"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.is_symlink() and p.is_dir() and (p / MARKER).is_file())


def _info(entry: Path) -> dict:
    try:
        info = json.loads((entry / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@click.group()
def cache():
    """The cache of converted models ($MLX_ACESTEP_CACHE or ~/.cache/mlx-acestep)."""


def _cache_option(fn):
    return click.option(
        "--cache-dir", default=None, help="The cache folder (default $MLX_ACESTEP_CACHE or ~/.cache/mlx-acestep)."
    )(fn)


@cache.command("dir")
@_cache_option
@user_errors
def cache_dir(cache_dir):
    """Print the cache folder."""
    from ..cachedir import cache_root

    click.echo(cache_root(cache_dir))


@cache.command("list")
@_cache_option
@user_errors
def cache_list(cache_dir):
    """Each converted entry: its source, component, dtype, quantization, size and when it was last used.

    Every component of a source is an entry of its own: all DiT variants of one source share its VAE entry (and,
    per dtype and quantization, its text encoder entry).
    """
    from ..cachedir import cache_root

    entries = _entries(cache_root(cache_dir))
    if not entries:
        click.echo("the cache holds no converted models")
        return
    older = []
    click.echo("| entry | source | components | dtype | quantize | size | last used |")
    click.echo("|---|---|---|---|---|---|---|")
    for entry in entries:
        info = _info(entry)
        options = info.get("options") if isinstance(info.get("options"), dict) else {}
        used = datetime.datetime.fromtimestamp((entry / MARKER).stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        components = [str(c) for c in info.get("components", [])] if isinstance(info.get("components"), list) else []
        if len(components) > 1:  # before 0.3 an entry held a DiT with its own VAE and text encoder
            older.append(entry.name)
        click.echo(
            f"| {entry.name} | {info.get('source', '?')} | {', '.join(components)} | "
            f"{options.get('dtype', '?')} | {options.get('quantize', '?')} | {_size(entry) / 1e9:.2f} GB | {used} |"
        )
    if older:
        click.echo(
            f"{len(older)} entr{'y is' if len(older) == 1 else 'ies are'} from an older cache layout (a DiT with a "
            f"VAE and text encoder of its own) and no longer used: mlx-acestep cache rm {shlex.join(older)}"
        )


@cache.command("rm")
@click.argument("entries", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every converted entry.")
@_cache_option
@user_errors
def cache_rm(entries, remove_all, cache_dir):
    """Remove converted ENTRIES (names from `cache list`), or --all. Only folders the converter wrote are removed."""
    from ..cachedir import cache_root

    root = cache_root(cache_dir)
    known = {e.name: e for e in _entries(root)}
    if remove_all == bool(entries):
        raise AceStepError("give entry names (see `mlx-acestep cache list`) or --all, one of them")
    targets = list(known.values()) if remove_all else []
    for name in dict.fromkeys(entries):  # a name given twice is removed once
        if name not in known:
            raise AceStepError(
                f"{name}: no such converted entry in {root / 'converted'} (see `mlx-acestep cache list`)"
            )
        targets.append(known[name])
    if remove_all and not targets:
        click.echo("the cache holds no converted models")
    for entry in targets:
        size = _size(entry)
        try:
            _remove_entry(entry)
        except OSError as e:
            raise AceStepError(
                f"{entry}: could not be removed ({e.strerror or e}); what is left is still an entry "
                "(`cache list` shows it)"
            ) from None
        click.echo(f"removed {entry.name} ({size / 1e9:.2f} GB)")


def _remove_entry(entry: Path) -> None:
    """Everything but the marker first, the marker last: an entry that cannot be removed whole stays one, which
    `cache rm` can try again (and the hub treats as damaged, not as someone else's folder)."""
    for child in entry.iterdir():
        if child.name != MARKER:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (entry / MARKER).unlink()
    entry.rmdir()
