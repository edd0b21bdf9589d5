"""Programmatic verifiers: functions that check a response and never call a model.

A verifier has the signature ``fn(response: str, row: dict, **params) -> bool | (bool, str)``.
Built-ins live in ``VERIFIERS``; user code registers more with ``@register_verifier("name")``
or is named as ``"package.module:function"``. ``verify_rows`` records the outcome in
``{step_id}_pass`` / ``{step_id}_detail`` and provenance; it never drops a row (filters do).

>>> fn = resolve_verifier("exact_match")
>>> rows = verify_rows(rows, "math_ok", fn, {"extract": "last_number"})
>>> rows[0]["math_ok_pass"], rows[0]["math_ok_detail"]
(True, 'expected 42, got 42')
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import os
import re
import sys
from typing import Any, Callable, Literal

from pydantic import Field

from distillflow.steps.base import StepBase, StepKind
from distillflow.errors import ConfigurationError, UsageError, did_you_mean

__all__ = [
    "VERIFIERS", "Verifier", "register_verifier", "resolve_verifier", "check_params", "verify_rows",
    "exact_match", "contains", "json_valid", "regex", "python_parses",
]

Verifier = Callable[..., "bool | tuple[bool, str]"]
VERIFIERS: dict[str, Verifier] = {}


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Register a verifier under ``name`` so YAML can say ``verifier: name``.

    >>> @register_verifier("non_empty")
    ... def non_empty(response, row):
    ...     return bool(response.strip()), "empty response"
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise UsageError(f"verifier name must be an identifier-like string, got {name!r}")

    def decorator(fn: Verifier) -> Verifier:
        old = VERIFIERS.get(name)
        # Re-running a notebook cell re-registers the same function: allow that, refuse clashes.
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise UsageError(
                f"verifier '{name}' is already registered by {old.__module__}.{old.__qualname__}; pick another name"
            )
        VERIFIERS[name] = fn
        return fn

    return decorator


def _split_path(path: str) -> tuple[str, str]:
    """``'package.module:function'`` -> (module, function); UsageError for any other shape. No import."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UsageError(f"verifier '{path}' must look like 'package.module:function'")
    return module_name, attr


