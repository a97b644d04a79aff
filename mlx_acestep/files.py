"""Writing files and folders so that a reader never sees half of one, and a failed run leaves nothing behind.

Every write goes to a hidden sibling first (`.NAME.<pid>-<random>.part` for files,
`.partial` for folders, in the same folder so the final rename is atomic) and is
renamed into place only once complete. New files get the permissions any
ordinary write would give them (the umask's), not the private mode of a temp file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hidden_sibling(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yields a temporary path beside `path`; when the block succeeds it replaces `path`, else it is removed."""
    path = Path(path)
    tmp = _hidden_sibling(path, ".part")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def staging_dir(dst: str | Path) -> Path:
    """A new empty hidden folder beside `dst`, to build `dst` in (then `publish_dir`)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = _hidden_sibling(dst, ".partial")
    staging.mkdir()  # not mkdtemp: that would make the result private
    return staging


def publish_dir(staging: Path, dst: Path, replace: bool = False) -> None:
    """Rename the finished `staging` folder to `dst`. With `replace` an existing `dst` is swapped out and deleted
    only once the new folder is in place; without it an existing `dst` is an error (OSError)."""
    if not dst.exists():
        os.rename(staging, dst)  # fails on a non-empty folder that appeared meanwhile
        return
    if not replace:
        raise FileExistsError(f"{dst} exists")
    old = _hidden_sibling(dst, ".old")
    os.rename(dst, old)
    try:
        os.rename(staging, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building_dir(dst: str | Path, replace: bool = False):
    """Yields a staging folder; when the block succeeds it becomes `dst`, else it is removed."""
    staging = staging_dir(dst)
    try:
        yield staging
        publish_dir(staging, Path(dst), replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
