"""Inter-process locks: POSIX ``flock`` on a lock file that is deleted when the lock is released.

A plain ``flock`` on a file that stays behind leaves one empty ``.lock`` file per locked object
(every weights file, every cache case). Deleting it on release is safe with one check: a process
that waited on the old file may obtain the lock on a file that is no longer at ``path`` (it was
unlinked, and maybe a new one created), so after locking, the file at ``path`` must still be the
one locked; otherwise the process tries again on the new file. A killed holder's lock is released
by the kernel (its file stays behind, empty, and is reused by the next holder).

On systems without ``fcntl`` (Windows) the lock is a no-op; writes stay protected by atomic
renames (:mod:`voxssl.utils.atomic`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

if sys.platform != "win32":
    import fcntl


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock named by ``path`` for the ``with`` block.

    Yields True when the lock is held; with ``blocking=False``, yields False at once (without
    waiting) when another process holds it. The lock file's folder must exist.
    """
    if sys.platform == "win32":  # pragma: no cover
        yield True
        return
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file: lock the current one
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: waiters notice and retry
        os.close(fd)


__all__ = ["file_lock"]
