"""YAML front door: text -> validated PipelineSpec, with every problem located by path and line.

    spec = load_spec("pipelines/quickstart.yaml")
    spec.name                      # "quickstart"
    load_spec("name: [")           # SpecError: "<root> (line 1): ..."
"""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distillflow.errors import Problem, SpecError, did_you_mean, error_text, literal_choices
from distillflow.spec.safe_yaml import check_text_size, compose, construct, read_text_file


def _line_map(root) -> dict[tuple, int]:
    """Map each YAML path (tuple of keys/indices) to its 1-based line, via the composed node tree."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if node is None:
            return
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else repr(k.value)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    walk(root, ())
    return lines


def format_path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's discriminator tags and wrapper names so paths read like the YAML."""
    from distillflow.spec.models import step_kinds

    STEP_KINDS = step_kinds()
    out: list = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and i >= 2 and loc[i - 2] == "steps" and isinstance(loc[i - 1], int) and part in STEP_KINDS:
            continue
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        out.append(part)
    return tuple(out)


def _model_at(loc: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at the end of ``loc`` (for did-you-mean)."""
    from distillflow.spec.models import pipeline_spec_class

    model: Any = pipeline_spec_class()
    node: Any = data
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        model = _unwrap(field.annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(ann, node):
    """Find the model class inside Optional[...] / list[...] / discriminated unions."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0], node)
    if origin in (list, tuple):
        item = node[0] if isinstance(node, list) and node else node
        return _unwrap(typing.get_args(ann)[0], item if isinstance(item, dict) else None) if typing.get_args(ann) else None
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        nested = [_unwrap(a, node) for a in typing.get_args(ann) if typing.get_origin(a) is not None]
        models += [m for m in nested if m]
        if isinstance(node, dict) and "kind" in node:
            for m in models:
                kind = m.model_fields.get("kind")
                if kind is not None and node["kind"] in typing.get_args(kind.annotation):
                    return m
        return models[0] if len(models) == 1 else None
    return ann


def _problem_from_error(err: dict, data: Any, lines: dict) -> Problem:
    loc = _clean_loc(tuple(err["loc"]))
    path = format_path(loc)
    line = _line_for(loc, lines)
    etype = err["type"]
    hint = None
    if etype == "extra_forbidden":
        model = _model_at(loc, data)
        key = loc[-1] if loc else "?"
        if model is not None:
            hint = did_you_mean(key, model.model_fields.keys())
            allowed = ", ".join(model.model_fields)
            hint = hint or f"allowed keys: {allowed}"
        return Problem(path, f"unknown key '{key}'", line, hint)
    if etype == "union_tag_invalid":
        from distillflow.spec.models import step_kinds

        STEP_KINDS = step_kinds()
        tag = (err.get("ctx") or {}).get("tag", "?")
        hint = did_you_mean(tag, STEP_KINDS) or f"known kinds: {', '.join(STEP_KINDS)}"
        return Problem(format_path(loc + ("kind",)), f"unknown step kind '{tag}'", _line_for(loc + ("kind",), lines), hint)
    if etype == "union_tag_not_found":
        return Problem(path, "a step needs a 'kind' (e.g. kind: generate)", line)
    if etype == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        hint = did_you_mean(err.get("input"), literal_choices(err))
        return Problem(path, f"'{err.get('input')}' is not one of {expected}", line, hint)
    if etype == "missing":
        return Problem(path, f"required key '{loc[-1]}' is missing" if loc else "required key is missing", _line_for(loc[:-1], lines))
    return Problem(path, error_text(err), line, hint)


_PATH_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z_]+|\[\d+\])*): ")


def _located(problem: Problem, lines: dict) -> list[Problem]:
    """A whole-spec check (a model validator, reported at the root) says where each of its problems
    lies by starting the message with a path (``train.mode: ...``), one problem per line: locate them."""
    if problem.path:
        return [problem]
    out = []
    for text in problem.message.split("\n"):
        m = _PATH_PREFIX.match(text)
        if m is None:
            out.append(Problem("", text, problem.line, problem.hint))
            continue
        out.append(Problem(m.group(1), text[m.end():], _line_for(parse_path(m.group(1)), lines), problem.hint))
    return out


