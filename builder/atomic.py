"""Publish a finished directory so that its path holds, at every instant, the old or the new one.

On Linux the two directories are swapped in one `renameat2(RENAME_EXCHANGE)` call (man 2 rename,
https://man7.org/linux/man-pages/man2/rename.2.html); elsewhere, or on a filesystem without it, the old
directory is renamed to a known backup name first, which `recover_backup` puts back if a run was killed
between the two renames. Removal deletes a chosen file last, so a half-removed directory still says
whose it is.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _ctypes import CFuncPtr  # what ctypes calls _CFuncPtr (typeshed does not re-export that name)

AT_FDCWD = -100
RENAME_EXCHANGE = 2  # include/uapi/linux/fs.h
BACKUP_SUFFIX = ".tritonforge-old"
TEMP_MARK = ".tritonforge-tmp-"
LOCK_SUFFIX = ".tritonforge-lock"


class Busy(Exception):
    """Another process holds the lock of this target."""


def backup_path(out: Path) -> Path:
    """Where the fallback swap keeps the previous `out` between its two renames."""
    return out.with_name(f".{out.name}{BACKUP_SUFFIX}")


def temp_prefix(out: Path) -> str:
    """Name prefix of the temporary siblings that hold a new `out` while it is written."""
    return f".{out.name}{TEMP_MARK}"


def _renameat2() -> CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when this system or filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def remove_tree(path: Path, last: str | None = None) -> None:
    """Delete `path` bottom-up, its top-level file `last` only after everything else."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            if not (last and name == last and Path(root) == path):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    if last and os.path.lexists(path / last):
        os.unlink(path / last)
    os.rmdir(path)


def replace_dir(tmp: Path, out: Path, last: str | None = None) -> None:
    """Publish the finished directory `tmp` as `out`; an older `out` is deleted only afterwards."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if exchange(tmp, out):
        remove_tree(tmp, last)  # `tmp` now holds the old directory
        return
    backup = backup_path(out)
    if os.path.lexists(backup):  # never delete what may not be ours; the caller cleans its own leftovers
        raise FileExistsError(errno.EEXIST, "a previous backup is in the way; remove it", str(backup))
    os.rename(out, backup)
    os.rename(tmp, out)  # killed before this line: the next run's `recover_backup` restores `backup`
    remove_tree(backup, last)


def recover_backup(out: Path) -> bool:
    """Put back the previous `out` when a fallback swap was interrupted between its renames."""
    backup = backup_path(out)
    if os.path.lexists(out) or not backup.is_dir():
        return False
    os.rename(backup, out)
    return True


@contextmanager
def target_lock(out: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `out` (a sibling lock file), or raise `Busy` at once.

    The lock file is removed on release; a waiter that locked a file already removed retries on the
    new one (the inode check), so the removal never lets two holders in.
    """
    path = out.with_name(f".{out.name}{LOCK_SUFFIX}")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(str(path)) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)