def _import_module(module_name: str, path: str):
    """``importlib.import_module``; a module that is found but fails while importing (a syntax
    error, an import inside it that fails) is the user's code to fix, named without a traceback."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise
    except Exception as err:
        where = ""
        if isinstance(err, SyntaxError) and err.filename:
            where = f" ({err.filename}, line {err.lineno})"
        raise ConfigurationError(f"module '{module_name}' for verifier '{path}' failed to import{where}: "
                                 f"{type(err).__name__}: {err}") from err


def _import_attr(path: str) -> Verifier:
    module_name, attr = _split_path(path)
    try:
        module = _import_module(module_name, path)
    except ModuleNotFoundError as err:
        # `distillflow run` starts from the console script, so the project directory is not on
        # sys.path; users expect `my_checks:fn` next to their pipeline to work.
        cwd = os.getcwd()
        if err.name != module_name.split(".")[0] or cwd in sys.path:
            raise ConfigurationError(f"cannot import module '{module_name}' for verifier '{path}': {err}") from err
        sys.path.insert(0, cwd)
        try:
            module = _import_module(module_name, path)
        except ModuleNotFoundError as err2:
            raise ConfigurationError(
                f"cannot import module '{module_name}' for verifier '{path}': {err2} "
                f"(looked on sys.path and in {cwd}; install it or set PYTHONPATH)"
            ) from err2
        finally:
            sys.path.remove(cwd)
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n in dir(module) if not n.startswith("_")]
        hint = did_you_mean(attr, public)
        raise ConfigurationError(
            f"module '{module_name}' has no function '{attr}' (verifier '{path}')" + (f" — {hint}" if hint else "")
        )
    if not callable(fn):
        raise ConfigurationError(f"'{path}' is a {type(fn).__name__}, not a function")
    return fn


def resolve_verifier(name_or_path: str | Verifier) -> Verifier:
    """Return the verifier for a registry name, a ``module:function`` path, or a callable.

    >>> resolve_verifier("json_valid") is json_valid
    True
    >>> resolve_verifier("my_checks:is_sorted")   # imported with importlib, never eval'd
    """
    if callable(name_or_path):
        return name_or_path
    if not isinstance(name_or_path, str) or not name_or_path:
        raise UsageError(f"verifier must be a name or 'module:function', got {name_or_path!r}")
    if ":" in name_or_path:
        return _import_attr(name_or_path)
    if name_or_path in VERIFIERS:
        return VERIFIERS[name_or_path]
    hint = did_you_mean(name_or_path, VERIFIERS)
    raise UsageError(
        f"unknown verifier '{name_or_path}' (built-in: {', '.join(sorted(VERIFIERS))})"
        + (f" — {hint}" if hint else " — or give a 'package.module:function' path")
    )


def check_params(fn: Verifier, params: dict | None, name: str | None = None) -> None:
    """Fail once, before any row, when ``params`` do not fit the verifier's signature.

    >>> check_params(regex, {"patern": "x"})  # UsageError: unknown parameter 'patern' — did you mean 'pattern'?
    """
    label = name or getattr(fn, "__name__", repr(fn))
    params = params or {}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    kinds = inspect.Parameter
    accepted = [n for n, p in list(sig.parameters.items())[2:] if p.kind not in (kinds.VAR_KEYWORD, kinds.VAR_POSITIONAL)]
    takes_any = any(p.kind is kinds.VAR_KEYWORD for p in sig.parameters.values())
    listing = f"(accepted parameters: {', '.join(accepted) or 'none'})"
    for key in params:
        if key not in accepted and not takes_any:
            hint = did_you_mean(key, accepted)
            raise UsageError(f"verifier '{label}': unknown parameter '{key}' {listing}" + (f" — {hint}" if hint else ""))
    try:
        sig.bind("", {}, **params)
    except TypeError as err:
        raise UsageError(f"verifier '{label}': {err} {listing}") from err


def _is_bool(value: Any) -> bool:
    # numpy bools are fine: numpy 1 names the type `bool_`, numpy 2 `bool` (module numpy)
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"))


def _outcome(result: Any) -> tuple[bool, str]:
    if isinstance(result, tuple) and len(result) == 2:
        ok, detail = result
        if _is_bool(ok):
            return bool(ok), "" if detail is None else str(detail)
    elif _is_bool(result):
        return bool(result), "passed" if result else "failed"
    return False, f"verifier returned {type(result).__name__} {result!r:.80}, expected bool or (bool, str)"


def verify_rows(
    rows: list[dict], step_id: str, fn: Verifier | str, params: dict | None = None, column: str = "response"
) -> list[dict]:
    """Run a verifier on every row; add ``{step_id}_pass``/``_detail`` and provenance.

    Exceptions raised by the verifier become ``pass=False`` with the exception text as detail,
    except ``UsageError`` (a bad parameter such as an invalid regex), which is raised once.

    >>> out = verify_rows(rows, "valid_json", "json_valid")
    >>> out[0]["valid_json_pass"], out[0]["provenance"]["verifiers"]["valid_json"]
    (False, {'pass': False, 'detail': 'invalid JSON: Expecting value: line 1 column 1 (char 0)'})
    """
    func = resolve_verifier(fn)
    params = dict(params or {})
    check_params(func, params, fn if isinstance(fn, str) else None)
    out = []
    for row in rows:
        value = row.get(column)
        response = value if isinstance(value, str) else ("" if value is None else str(value))
        try:
            ok, detail = _outcome(func(response, row, **params))
        except UsageError:
            raise  # a bad parameter (invalid regex, unknown mode) is the spec's fault: say it once
        except Exception as err:  # a user's bug must not crash a paid-for run
            ok, detail = False, f"verifier raised {type(err).__name__}: {err}"
        new = dict(row)
        new[f"{step_id}_pass"] = ok
        new[f"{step_id}_detail"] = detail
        prov = dict(row.get("provenance") or {})
        prov["verifiers"] = {**(prov.get("verifiers") or {}), step_id: {"pass": ok, "detail": detail}}
        new["provenance"] = prov
        out.append(new)
    return out


# --------------------------------------------------------------------------- built-ins

def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().casefold())


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?|-?\.\d+")


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    for raw in reversed(found):
        try:
            return float(raw.replace(",", ""))
        except ValueError:
            continue
    return None


def _boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), the usual math answer marker."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


@register_verifier("exact_match")
def exact_match(
    response: str, row: dict, reference_column: str = "reference", expected: Any = None,
    extract: str | None = None, tolerance: float = 1e-6,
) -> tuple[bool, str]:
    """Compare the response with ``expected`` or the row's reference (strip + casefold).

    ``extract="last_number"`` compares the last number of each side numerically (so
    "... so the answer is 1,234." matches "#### 1234"); ``extract="boxed"`` uses ``\\boxed{}``.

    >>> exact_match("The answer is 42.", {"reference": "42"}, extract="last_number")
    (True, 'expected 42, got 42')
    """
    if extract not in (None, "last_number", "boxed"):
        raise UsageError(f"exact_match: extract must be 'last_number', 'boxed' or omitted, got {extract!r}")
    ref = expected if expected is not None else row.get(reference_column)
    if ref is None:
        return False, f"no expected value: row has no '{reference_column}' and no 'expected' parameter"
    ref = str(ref)
    if extract == "last_number":
        got, want = _last_number(response), _last_number(ref)
        if want is None:
            return False, f"reference {ref!r:.60} contains no number"
        if got is None:
            return False, f"expected {_fmt(want)}, but the response contains no number"
        ok = abs(got - want) <= tolerance * max(1.0, abs(want))
        return ok, f"expected {_fmt(want)}, got {_fmt(got)}"
    if extract == "boxed":
        got_text = _boxed(response)
        if got_text is None:
            return False, "the response has no \\boxed{...} answer"
        want_text = _boxed(ref) or ref
        return _norm(got_text) == _norm(want_text), f"expected {want_text.strip()!r:.60}, got {got_text.strip()!r:.60}"
    ok = _norm(response) == _norm(ref)
    return ok, "matches the reference" if ok else f"expected {ref.strip()!r:.60}, got {response.strip()!r:.60}"


@register_verifier("contains")
def contains(
    response: str, row: dict, text: str | None = None, reference_column: str = "reference",
    case_sensitive: bool = False,
) -> tuple[bool, str]:
    """Pass when the response contains ``text`` (or the row's reference column).

    >>> contains("Paris is the capital.", {}, text="paris")
    (True, "contains 'paris'")
    """
    needle = text if text is not None else row.get(reference_column)
    if needle is None or needle == "":
        return False, f"nothing to look for: no 'text' parameter and no '{reference_column}' in the row"
    needle = str(needle)
    hay, nd = (response, needle) if case_sensitive else (response.casefold(), needle.casefold())
    ok = nd in hay
    return ok, f"contains {needle!r:.60}" if ok else f"does not contain {needle!r:.60}"


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def _fenced(text: str, languages: tuple[str, ...]) -> str | None:
    for m in _FENCE.finditer(text):
        if m.group(1).lower() in languages:
            return m.group(2)
    return None


@register_verifier("json_valid")
def json_valid(
    response: str, row: dict, required_keys: list[str] | tuple[str, ...] = (), allow_fence: bool = True
) -> tuple[bool, str]:
    """Pass when the response (or its first ```json block) parses as JSON with ``required_keys``.

    >>> json_valid('{"a": 1}', {}, required_keys=["a", "b"])
    (False, "JSON object lacks keys: 'b'")
    """
    text = response
    if allow_fence:
        block = _fenced(response, ("json", ""))
        text = block if block is not None else response
    try:
        value = json.loads(text)
    except ValueError as err:
        return False, f"invalid JSON: {err}"
    if required_keys:
        if not isinstance(value, dict):
            return False, f"expected a JSON object with keys {list(required_keys)}, got {type(value).__name__}"
        missing = [k for k in required_keys if k not in value]
        if missing:
            return False, "JSON object lacks keys: " + ", ".join(repr(k) for k in missing)
    return True, f"valid JSON {type(value).__name__}"


@functools.lru_cache(maxsize=256)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as err:
        raise UsageError(f"regex verifier: invalid pattern {pattern!r}: {err}") from err


@register_verifier("regex")
def regex(
    response: str, row: dict, pattern: str, mode: str = "search", ignore_case: bool = False
) -> tuple[bool, str]:
    """Pass when ``pattern`` matches the response (``mode="search"`` or ``"fullmatch"``).

    >>> regex("Answer: B", {}, pattern=r"Answer: [A-D]")
    (True, "matched 'Answer: B'")
    """
    if mode not in ("search", "fullmatch"):
        raise UsageError(f"regex verifier: mode must be 'search' or 'fullmatch', got {mode!r}")
    compiled = _compile(pattern, ignore_case)
    m = compiled.search(response) if mode == "search" else compiled.fullmatch(response.strip())
    return (True, f"matched {m.group(0)!r:.60}") if m else (False, f"no {mode} for /{pattern}/")


@register_verifier("python_parses")
def python_parses(response: str, row: dict) -> tuple[bool, str]:
    """Pass when the first ```python block (or, without one, the whole response) is valid Python.

    >>> python_parses("```python\\ndef f(:\\n```", {})
    (False, "SyntaxError: invalid syntax (line 1)")
    """
    block = _fenced(response, ("python", "py", "python3"))
    source, where = (block, "```python block") if block is not None else (response, "response")
    if not source.strip():
        return False, f"the {where} is empty"
    try:
        ast.parse(source)
    except SyntaxError as err:
        return False, f"SyntaxError: {err.msg} (line {err.lineno})"
    except ValueError as err:  # e.g. null bytes in the source
        return False, f"cannot parse the {where}: {err}"
    return True, f"the {where} parses"


# --------------------------------------------------------------------------- the `verify` step kind



class VerifyStep(StepBase):
    """Programmatic verifier: adds `<id>_pass` and `<id>_detail`."""

    kind: Literal["verify"]
    check: str = Field(description="exact_match | contains | json_valid | regex | python_parses | module:function")
    reference: str | None = Field(None, description="Column holding the expected answer.")
    params: dict[str, Any] = Field(default_factory=dict)


def _step_params(fn: Verifier, step: VerifyStep) -> dict:
    """The parameters the step passes to ``fn``: its ``params``, and ``reference`` where ``fn`` takes it."""
    params = dict(step.params)
    try:
        sig = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return params
    if step.reference and ("reference_column" in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())):
        params["reference_column"] = step.reference
    return params


def _prepare(ctx, step: VerifyStep):
    fn = ctx.objects.get(step.id) or resolve_verifier(step.check)
    params = _step_params(fn, step)
    check_params(fn, params, step.check if isinstance(step.check, str) else None)
    return fn, params


def _check(step: VerifyStep, obj=None) -> list[tuple[tuple, str]]:
    """Static checks run at compile time (`distillflow validate`): the verifier's name and, for a
    built-in or registered one, its parameters. A ``module:function`` verifier is only checked for
    its shape here: importing it runs user code, which :func:`_preflight` does (preflight, run start)."""
    fn = obj
    if fn is None:
        if ":" in step.check:
            try:
                _split_path(step.check)
            except UsageError as e:
                return [(("check",), str(e))]
            return []
        try:
            fn = resolve_verifier(step.check)
        except UsageError as e:
            return [(("check",), str(e))]
    params = _step_params(fn, step)
    try:
        check_params(fn, params, step.check)
        if getattr(fn, "__module__", None) == __name__:
            # A built-in checks its parameters' values (extract, mode, pattern) before it looks at
            # the response, raising UsageError; one call on an empty response reports them now.
            try:
                fn("", {}, **params)
            except UsageError:
                raise
            except Exception:  # not a parameter problem: the run decides per row
                pass
    except UsageError as e:
        return [(("params",), str(e))]
    return []


def _preflight(step: VerifyStep, obj=None) -> str | None:
    """Import a ``module:function`` verifier and check its parameters; before any request is sent."""
    if obj is not None or ":" not in step.check:
        return None  # checked statically by _check
    fn = resolve_verifier(step.check)
    check_params(fn, _step_params(fn, step), step.check)
    return f"verifier {step.check} imports"


def _run(ctx, step: VerifyStep, rows: list[dict], state):
    fn, params = state
    return verify_rows(rows, step.id, fn, params), []


KIND = StepKind(
    "verify", VerifyStep, _run, prepare=_prepare, scope="row", builder="Verify", check=_check, preflight=_preflight,
    columns=lambda step: ({"response"} | ({step.reference} if step.reference else set()), {f"{step.id}_pass", f"{step.id}_detail"}),
)
