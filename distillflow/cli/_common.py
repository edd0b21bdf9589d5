"""Shared CLI plumbing: user mistakes print a clean message and exit with the error's code."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)
console = Console(soft_wrap=True)


def handle_errors(fn):
    """Turn DistillflowError into `error: ...` + exit code; Ctrl-C into exit 130 with a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from distillflow.errors import DistillflowError

        try:
            return fn(*args, **kwargs)
        except DistillflowError as e:
            sys.stderr.write(f"error: {e}\n")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write(
                "\ninterrupted — every answer received so far is cached; run the same command again to resume.\n"
            )
            raise typer.Exit(130) from None

    return wrapper
