"""Shared CLI plumbing: user mistakes print a clean message and exit with the error's code."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from contextlib import contextmanager

import typer
from rich.console import Console

from distillflow.errors import DISK_ERRNOS, is_write_error  # noqa: F401 - part of this module's surface

err_console = Console(stderr=True, soft_wrap=True)
console = Console(soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, systemd stopping a job), raised like Ctrl-C so that a run stops
    the same way: no new requests, every answer received kept, exit 143 with the resume hint."""


def _on_sigterm(signum, frame):
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def handle_errors(fn):
    """Turn DistillflowError into `error: ...` + exit code; Ctrl-C into exit 130 and SIGTERM into
    exit 143, both with a resume hint; a full disk or read-only path into one message, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from distillflow.errors import DistillflowError

        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except DistillflowError as e:
            sys.stderr.write(f"error: {e}\n")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            what, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)
            sys.stderr.write(
                f"\n{what} — every answer received so far is cached; run the same command again to resume.\n"
            )
            raise typer.Exit(code) from None
        except OSError as e:
            if e.errno not in DISK_ERRNOS:
                raise
            sys.stderr.write(f"error: cannot write {e.filename or 'a file'}: {e.strerror} — free space or "
                             "choose a writable path, then run the same command again.\n")
            raise typer.Exit(1) from None

    return wrapper


def disk_error(exc: OSError, out_dir) -> Exception:
    """A clear OutputWriteError for a run whose directory could not be written: which path,
    and how many answers its cache holds (they are not requested again on resume)."""
    import sqlite3
    from pathlib import Path

    from distillflow.errors import OutputWriteError

    db = Path(out_dir) / "cache" / "requests.sqlite"
    kept = "no"
    if db.exists():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                kept = str(con.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            kept = "the"
    return OutputWriteError(
        f"cannot write {exc.filename or out_dir}: {exc.strerror or exc} (disk full or read-only). "
        f"{kept} answers received so far are stored in {db}; free space (or make {out_dir} writable) "
        "and run the same command again to resume — stored answers are not requested again."
    )
