"""Reading pipeline files that may be hostile: bounded size, time, depth and alias expansion.

    text = read_text_file(Path("pipeline.yaml"))     # SpecError for a directory, binary, non-UTF-8...
    root = compose(text, "pipeline.yaml")             # one yaml node tree, checked while composing
    data = construct(root)                            # plain dicts/lists/scalars (yaml's safe types)

Why our own composer: PyYAML's composer recurses (a 10,000-deep ``[[[...]]]`` crashes the C loader
and takes minutes in libyaml's scanner), never counts alias expansions (a 1 kB "billion laughs"
file makes every later walk exponential) and lets a duplicate key silently overwrite the first.
Here the event stream (libyaml's when available, else PyYAML's pure parser) is folded into nodes
iteratively, and the walk stops at the first event that crosses a limit, so hostile input answers
in milliseconds. Limits are module constants, documented in the README.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from distillflow.errors import Problem, SpecError

MAX_BYTES = 10 * 1024 * 1024  # a pipeline file is configuration; data belongs in source files
MAX_DEPTH = 100  # real pipelines nest < 10 levels; deeper input is a mistake or an attack
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add when expanded (anchors reuse a few blocks)

_Parser = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


def _fail(message: str, source: str, line: int | None = None, hint: str | None = None, path: str = ""):
    raise SpecError([Problem(path, message, line, hint)], source)


# --------------------------------------------------------------------------- files

def read_text_file(p: Path, max_bytes: int = MAX_BYTES) -> str:
    """The file's text, or SpecError naming why it cannot be a pipeline (and what to do instead)."""
    source = str(p)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        _fail(f"file not found: {p}", source, None, "check the path, or run `distillflow init` to create one")
    except NotADirectoryError:
        _fail(f"file not found: {p} (a part of the path is a file, not a folder)", source, None, "check the path")
    except PermissionError:
        _fail(f"cannot reach {p}: permission denied on a folder of the path", source, None, "check the folders' permissions")
    except OSError as e:  # symlink loops, names too long, ...
        _fail(f"cannot open {p}: {e.strerror or e}", source, None, "check the path")
    if stat.S_ISDIR(st.st_mode):
        found = sorted(q.name for q in _yaml_files(p))
        hint = (
            f"pass the YAML file inside it, e.g. {p / found[0]}" if found
            else "pass the pipeline's YAML file; `distillflow init` writes a starter"
        )
        _fail(f"{p} is a directory, not a pipeline file", source, None, hint)
    if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
        _fail(_too_large(st.st_size, max_bytes), source, None, _LARGE_HINT)
    try:
        with open(p, "rb") as fh:  # non-regular files (FIFOs, devices) are read up to the limit only
            raw = fh.read(max_bytes + 1)
    except PermissionError:
        _fail(f"cannot read {p}: permission denied", source, None, "make it readable (chmod u+r) or run as its owner")
    except OSError as e:
        _fail(f"cannot read {p}: {e.strerror or e}", source, None, "pass a regular YAML file")
    if len(raw) > max_bytes:
        _fail(_too_large(None, max_bytes), source, None, _LARGE_HINT)
    return decode(raw, source)


def _yaml_files(folder: Path, limit: int = 50):
    try:
        for i, q in enumerate(os.scandir(folder)):
            if i >= limit:
                return
            if q.name.endswith((".yaml", ".yml")) and q.is_file():
                yield q
    except OSError:
        return


_LARGE_HINT = "keep data out of the pipeline: put prompts in a source file (source.kind: jsonl, csv or parquet)"


def _too_large(size: int | None, max_bytes: int) -> str:
    what = f"{size / 1e6:.1f} MB" if size is not None else "larger than the limit"
    return f"the file is {what}; pipeline files are limited to {max_bytes // (1024 * 1024)} MB"


