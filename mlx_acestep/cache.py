"""The model cache, owned here: where it lives, how its entries are named and keyed, and listing and removing them.

PyTorch checkpoints are converted once, one component per entry, into `<cache>/converted/<source>-<component>-<key>/`,
where the key hashes what the component is made from (path, size, mtime of its files), the options that change it and
the layout version: a changed source or option converts again what it changes, an unchanged one reuses the entry, and
the DiT variants of a source share its VAE and text encoder. The converter writes atomically, so an entry exists only
whole, and marks it with `conversion.json`: only folders holding that marker are ever listed or removed.

The cache is `cache_dir`, else `$MLX_ACESTEP_CACHE`, else `~/.cache/mlx-acestep`. No heavy imports at module level:
`mlx-acestep cache` and `--help` read it without loading any model code.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AceStepError
from .files import remove_stale
from .names import CONVERSION_FILE

CACHE_ENV = "MLX_ACESTEP_CACHE"
# Beside the entries (`<cache>/.in-use/<entry>/<pid>`, so `converted/` holds only what the converter wrote), one file per
# process using an entry, each locked by that process while it lives: `cache rm` leaves an entry alone while any is
# locked (its files are read lazily for the whole run), and clears the stale ones.
USERS = ".in-use"
_held: dict[str, object] = {}  # entry path -> this process's open, locked file (released when the process ends)
# What the converter writes at the top of every output folder: how it, the hub and `cache rm` recognise their own.
_WHERE = "--cache-dir / $MLX_ACESTEP_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$MLX_ACESTEP_CACHE`, else `~/.cache/mlx-acestep`."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mlx-acestep").expanduser()


def open_cache(cache_dir: str | Path | None = None) -> Path:
    """The cache folder, checked to be one, with what killed earlier runs left half-written removed."""
    cache = cache_root(cache_dir)
    if cache.exists() and not cache.is_dir():
        raise AceStepError(f"{cache}: is a file, not a folder (the model cache, {_WHERE})")
    for folder in (cache, cache / "converted"):
        if folder.exists() and not folder.is_dir():
            raise AceStepError(f"{folder}: is a file, not a folder (inside the model cache, {_WHERE})")
        remove_stale(folder)  # `.NAME.<pid>-....partial` of processes that no longer run
    return cache


# -- names and keys -----------------------------------------------------------------------------


def is_snapshot(src: Path) -> bool:
    """Whether `src` is a Hugging Face cache snapshot (`models--<owner>--<name>/snapshots/<commit>`)."""
    return src.parent.name == "snapshots" and src.parent.parent.name.startswith("models--")


def source_label(src: Path) -> str:
    """The name cache entries of `src` start with: the repo's name for a Hugging Face snapshot
    (`models--ACE-Step--Ace-Step1.5/snapshots/<commit>` -> `Ace-Step1.5`), else the folder's."""
    return src.parent.parent.name.split("--")[-1] if is_snapshot(src) else src.name


