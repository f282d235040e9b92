"""Atomic file writes: every file gtr writes goes through here, so a reader never sees a half-written
file and a failed write leaves what was there before."""
from __future__ import annotations

import os
import secrets
from typing import BinaryIO, Callable


def _create_temp(folder: str, suffix: str) -> tuple[int, str]:
    # os.open with mode 0o666 lets the kernel apply the umask: the file gets the usual mode without
    # reading the umask (os.umask can only be read by changing it, process-wide, for all threads).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue  # a 64-bit name collision: draw another
        except OSError as e:
            e.filename = folder  # the temp name would only confuse: it is the folder that refused
            raise


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not possible everywhere (e.g. Windows), where it is skipped.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call write(binary file) on a temp file in path's folder, then rename it onto path.

    The temp file sits in the same folder so the rename never crosses filesystems; its data is
    fsynced before the rename, so after a crash path holds the old or the new content, never a
    truncated file. On any error the temp file is removed and errors about it name `path`. Parent
    folders are created.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = _create_temp(folder, os.path.splitext(path)[1])
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and tmp is not None and e.filename == tmp:
            e.filename = path  # the user asked for path; the temp name would only confuse
        raise
    _fsync_folder(folder)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