def decode(raw: bytes, source: str) -> str:
    """UTF-8 text (a BOM is allowed), or SpecError naming the encoding problem and where it is."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        _fail("the file is UTF-16 encoded, not UTF-8", source, 1, "save it as UTF-8 (most editors: 'Save with encoding')")
    nul = raw.find(b"\x00")
    if nul >= 0:
        _fail(
            f"this is not a text file (a NUL byte at offset {nul}): a binary file?", source, raw.count(b"\n", 0, nul) + 1,
            "pass the pipeline's YAML file",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        _fail(
            f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}, column {col})", source, line,
            "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.yaml > out.yaml`",
        )
    raise AssertionError("unreachable")


def check_text_size(text: str, source: str, max_bytes: int = MAX_BYTES) -> None:
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        _fail(_too_large(len(text.encode("utf-8", "surrogatepass")), max_bytes), source, None, _LARGE_HINT)


# --------------------------------------------------------------------------- composing

class _Frame:
    __slots__ = ("node", "items", "size", "height", "key_lines")

    def __init__(self, node):
        self.node = node
        self.items: list = []
        self.size = 1
        self.height = 0
        self.key_lines: dict = {}


def compose(text: str, source: str = "pipeline"):
    """Fold the YAML event stream into one node tree, or raise SpecError.

    Checked while composing: one document only, nesting depth (aliases count with the depth of
    what they point to), nodes added by alias expansion, duplicate keys at any depth (all of them
    reported at once). YAML syntax errors propagate as ``yaml.MarkedYAMLError``.
    """
    resolver = yaml.resolver.Resolver()
    anchors: dict[str, tuple] = {}  # anchor -> (node, expanded size, height)
    stack: list[_Frame] = []
    root = None
    root_info = None
    alias_nodes = 0
    dups: list[Problem] = []
    docs = 0
    events = yaml.parse(text, Loader=_Parser)
    try:
        for ev in events:
            if isinstance(ev, yaml.DocumentStartEvent):
                docs += 1
                if docs > 1:
                    _fail(
                        f"the file holds more than one YAML document (another starts at line {ev.start_mark.line + 1})",
                        source, ev.start_mark.line + 1,
                        "keep one pipeline per file: remove the '---' separator or split the file",
                    )
                continue
            if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                continue
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor not in anchors:
                    _fail(f"alias '*{ev.anchor}' refers to no anchor defined before it", source,
                          ev.start_mark.line + 1, f"define '&{ev.anchor}' earlier in the file")
                node, size, height = anchors[ev.anchor]
                alias_nodes += size
                if alias_nodes > MAX_ALIAS_NODES:
                    _fail(
                        f"anchors and aliases expand to more than {MAX_ALIAS_NODES:,} nodes (an alias bomb?)", source,
                        ev.start_mark.line + 1, "write the repeated values out, or reuse smaller anchors",
                    )
                if len(stack) + height > MAX_DEPTH:
                    _too_deep(source, ev.start_mark)
                _attach(stack, node, size, height, source, dups)
                if not stack:
                    root, root_info = node, (size, height)
                continue
            if isinstance(ev, yaml.ScalarEvent):
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolver.resolve(ScalarNode, ev.value, ev.implicit)
                node = ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, style=ev.style)
                if ev.anchor is not None:
                    anchors[ev.anchor] = (node, 1, 0)
                _attach(stack, node, 1, 0, source, dups)
                if not stack:
                    root, root_info = node, (1, 0)
                continue
            if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) + 1 > MAX_DEPTH:
                    _too_deep(source, ev.start_mark)
                seq = isinstance(ev, yaml.SequenceStartEvent)
                cls = SequenceNode if seq else MappingNode
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolver.resolve(cls, None, ev.implicit)
                node = cls(tag, [], ev.start_mark, None, flow_style=ev.flow_style)
                frame = _Frame(node)
                frame.key_lines = {} if not seq else None
                stack.append((frame, ev.anchor))
                continue
            if isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                frame, anchor = stack.pop()
                node = frame.node
                node.end_mark = ev.end_mark
                if isinstance(node, MappingNode):
                    if len(frame.items) % 2:
                        raise AssertionError("mapping with a key and no value")  # the parser never emits this
                    node.value = [(frame.items[i], frame.items[i + 1]) for i in range(0, len(frame.items), 2)]
                else:
                    node.value = frame.items
                if anchor is not None:
                    anchors[anchor] = (node, frame.size, frame.height + 1)
                _attach(stack, node, frame.size, frame.height + 1, source, dups)
                if not stack:
                    root, root_info = node, (frame.size, frame.height + 1)
                continue
    finally:
        events.close()
    if dups:
        raise SpecError(dups, source)
    return root


def _too_deep(source, mark):
    _fail(f"the structure nests deeper than {MAX_DEPTH} levels", source, mark.line + 1,
          "a pipeline never nests that deep: flatten it (or close the brackets you opened)")


def _attach(stack, node, size, height, source, dups) -> None:
    if not stack:
        return
    frame, _anchor = stack[-1]
    frame.size += size
    frame.height = max(frame.height, height)
    is_key = frame.key_lines is not None and len(frame.items) % 2 == 0
    frame.items.append(node)
    if is_key and isinstance(node, ScalarNode) and node.value != "<<":
        key = (node.tag, node.value)
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        first = frame.key_lines.get(key)
        if first is None:
            frame.key_lines[key] = (line, col)
        else:
            where = f"lines {first[0]} and {line}" if first[0] != line else f"line {line}, columns {first[1]} and {col}"
            dups.append(Problem(
                _path_of(stack), f"key '{node.value}' appears twice ({where})", line,
                "YAML would keep only the last one silently: remove or rename one",
            ))


def _path_of(stack) -> str:
    """The YAML path of the innermost open collection (``steps[2].params``), for messages."""
    out = ""
    for i, (frame, _a) in enumerate(stack[:-1]):
        items = frame.items
        if frame.key_lines is None:
            part = f"[{len(items)}]"
        else:
            k = items[-1] if len(items) % 2 else None
            part = ("." if out else "") + str(k.value if isinstance(k, ScalarNode) else "?")
        out += part
    return out


def construct(root):
    """Plain Python data from a composed node (yaml's safe constructor: no Python objects)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()