def parse_path(text: str) -> tuple:
    """The location a printed path names, :func:`format_path` undone: ``steps[2].where`` ->
    ``("steps", 2, "where")``."""
    return tuple(int(x) if x.isdigit() else x for x in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+", text))


def _line_for(loc: tuple, lines: dict) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def parse_yaml(text: str, source: str = "pipeline") -> tuple[dict, dict]:
    """Parse YAML text into a mapping + line map, or raise SpecError with the line."""
    if not text.strip():
        raise SpecError([Problem("", "the file is empty", 1, "run `distillflow init` for a commented starter")], source)
    if "\t" in text:
        for i, line in enumerate(text.splitlines(), 1):
            stripped = line.lstrip(" ")
            if stripped.startswith("\t"):
                raise SpecError(
                    [Problem("", "tab character used for indentation", i, "YAML indents with spaces; replace tabs by spaces")],
                    source,
                )
    check_text_size(text, source)
    try:
        root = compose(text, source)
        data = construct(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = (e.problem or "invalid YAML").strip()
        ctx = f" ({e.context.strip()} at line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise SpecError([Problem("", f"invalid YAML: {what}{ctx}", line, "check quotes, colons and indentation")], source) from None
    except yaml.YAMLError as e:
        raise SpecError([Problem("", f"invalid YAML: {e}", None)], source) from None
    if data is None:
        raise SpecError([Problem("", "the file has no content (only comments?)", 1, "run `distillflow init` for a starter")], source)
    if not isinstance(data, dict):
        raise SpecError(
            [Problem("", f"the top level must be a mapping (name:, source:, teachers:, steps:), not a {type(data).__name__}", 1)],
            source,
        )
    return data, _line_map(root)


@dataclass(frozen=True)
class Document:
    """A validated spec and where it came from: YAML line numbers and the base for relative paths."""

    spec: Any
    lines: dict = field(default_factory=dict)
    base_dir: Path | None = None
    source: str = "pipeline"


def validate_data(data: dict, lines: dict | None = None, source: str = "pipeline", base_dir: Path | None = None):
    """dict -> PipelineSpec (schema errors collected into one SpecError)."""
    return document_from_data(data, lines, source, base_dir).spec


def document_from_data(data: dict, lines: dict | None = None, source: str = "pipeline", base_dir: Path | None = None) -> Document:
    """dict -> Document(spec, lines, base_dir), collecting schema errors, raising one SpecError."""
    from distillflow.spec.models import PipelineSpec

    lines = lines or {}
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in _located(_problem_from_error(err, data, lines), lines)]
        # pydantic reports one error per union member sometimes; keep the unique ones
        seen, unique = set(), []
        for p in problems:
            if str(p) not in seen:
                seen.add(str(p))
                unique.append(p)
        unique.sort(key=lambda p: (p.line or 0))
        raise SpecError(unique, source) from None
    return Document(spec, dict(lines), Path(base_dir) if base_dir is not None else None, source)


def _is_path(value) -> bool:
    """A Path, or a one-line string naming a file (YAML text has a newline or a ':')."""
    if isinstance(value, Path):
        return True
    if not isinstance(value, str) or "\n" in value or len(value) > 4096:
        return False
    try:
        if os.path.lexists(value):
            return True
    except (OSError, ValueError):  # a NUL byte or a name too long is no path
        return False
    return value.endswith((".yaml", ".yml")) or not any(c in value for c in ":{}[]#")


def load_spec(path_or_text: str | Path):
    """Load a pipeline from a YAML file path (or YAML text) and validate its schema (see load_document)."""
    return load_document(path_or_text).spec


def load_document(path_or_text: str | Path) -> Document:
    """Load a pipeline from a YAML file path (or YAML text) and validate its schema.

    Raises SpecError listing every problem with its path and line. The graph (edges, cycles,
    columns) is checked one layer up: `distillflow.load` / `distillflow.graph.build_graph`.
    """
    if _is_path(path_or_text):
        p = Path(path_or_text)
        text, source, base = read_text_file(p), str(p), p.resolve().parent
    else:
        text, source, base = str(path_or_text), "pipeline", Path.cwd()
    data, lines = parse_yaml(text, source)
    return document_from_data(data, lines, source, base)


def _str_presenter(dumper, value):
    if any(c in value for c in "\x85\u2028\u2029"):
        # YAML reads these as line breaks: PyYAML's pure-Python emitter put such a string in single
        # quotes or a block and folded it there, so the reloaded row read a space or a newline
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _dumper(emitter: type) -> type:
    """A dumper on ``emitter`` (PyYAML's SafeDumper or libyaml's CSafeDumper) writing our strings."""
    dumper = type("_Dumper", (emitter,), {})
    dumper.add_representer(str, _str_presenter)
    return dumper


# libyaml's emitter where PyYAML has it: ~4x faster on a spec with many inline rows
_Dumper = _dumper(getattr(yaml, "CSafeDumper", None) or yaml.SafeDumper)


def dump_yaml(data: dict, dumper: type = _Dumper) -> str:
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