def cache_key(src: Path, sources: list[Path], opts) -> str:
    """What a component is made from (its files: name, size, mtime) and the options that change it.

    A Hugging Face snapshot's files are links into the repo's content-addressed `blobs/`: they are keyed on the blob
    they point to and the repo, not on the snapshot's commit, so a new commit that leaves a component's files as they
    were (a README edit) keeps its entry.
    """
    from .loading import LAYOUT_VERSION

    snapshot = is_snapshot(src)
    files = []
    for source in sources:  # folders and single files
        for path in sorted(p for p in ([source] if source.is_file() else source.rglob("*")) if p.is_file()):
            stat = path.stat()
            blob = os.path.realpath(path) if snapshot and path.is_symlink() else None
            files.append((str(path.relative_to(src)), stat.st_size, stat.st_mtime_ns, blob))
    origin = src.parent.parent if snapshot else src
    blob = json.dumps(
        {
            "src": str(origin),
            "files": files,
            "layout": LAYOUT_VERSION,
            "dtype": opts.dtype,
            "quantize": opts.quantize,
            "group": opts.group_size,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_entry(
    src: Path, label: str, only, sources: list[Path], opts, cache: Path, reconvert: bool, log: Callable[[str], None]
) -> Path:
    """The entry converting `only` (None: all) of `src` with `opts`: reused when whole, else converted into place."""
    from .convert import convert_checkpoints

    opts.validate()
    entry = cache / "converted" / f"{label}-{cache_key(src, sources, opts)}"
    if entry.is_symlink():  # `list` and `rm` never follow links: nor does a run (before `is_dir`, which would)
        raise AceStepError(f"{entry}: a link, not a folder the converter wrote; remove the link to convert again")
    if reconvert and entry.is_dir():  # --reconvert replaces the entry: not while another run reads from it
        refuse_if_held(entry)
    if entry.is_dir() and not (entry / CONVERSION_FILE).is_file():
        with contextlib.suppress(OSError):  # empty: claimed by a run killed before it renamed its conversion in
            entry.rmdir()
        if entry.exists() and not reconvert:
            raise AceStepError(
                f"{entry}: a cache entry without its {CONVERSION_FILE} (damaged); pass --reconvert to "
                "convert it again, or delete the folder"
            )
    if (entry / CONVERSION_FILE).is_file() and not reconvert:
        hold(entry)
        log(f"using the converted {label if only is None else ', '.join(only)} in {entry}")
        marker = entry / CONVERSION_FILE
        if marker.is_file():
            os.utime(marker)  # "last used", for `mlx-acestep cache list`
        return entry
    log(f"converting {src if only is None else ', '.join(only)} into {entry} (once; later runs reuse it)")
    try:
        convert_checkpoints(src, entry, opts, log=log, only=only)
    except AceStepError:
        # Another process (or thread) converted the same entry meanwhile: entries are shared, and it is whole.
        if reconvert or not (entry / CONVERSION_FILE).is_file():
            raise
        log(f"{entry} was converted meanwhile by another run: using it")
    hold(entry)
    return entry


def hold(entry: Path) -> None:
    """Mark `entry` as used by this process until it ends (a lock the OS drops with the process, even a killed one)."""
    import fcntl

    if str(entry) in _held:
        return
    with contextlib.suppress(OSError):  # a read-only cache cannot be marked; nothing can remove from it either
        _users(entry).mkdir(parents=True, exist_ok=True)
        f = open(_users(entry) / str(os.getpid()), "w")  # noqa: SIM115 (held open while the process lives)
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held[str(entry)] = f


def _users(entry: Path) -> Path:
    return entry.parent.parent / USERS / entry.name


def holders(entry: Path) -> list[int]:
    """The processes using `entry` now (their files still locked); the files of ended ones are removed."""
    import fcntl

    users = []
    for marker in sorted(_users(entry).glob("*")) if _users(entry).is_dir() else []:
        if str(entry) in _held and marker.name == str(os.getpid()):
            continue  # this process: `cache rm` run from an app that generated
        try:
            with open(marker) as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            users.append(int(marker.name) if marker.name.isdigit() else -1)
            continue
        except OSError:
            continue
        with contextlib.suppress(OSError):
            marker.unlink()
    return users


# -- listing and removal ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One converted entry as `cache list` shows it."""

    path: Path
    source: str
    components: tuple[str, ...]
    dtype: str
    quantize: str
    size: int  # bytes
    last_used: datetime.datetime

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def older_layout(self) -> bool:
        """Before 0.3 an entry held a DiT with its own VAE and text encoder; such entries are no longer used."""
        return len(self.components) > 1


def entry_folders(cache: Path) -> list[Path]:
    """The converter's entries (real folders holding its marker; a link is never one)."""
    if cache.exists() and not cache.is_dir():
        raise AceStepError(f"{cache}: is a file, not a folder (the model cache, {_WHERE})")
    folder = cache / "converted"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.is_symlink() and p.is_dir() and (p / CONVERSION_FILE).is_file())


def _marker(entry: Path) -> dict:
    try:
        info = json.loads((entry / CONVERSION_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_entries(cache_dir: str | Path | None = None) -> list[Entry]:
    """Every converted entry of the cache, by name."""
    out = []
    for path in entry_folders(cache_root(cache_dir)):
        info = _marker(path)
        options = info.get("options") if isinstance(info.get("options"), dict) else {}
        components = info.get("components") if isinstance(info.get("components"), list) else []
        out.append(
            Entry(
                path=path,
                source=str(info.get("source", "?")),
                components=tuple(str(c) for c in components),
                dtype=str(options.get("dtype", "?")),
                quantize=str(options.get("quantize", "?")),
                size=folder_size(path),
                last_used=datetime.datetime.fromtimestamp((path / CONVERSION_FILE).stat().st_mtime),
            )
        )
    return out


def remove_entries(names, remove_all: bool = False, cache_dir: str | Path | None = None) -> Iterator[tuple[str, int]]:
    """Remove the named entries (or all): yields (name, bytes freed) as each goes. Every name is checked before
    anything is removed; only folders the converter wrote are ever touched."""
    root = cache_root(cache_dir)
    known = {e.name: e for e in entry_folders(root)}
    if remove_all == bool(names):
        raise AceStepError("give entry names (see `mlx-acestep cache list`) or --all, one of them")
    targets = list(known.values()) if remove_all else []
    for name in dict.fromkeys(names):  # a name given twice is removed once
        if name not in known:
            raise AceStepError(
                f"{name}: no such converted entry in {root / 'converted'} (see `mlx-acestep cache list`)"
            )
        targets.append(known[name])
    for entry in targets:  # all or nothing: an entry in use stops the removal before anything goes
        refuse_if_held(entry)
    return _removed(targets)  # checked above, now: a generator would check only when first iterated


def refuse_if_held(entry: Path) -> None:
    """An entry another live process generates from is neither removed nor replaced (its files load lazily)."""
    users = holders(entry)
    if users:
        who = ", ".join(f"process {u}" for u in users)
        raise AceStepError(f"{entry.name}: in use by {who}; remove it once that run ends")


def _removed(targets: list[Path]) -> Iterator[tuple[str, int]]:
    for entry in targets:
        size = folder_size(entry)
        try:
            _remove_entry(entry)
        except OSError as e:
            raise AceStepError(
                f"{entry}: could not be removed ({e.strerror or e}); what is left is still an entry "
                "(`cache list` shows it)"
            ) from None
        yield entry.name, size


def _remove_entry(entry: Path) -> None:
    """Everything but the marker first, the marker last: an entry that cannot be removed whole stays one, which
    `cache rm` can try again (and the hub treats as damaged, not as someone else's folder)."""
    for child in entry.iterdir():
        if child.name != CONVERSION_FILE:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (entry / CONVERSION_FILE).unlink()
    entry.rmdir()
    with contextlib.suppress(OSError):  # its users' folder, empty once `holders` cleared it
        _users(entry).rmdir()
