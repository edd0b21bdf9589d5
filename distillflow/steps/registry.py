"""The one registry of step kinds: the spec union, builders, column checks, docs and runner read it.

    from distillflow.steps.registry import kinds, get
    get("filter").scope          # "row"
    sorted(kinds())              # ["best_of", "dedup", "distilabel", ...]

Built-in kinds are the modules listed in ``_BUILTIN`` (each defines ``KIND``, or ``KINDS`` for a few
small kinds that share one module). A user's own kind
registers with :func:`register` (Python) or an entry point in the ``distillflow.steps`` group whose
value is a :class:`~distillflow.steps.base.StepKind` (or a module defining ``KIND``).
"""

from __future__ import annotations

import importlib
import threading

from distillflow.errors import ConfigurationError
from distillflow.steps.base import StepKind

_BUILTIN = (
    "distillflow.steps.generate",
    "distillflow.steps.judge",
    "distillflow.steps.verify",
    "distillflow.steps.reward",
    "distillflow.steps.filter",
    "distillflow.steps.dedup",
    "distillflow.steps.best_of",
    "distillflow.steps.distilabel_step",
    "distillflow.steps.screen",
    "distillflow.steps.decontaminate",
)
ENTRY_POINT_GROUP = "distillflow.steps"

_KINDS: dict[str, StepKind] = {}
_loaded = False
_lock = threading.RLock()


def register(kind: StepKind, *, replace: bool = False) -> StepKind:
    """Add a step kind; it is then usable from YAML (``kind: <name>``) and Python."""
    if not isinstance(kind, StepKind):
        raise TypeError(f"register() takes a StepKind, got {type(kind).__name__}")
    with _lock:
        old = _KINDS.get(kind.name)
        if old is not None and old is not kind and not replace:
            raise ConfigurationError(
                f"step kind '{kind.name}' is already registered (by {old.spec.__module__}) — "
                "choose another name, or pass replace=True"
            )
        _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    with _lock:
        _KINDS.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for mod in _BUILTIN:
            try:
                m = importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name == mod:  # a kind not in this build
                    continue
                raise
            for kind in getattr(m, "KINDS", None) or (m.KIND,):
                register(kind, replace=True)
        _loaded = True  # set before plugins: a plugin may call kinds() while it loads
        _load_entry_points()


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin names itself instead of breaking every run
            raise ConfigurationError(
                f"step kind plugin '{ep.name}' ({ep.value}) failed to load: {type(e).__name__}: {e} — "
                f"fix or uninstall the package that declares it"
            ) from None
        kind = getattr(obj, "KIND", obj)
        if not isinstance(kind, StepKind):
            raise ConfigurationError(
                f"entry point '{ep.name}' in group '{ENTRY_POINT_GROUP}' is {type(kind).__name__}, not a StepKind"
            )
        register(kind, replace=True)


def kinds() -> dict[str, StepKind]:
    """Every registered kind by name (built-ins first, then plugins and Python registrations)."""
    _load()
    return dict(_KINDS)


def get(name: str) -> StepKind:
    _load()
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(name) from None
