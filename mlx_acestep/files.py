"""Writing files and folders so that a reader never sees half of one, a failed run leaves nothing behind, and
nothing that was there is replaced unless the caller asks.

Every write goes to a hidden sibling first (`.NAME.<pid>-<random>.part` for files,
`.partial` for folders, in the same folder so the final rename is atomic) and is
renamed into place only once complete. Without `overwrite` the final step cannot
replace a file or folder that appeared meanwhile (a hard link, or an exclusive
mkdir, claims the name). New files get the permissions any ordinary write would
give them (the umask's), not the private mode of a temp file. A process killed
mid-write leaves its hidden sibling behind; `remove_stale` deletes those whose
process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?:part|partial|old)$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hidden_sibling(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _commit_file(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
    except OSError:  # a file system without hard links (FAT, some network shares)
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = True):
    """Yields a temporary path beside `path`; when the block succeeds it becomes `path`, else it is removed.

    Without `overwrite` an existing `path` raises FileExistsError and stays as it was."""
    path = Path(path)
    tmp = _hidden_sibling(path, ".part")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        _commit_file(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_file(path: str | Path):
    """A hidden sibling of `path` to work in, removed when the block ends however it ends (`remove_stale` finds
    one a killed process left)."""
    tmp = _hidden_sibling(Path(path), ".part")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    with atomic_file(path, overwrite) as tmp:
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
    """Rename the finished `staging` folder to `dst`.

    Without `replace` an existing `dst` (even one that appeared while `staging` was built) raises
    FileExistsError: the name is claimed with an exclusive mkdir, then the rename takes the claimed
    empty folder's place. With `replace` an existing `dst` is swapped out and deleted only once the
    new folder is in place (the caller checks that `dst` may be replaced).
    """
    if replace and dst.exists():
        old = _hidden_sibling(dst, ".old")
        os.rename(dst, old)
        try:
            os.rename(staging, dst)
        except BaseException:
            os.rename(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.mkdir(dst)  # FileExistsError if anything is there
    try:
        os.rename(staging, dst)  # replaces the empty folder just made
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(dst)
        raise


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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale(folder: str | Path) -> list[Path]:
    """Delete the hidden staging files and folders in `folder` whose writing process no longer runs."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _STAGING.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
    return removed


def out_of_space(folder: str | Path, error: BaseException | None = None) -> bool:
    """Whether a failed write was the disk filling: ENOSPC, or (libsndfile and MLX say only "System error" or the
    like) less than a MiB left where it wrote."""
    import errno
    import shutil

    if getattr(error, "errno", None) == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False
