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


def error_text(err: dict) -> str:
    """A pydantic error's message without the "Value error, " that a validator's ValueError gets."""
    return str(err["msg"]).removeprefix("Value error, ")


def literal_choices(err: dict) -> list[str]:
    """The allowed values of a pydantic ``literal_error`` (its ``expected``: "'a', 'b' or 'c'")."""
    expected = (err.get("ctx") or {}).get("expected", "")
    return [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def require_run_dir(run_dir, *, marker: str | None = None, config: bool = False):
    """``run_dir`` as a Path when it is a directory written by `distillflow run` (holding ``marker``,
    when given); else a UsageError (exit 2) saying what the path is instead: missing, a file (a
    pipeline file is named as one), or a directory without ``marker``. ``config``: the command
    takes ``--config PIPELINE.yaml``, and the messages say so. One wording for every command."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if run_dir.is_dir():
        if marker is not None and not (run_dir / marker).exists():
            raise not_a_run_dir(run_dir, f"no {marker}", config=config)
        return run_dir
    if run_dir.exists():
        if run_dir.suffix.lower() not in (".yaml", ".yml"):
            raise UsageError(f"{run_dir} is a file, not a distillflow run directory: pass the directory that "
                             "`distillflow run PIPELINE.yaml --out RUN_DIR` wrote")
        fix = f"run it first (`distillflow run {run_dir} --out RUN_DIR`) and pass RUN_DIR"
        if config:
            fix += f", or pass RUN_DIR with --config {run_dir} to use this pipeline's settings"
        raise UsageError(f"{run_dir} is a pipeline file, not a distillflow run directory: {fix}")
    raise not_a_run_dir(run_dir, "not found")


def run_pipeline_file(run_dir, config=None):
    """The pipeline file of a command that takes RUN_DIR and ``--config PIPELINE.yaml``: ``config``
    when given, else the ``pipeline.yaml`` `distillflow run` wrote there (checked by
    :func:`require_run_dir`); a UsageError (exit 2) when it is missing."""
    from pathlib import Path

    run_dir = require_run_dir(run_dir, marker=None if config else "pipeline.yaml", config=True)
    path = Path(config) if config else run_dir / "pipeline.yaml"
    if not path.is_file():
        raise UsageError(f"pipeline file {path} not found: check the --config path")
    return path


def not_a_run_dir(run_dir, why: str, *, config: bool = False) -> UsageError:
    """The error for a directory that `distillflow run` did not write (``why``: what it lacks)."""
    return UsageError(f"{run_dir} is not a distillflow run directory ({why}): run `distillflow run PIPELINE.yaml "
                      f"--out {run_dir}` first" + (", or pass --config PIPELINE.yaml" if config else ""))


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


def make_parent(path) -> None:
    """Create the folder ``path`` is written in, as `run --out` and `report -o` do; a UsageError
    (exit 2) when a file stands where a folder must be or the folder cannot be made. A full disk
    or a read-only filesystem is left to the CLI's own message for it (exit 1)."""
    from pathlib import Path

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (e.strerror or str(e))
        raise UsageError(f"cannot write {path}: {why} — choose another path") from None
