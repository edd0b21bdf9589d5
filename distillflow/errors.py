"""One exception family for distillflow.

User mistakes (invalid YAML, missing env vars, unreachable endpoints) raise a subclass of
``DistillflowError``; the CLI prints ``str(err)`` without a traceback and exits with ``err.exit_code``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


class DistillflowError(Exception):
    """Base class. ``exit_code`` 2 = invalid pipeline/usage, 1 = runtime failure."""

    exit_code = 1


@dataclass
class Problem:
    """One problem in a pipeline definition, located by its YAML path (``steps[2].where``)."""

    path: str
    message: str
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = self.path or "<root>"
        if self.line is not None:
            where += f" (line {self.line})"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return text


class SpecError(DistillflowError):
    """An invalid pipeline: carries *every* problem found, so users fix them all in one pass."""

    exit_code = 2

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        head = f"{n} error{'s' if n != 1 else ''} in {self.source or 'pipeline'}:"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class UsageError(DistillflowError):
    """Bad command-line usage or a bad argument from Python (wrong path, bad option)."""

    exit_code = 2


class ConfigurationError(DistillflowError):
    """The pipeline is valid but cannot run here: a missing env var, an unreachable endpoint."""

    exit_code = 1


class TeacherError(DistillflowError):
    """A teacher kept failing after retries (outage, auth). Answers already received are cached."""

    exit_code = 1


class TeacherOutageError(TeacherError):
    """A teacher's circuit breaker opened (a sustained outage): the run stopped dispatching."""

    exit_code = 1


class RunLockedError(DistillflowError):
    """Another run holds the run directory's lock (or the directory cannot be locked)."""

    exit_code = 2


class OutputWriteError(DistillflowError):
    """The run directory cannot be written (disk full, read-only): answers received are kept."""

    exit_code = 1


class BudgetExceeded(DistillflowError):
    """Raised internally when ``max_cost_usd`` would be exceeded; generation stops cleanly."""

    exit_code = 1


class MissingDependencyError(DistillflowError, ImportError):
    """An optional dependency is missing; the message carries the pip command that fixes it."""

    exit_code = 1


def did_you_mean(word: str, choices) -> str | None:
    """Return ``"did you mean 'x'?"`` for the closest choice, or None."""
    import difflib

    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


# A full disk, a quota, a read-only filesystem, a file-size limit: the place, not the program, is wrong.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def is_write_error(exc: OSError, out_dir=None) -> bool:
    """A full disk / read-only filesystem anywhere, or a permission error inside ``out_dir``."""
    if exc.errno in DISK_ERRNOS:
        return True
    if out_dir is None or exc.errno not in (errno.EACCES, errno.EPERM) or not exc.filename:
        return False
    from pathlib import Path

    try:
        return Path(str(exc.filename)).resolve().is_relative_to(Path(out_dir).resolve())
    except (OSError, ValueError):
        return False
