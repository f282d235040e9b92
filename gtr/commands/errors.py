"""One error policy for every command: expected failures as one line, bugs reported as bugs.

Expected failures are the project's own errors (gtr.errors.GtrError: bad input, a missing or damaged
file, a missing install) and OS errors about a path the user gave: one line on stderr, exit status 1.
Anything else is a bug in gtr: one line that says so and names the file
holding the full traceback (exit status 70), or, with --debug or GTR_DEBUG=1, the traceback itself.

Exit statuses, the same for every command:
    0    done
    1    an expected failure (GtrError, an OS error on a path the user gave)
    2    a bad option or argument (click's usage errors; found before any work starts)
    70   a bug in gtr (EX_SOFTWARE)
    130  interrupted (Ctrl-C); 143 terminated (SIGTERM): temp files are removed on the way out. A command
         still running INTERRUPT_GRACE_S after the signal (its exception was lost, e.g. raised inside a
         finalizer, where Python only prints it), or given a second one, exits at once with that status
         and removes its unfinished atomic-write temp files first (gtr.runtime.files.remove_open_temps)
    141  the reader of the output went away (`gtr-inspect B | head -1`): the command stops quietly
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from gtr.errors import GtrError, first_line

DEBUG_ENV = "GTR_DEBUG"
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): tells scripts "bug", not "bad input"

INTERRUPTED_EXIT, TERMINATED_EXIT, CLOSED_PIPE_EXIT = 130, 143, 141  # 128 + SIGINT, SIGTERM, SIGPIPE


class InternalError(click.ClickException):
    exit_code = INTERNAL_ERROR_EXIT


class Interrupted(click.ClickException):
    exit_code = INTERRUPTED_EXIT


INTERRUPT_GRACE_S = 20.0


def _unwind(exc: BaseException, code: int):
    # Ctrl-C and SIGTERM unwind the main thread (so finally blocks remove temp files), with a deadline:
    # Python drops an exception raised inside a finalizer, and a lost signal must not leave the command
    # running. A second signal, or the deadline, exits at once.
    import threading
    if _unwind.pending:
        _exit_now(code)
    _unwind.pending = True
    threading.Thread(target=_exit_now, args=(code, INTERRUPT_GRACE_S), daemon=True).start()
    raise exc


_unwind.pending = False


def _exit_now(code: int, delay: float = 0.0) -> None:
    time.sleep(delay)
    try:
        from gtr.runtime.files import remove_open_temps
        remove_open_temps()
        if code == INTERRUPTED_EXIT:
            sys.stderr.write("Error: interrupted\n")
            sys.stderr.flush()
    finally:
        os._exit(code)


def _interrupt(signum, frame):
    _unwind(KeyboardInterrupt(), INTERRUPTED_EXIT)  # Python's default, with the deadline


def _terminate(signum, frame):
    # SIGTERM (a scheduler's preemption, `kill`) unwinds like Ctrl-C
    _unwind(SystemExit(TERMINATED_EXIT), TERMINATED_EXIT)


def _closed_pipe() -> None:
    # The reader of our output is gone (`| head -1`): stop quietly. stdout is pointed at /dev/null so the
    # interpreter's final flush does not fail again on the closed pipe.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(CLOSED_PIPE_EXIT)


def _user_os_error(e: BaseException, args: dict) -> bool:
    """An OSError about a path argument of the command (or a folder above or inside one), or a full disk."""
    import errno
    if not isinstance(e, OSError):
        return False
    names = [n for n in (e.filename, e.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    if not names:
        return e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    ctx = click.get_current_context(silent=True)
    path_params = {p.name for p in (ctx.command.params if ctx else []) if isinstance(p.type, click.Path)}
    given = [Path(os.path.abspath(v)) for key, value in args.items() if key in path_params
             for v in (value if isinstance(value, (list, tuple)) else (value,)) if isinstance(v, (str, os.PathLike))]
    for name in names:
        p = Path(os.path.abspath(os.fsdecode(name)))
        if any(p == g or g in p.parents or p in g.parents for g in given):
            return True
    return False


def _save_traceback(command: str) -> Path | None:
    """Write the traceback being handled to a new file in the temp folder; None if that fails too."""
    import platform
    import tempfile
    import traceback

    from gtr._version import __version__
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"gtr-{command}-{stamp}-{os.getpid()}.log"
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(f"gtr {__version__}, python {platform.python_version()}\n"
                    f"command: {' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return path


def _set_debug(ctx, param, value):
    if value:
        ctx.meta["gtr.debug"] = True


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("gtr.debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def debug_option(fn):
    """The --debug flag (same as GTR_DEBUG=1): errors then show their traceback. Every command has it; on
    a group (`gtr --debug run ...`) it holds for the command under it."""
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                        help="On an error, show the full Python traceback (also: GTR_DEBUG=1).")(fn)


def _flag_names(message: str) -> str:
    """The message with the command's Python option names (num_images, t_rec) written as the flags the
    user types (-n/--num-images, --t-rec)."""
    import re
    ctx = click.get_current_context(silent=True)
    for param in (ctx.command.params if ctx else []):
        if isinstance(param, click.Option) and "_" in (param.name or "") and param.opts:
            flags = "/".join(sorted(param.opts, key=len))
            message = re.sub(rf"(?<![\w-]){re.escape(param.name)}(?![\w-])", flags, message)
    return message


def friendly_errors(fn):
    """Turn the command's expected failures into one-line errors and report anything else as a bug.

    Also gives the command a --debug flag (same as GTR_DEBUG=1): errors then show their traceback.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import signal
        import threading
        main = threading.current_thread() is threading.main_thread()
        own_sigint = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not where ignored
        if main:
            _unwind.pending = False
            signal.signal(signal.SIGTERM, _terminate)
        if own_sigint:
            signal.signal(signal.SIGINT, _interrupt)
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None
        except BrokenPipeError:
            _closed_pipe()
        except Exception as e:  # noqa: BLE001 - sorted into expected failures and bugs below
            if _debug():
                raise
            if isinstance(e, GtrError):
                raise click.ClickException(_flag_names(first_line(e))) from None
            if _user_os_error(e, kwargs):
                name = f"{os.fsdecode(e.filename)}: " if isinstance(e.filename, (str, bytes, os.PathLike)) else ""
                raise click.ClickException(f"{name}{e.strerror or e}") from None
            saved = _save_traceback(fn.__name__.removesuffix("_cmd"))
            if saved is None:  # nowhere to save it: show it rather than lose it
                import traceback
                traceback.print_exc()
            where = f"full traceback in {saved}" if saved else "traceback above"
            raise InternalError(f"internal error (a bug in gtr, please report it): {type(e).__name__}: "
                                f"{first_line(e)} [{where}; rerun with --debug to show it]") from None
        finally:
            if own_sigint:  # a command called in-process (tests, the Python API) leaves Ctrl-C as it was
                signal.signal(signal.SIGINT, signal.default_int_handler)

    return debug_option(wrapper)


