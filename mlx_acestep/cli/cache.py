"""`mlx-acestep cache`: where converted models are kept, what is there, and removing entries (the rules: cache.py)."""

from __future__ import annotations

import shlex

import click

from .common import user_errors


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
    from ..cache import cache_root

    click.echo(cache_root(cache_dir))


@cache.command("list")
@_cache_option
@user_errors
def cache_list(cache_dir):
    """Each converted entry: its source, component, dtype, quantization, size and when it was last used.

    Every component of a source is an entry of its own: all DiT variants of one source share its VAE entry (and,
    per dtype and quantization, its text encoder entry).
    """
    from ..cache import list_entries

    entries = list_entries(cache_dir)
    if not entries:
        click.echo("the cache holds no converted models")
        return
    click.echo("| entry | source | components | dtype | quantize | size | last used |")
    click.echo("|---|---|---|---|---|---|---|")
    for e in entries:
        click.echo(
            f"| {e.name} | {e.source} | {', '.join(e.components)} | {e.dtype} | {e.quantize} | "
            f"{e.size / 1e9:.2f} GB | {e.last_used:%Y-%m-%d %H:%M} |"
        )
    older = [e.name for e in entries if e.older_layout]
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
    from ..cache import remove_entries

    removed = 0
    for name, size in remove_entries(entries, remove_all, cache_dir):
        click.echo(f"removed {name} ({size / 1e9:.2f} GB)")
        removed += 1
    if remove_all and not removed:
        click.echo("the cache holds no converted models")
