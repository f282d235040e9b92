"""Atomic file writes: every file gtr writes goes through here, so a reader never sees a half-written
file and a failed write leaves what was there before (and no folder it created). `check_writable`
finds an output that cannot be written before the work that would fill it."""
from __future__ import annotations

import errno
import os
import secrets
from typing import BinaryIO, Callable

from gtr.errors import PathError

TEMP_PREFIX = ".tmp-"  # .tmp-<pid>-<random><suffix>: the pid lets a later write remove a dead run's leftovers


def check_writable(path, folder: bool = False) -> None:
    """PathError (one line, naming the cause) unless `path` can be written as a file (or, with folder,
    used as a folder), leaving nothing behind: every ancestor that exists must be a folder, path itself,
    if it exists, of the right kind, the folders still missing must be creatable (they are made, a probe
    file is created in the innermost, and all are removed again: names too long, a read-only mount and
    /proc are found here, before the work), and permission bits are not trusted (root passes them)."""
    path = os.path.abspath(os.fspath(path))
    kind = "folder" if folder else "file"
    if os.path.lexists(path) and folder != os.path.isdir(path):
        raise PathError(f"{path}: is a {'folder' if os.path.isdir(path) else 'file'}, not a {kind}")
    if os.path.lexists(path) and not folder and not os.access(path, os.W_OK):
        raise PathError(f"{path}: not writable (permission denied)")
    target = path if folder else os.path.dirname(path)
    made = []
    try:
        made = _make_dirs(target)
        if not folder and len(os.fsencode(os.path.basename(path))) > os.pathconf(target, "PC_NAME_MAX"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
        fd, probe = _create_temp(target, ".probe")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = os.fsdecode(e.filename) if e.filename else target
        where = "" if where in (path, target) else f" in {where}"
        raise PathError(f"{path}: cannot write{where} ({e.strerror or e})") from None
    finally:
        _remove_dirs(made)


def _make_dirs(folder: str) -> list[str]:
    """os.makedirs that returns the folders it created, outermost first; if one cannot be made, those
    made so far are removed again before the error is raised."""
    missing, f = [], folder
    while not os.path.isdir(f):
        if os.path.lexists(f):
            raise PathError(f"{f}: is a file, not a folder (needed for {folder})")
        missing.append(f)
        f = os.path.dirname(f)
    made = []
    try:
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:  # made by another process meanwhile
                if not os.path.isdir(d):
                    raise
                continue
            made.append(d)
    except BaseException:
        _remove_dirs(made)
        raise
    return made


def _remove_dirs(made: list[str]) -> None:
    """Remove folders that _make_dirs created (innermost first) while they are empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            break


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str) -> None:
    """Remove temp files that a killed gtr process left in folder (their pid is no longer running)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


_OPEN_TEMPS: set[str] = set()  # atomic_write's temp files not yet renamed or removed


def remove_open_temps() -> None:
    """Remove this process's unfinished atomic_write temp files: for an exit that skips the unwinding
    (os._exit after an interrupt was lost), so it leaves no temp file either."""
    for tmp in list(_OPEN_TEMPS):
        try:
            os.remove(tmp)
        except OSError:
            pass
    _OPEN_TEMPS.clear()


def _create_temp(folder: str, suffix: str) -> tuple[int, str]:
    # os.open with mode 0o666 lets the kernel apply the umask: the file gets the usual mode without
    # reading the umask (os.umask can only be read by changing it, process-wide, for all threads).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{suffix}")
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
    tmp, made = None, []
    try:
        made = _make_dirs(folder)
        remove_stale_temps(folder)
        fd, tmp = _create_temp(folder, os.path.splitext(path)[1])
        _OPEN_TEMPS.add(tmp)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _OPEN_TEMPS.discard(tmp)
        tmp = None
    except BaseException as e:
        _OPEN_TEMPS.discard(tmp)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        _remove_dirs(made)  # the folders this write created, innermost first, if still empty
        if isinstance(e, OSError) and tmp is not None and e.filename == tmp:
            e.filename = path  # the user asked for path; the temp name would only confuse
        raise
    _fsync_folder(folder)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
