"""A small, safe expression language for row filters (``judge_score >= 4 and not refused``).

Text is tokenized and parsed by recursive descent into a tree of frozen dataclasses; nothing
is ever passed to ``eval``. Only three functions exist (``len``, ``lower``, ``abs``), names are
row columns, and there is no attribute access, indexing or arithmetic beyond unary minus.

Grammar (lowest precedence first)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand)?
    operand    := "-" operand | NUMBER | STRING | true | false | null | "[" items "]"
                | NAME "(" args ")" | NAME | "(" expr ")"

>>> e = parse("judge_score >= 4 and len(response) < 2000")
>>> e.columns(), e.evaluate({"judge_score": 5.0, "response": "ok"})
({'judge_score', 'response'}, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Iterator

from distillflow.errors import DistillflowError, did_you_mean

__all__ = ["Expr", "Literal", "Column", "ListExpr", "Call", "Neg", "Not", "BoolOp", "Compare",
           "ExprSyntaxError", "ExprEvalError", "parse", "FUNCTIONS"]

_MAX_DEPTH = 100  # recursion guard: "((((((" x 10_000 must be a syntax error, not a crash


class ExprSyntaxError(DistillflowError, ValueError):
    """Malformed filter text; ``position`` is the 0-based offset, ``column`` the 1-based one."""

    exit_code = 2

    def __init__(self, message: str, position: int, text: str | None = None):
        self.message = message
        self.position = position
        self.column = position + 1
        self.text = text
        full = message
        if text is not None and "\n" not in text:
            full += f"\n  {text}\n  {' ' * position}^"
        super().__init__(full)


class ExprEvalError(DistillflowError, ValueError):
    """A filter failed on a row's values (``len(5)``, ``'a' < 3``); names the column and value."""

    exit_code = 1


# --------------------------------------------------------------------------- tokenizer

_KEYWORDS = {"and", "or", "not", "in"}
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}
_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[()\[\],\-])
      | (?P<quote>['"])""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Tok:
    kind: str  # number | string | name | kw | const | op | punct | eof
    value: Any
    pos: int
    text: str


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
            else:
                raise ExprSyntaxError(f"unknown escape '\\{nxt}' at column {i + 1}", i, text)
            continue
        out.append(ch)
        i += 1
    raise ExprSyntaxError(f"unterminated string starting at column {start + 1}", start, text)


def _tokenize(text: str) -> list[_Tok]:
    toks, i = [], 0
    while i < len(text):
        m = _TOKEN_RE.match(text, i)
        if m is None:
            ch = text[i]
            hint = " (use '==' to compare)" if ch == "=" else ""
            raise ExprSyntaxError(f"unexpected character {ch!r} at column {i + 1}{hint}", i, text)
        kind, raw = m.lastgroup, m.group()
        if kind == "quote":
            value, end = _read_string(text, i)
            toks.append(_Tok("string", value, i, text[i:end]))
            i = end
            continue
        if kind == "number":
            if re.match(r"[A-Za-z_]", text[m.end() : m.end() + 1]):
                raise ExprSyntaxError(f"invalid number at column {i + 1}", i, text)
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            toks.append(_Tok("number", value, i, raw))
        elif kind == "name":
            sub = "kw" if raw in _KEYWORDS else "const" if raw in _CONSTANTS else "name"
            toks.append(_Tok(sub, _CONSTANTS[raw] if sub == "const" else raw, i, raw))
        elif kind in ("op", "punct"):
            toks.append(_Tok(kind, raw, i, raw))
        i = m.end()
    toks.append(_Tok("eof", None, len(text), ""))
    return toks


# --------------------------------------------------------------------------- AST

def _render_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        body = value.replace("\\", "\\\\").replace("'", "\\'")
        body = body.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("\0", "\\0")
        return f"'{body}'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render_literal(v) for v in value) + "]"
    return repr(value)


def _short(value: Any, limit: int = 60) -> str:
    text = _render_literal(value) if value is None or isinstance(value, (bool, str, int, float)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Expr:
    """Base class of expression nodes. ``precedence`` drives minimal parentheses in ``str()``."""

    precedence = 6

    def evaluate(self, row: dict) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        out: list[Expr] = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out.extend(value if isinstance(value, tuple) else [value] if isinstance(value, Expr) else [])
        return tuple(out)

    def walk(self) -> Iterator[Expr]:
        """Yield this node and every descendant, left to right."""
        yield self
        for child in self.children():
            yield from child.walk()

    def columns(self) -> set[str]:
        """Columns the expression reads, for static checks: ``parse("a > b").columns() == {"a", "b"}``."""
        return {n.name for n in self.walk() if isinstance(n, Column)}

    def column_order(self) -> list[str]:
        """Referenced columns in order of first appearance (for readable rejection reasons)."""
        return list(dict.fromkeys(n.name for n in self.walk() if isinstance(n, Column)))

    def _wrap(self, child: Expr, min_prec: int) -> str:
        return f"({child})" if child.precedence < min_prec else str(child)


@dataclass(frozen=True)
class Literal(Expr):
    value: Any

    def evaluate(self, row: dict) -> Any:
        return self.value

    def __str__(self) -> str:
        return _render_literal(self.value)


@dataclass(frozen=True)
class Column(Expr):
    name: str

    def evaluate(self, row: dict) -> Any:
        if self.name not in row:
            hint = did_you_mean(self.name, row.keys())
            raise ExprEvalError(f"unknown column '{self.name}'" + (f" — {hint}" if hint else ""))
        return row[self.name]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]

    def evaluate(self, row: dict) -> Any:
        return [item.evaluate(row) for item in self.items]

    def __str__(self) -> str:
        return "[" + ", ".join(str(i) for i in self.items) + "]"


def _where(node: Expr) -> str:
    return f"column '{node.name}'" if isinstance(node, Column) else f"'{node}'"


def _type_error(what: str, node: Expr, value: Any) -> ExprEvalError:
    return ExprEvalError(f"{what}, but {_where(node)} is {type(value).__name__} {_short(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# name -> (accepts value?, implementation, what it needs): the whole function library.
FUNCTIONS = {
    "len": (lambda v: isinstance(v, (str, list, tuple, dict)), len, "len() needs a string or list"),
    "lower": (lambda v: isinstance(v, str), str.lower, "lower() needs a string"),
    "abs": (_is_number, abs, "abs() needs a number"),
}


@dataclass(frozen=True)
class Call(Expr):
    func: str
    arg: Expr

    def evaluate(self, row: dict) -> Any:
        value = self.arg.evaluate(row)
        if value is None:  # None propagates: `len(response) > 10` is just false when missing
            return None
        accepts, fn, need = FUNCTIONS[self.func]
        if not accepts(value):
            raise _type_error(need, self.arg, value)
        return fn(value)

    def __str__(self) -> str:
        return f"{self.func}({self.arg})"


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr
    precedence = 5

    def evaluate(self, row: dict) -> Any:
        value = self.operand.evaluate(row)
        if value is None or _is_number(value):
            return None if value is None else -value
        raise _type_error("unary '-' needs a number", self.operand, value)

    def __str__(self) -> str:
        return "-" + self._wrap(self.operand, 5)


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr
    precedence = 3

    def evaluate(self, row: dict) -> bool:
        return not self.operand.evaluate(row)

    def __str__(self) -> str:
        return "not " + self._wrap(self.operand, 3)


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return 1 if self.op == "or" else 2

    def evaluate(self, row: dict) -> bool:
        if self.op == "and":
            return all(bool(o.evaluate(row)) for o in self.operands)
        return any(bool(o.evaluate(row)) for o in self.operands)

    def __str__(self) -> str:
        # A same-precedence child only appears when the user parenthesised it; keep the parens.
        return f" {self.op} ".join(self._wrap(o, self.precedence + 1) for o in self.operands)


@dataclass(frozen=True)
class Compare(Expr):
    op: str  # == != < <= > >= in "not in"
    left: Expr
    right: Expr
    precedence = 4

    def evaluate(self, row: dict) -> bool:
        a, b = self.left.evaluate(row), self.right.evaluate(row)
        if self.op == "==":
            return a == b
        if self.op == "!=":
            return a != b
        if self.op in ("in", "not in"):
            return self._contains(a, b)
        if a is None or b is None:
            return False  # missing values never pass an ordering test (SQL-like)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) or (
            isinstance(a, str) and isinstance(b, str)
        ):
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]
        raise ExprEvalError(
            f"cannot compare {_where(self.left)} = {type(a).__name__} {_short(a)} "
            f"{self.op} {_where(self.right)} = {type(b).__name__} {_short(b)}"
        )

    def _contains(self, a: Any, b: Any) -> bool:
        negate = self.op == "not in"
        if isinstance(b, (list, tuple)):
            return (a not in b) if negate else (a in b)
        if a is None or b is None:
            return False
        if isinstance(b, str) and isinstance(a, str):
            return (a not in b) if negate else (a in b)
        raise ExprEvalError(
            f"'{self.op}' needs a list or a string on the right and a string on the left, got "
            f"{_where(self.left)} = {type(a).__name__} {_short(a)} and "
            f"{_where(self.right)} = {type(b).__name__} {_short(b)}"
        )

    def __str__(self) -> str:
        return f"{self._wrap(self.left, 5)} {self.op} {self._wrap(self.right, 5)}"


# --------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _is(self, kind: str, value: Any = None) -> bool:
        return self.tok.kind == kind and (value is None or self.tok.value == value)

    def fail(self, message: str, pos: int) -> ExprSyntaxError:
        return ExprSyntaxError(message.replace("@", f"at column {pos + 1}"), pos, self.text)

    def error(self, tok: _Tok, expected: str | None = None) -> ExprSyntaxError:
        what = "end of expression" if tok.kind == "eof" else f"'{tok.text}'"
        return self.fail(f"unexpected {what} @" + (f" (expected {expected})" if expected else ""), tok.pos)

    def _expect(self, kind: str, value: str, expected: str) -> _Tok:
        if not self._is(kind, value):
            raise self.error(self.tok, expected)
        return self._next()

    def parse(self) -> Expr:
        if self.tok.kind == "eof":
            raise self.fail("empty expression", 0)
        node = self.or_expr()
        if self.tok.kind != "eof":
            raise self.error(self.tok, "an operator such as 'and', 'or', '=='")
        return node

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("expression nested too deeply @", self.tok.pos)

    def or_expr(self) -> Expr:
        return self._boolop("or", self.and_expr)

    def and_expr(self) -> Expr:
        return self._boolop("and", self.not_expr)

    def _boolop(self, op: str, sub) -> Expr:
        operands = [sub()]
        while self._is("kw", op):
            self._next()
            operands.append(sub())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def not_expr(self) -> Expr:
        if self._is("kw", "not"):
            self._next()
            self._enter()
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def _compare_op(self) -> str | None:
        if self.tok.kind == "op":
            return self._next().value
        if self._is("kw", "in"):
            self._next()
            return "in"
        if self._is("kw", "not") and self.toks[self.i + 1].kind == "kw" and self.toks[self.i + 1].value == "in":
            self.i += 2
            return "not in"
        return None

    def comparison(self) -> Expr:
        left = self.operand()
        op = self._compare_op()
        if op is None:
            return left
        node = Compare(op, left, self.operand())
        if self.tok.kind == "op" or self._is("kw", "in"):
            raise self.fail("chained comparison @: write 'a < b and b < c'", self.tok.pos)
        return node

    def operand(self) -> Expr:
        self._enter()
        try:
            return self._operand()
        finally:
            self.depth -= 1

    def _operand(self) -> Expr:
        tok = self.tok
        if tok.kind in ("number", "string", "const"):
            self._next()
            return Literal(tok.value)
        if self._is("punct", "-"):
            self._next()
            inner = self.operand()
            # Fold "-3" into a literal so str(parse("x > -3")) stays "x > -3".
            if isinstance(inner, Literal) and _is_number(inner.value):
                return Literal(-inner.value)
            return Neg(inner)
        if self._is("punct", "("):
            self._next()
            node = self.or_expr()
            self._expect("punct", ")", "')'")
            return node
        if self._is("punct", "["):
            self._next()
            items: list[Expr] = []
            while not self._is("punct", "]"):
                items.append(self.or_expr())
                if not self._is("punct", ","):
                    break
                self._next()
            self._expect("punct", "]", "',' or ']'")
            return ListExpr(tuple(items))
        if tok.kind == "name":
            self._next()
            if not self._is("punct", "("):
                return Column(tok.value)
            if tok.value not in FUNCTIONS:
                hint = did_you_mean(tok.value, FUNCTIONS)
                known = ", ".join(sorted(FUNCTIONS))
                raise self.fail(f"unknown function '{tok.value}' @ (available: {known})" + (f" — {hint}" if hint else ""), tok.pos)
            self._next()
            arg = self.or_expr()
            if self._is("punct", ","):
                raise self.fail(f"{tok.value}() takes one argument, got more @", self.tok.pos)
            self._expect("punct", ")", "')'")
            return Call(tok.value, arg)
        raise self.error(tok, "a column, a literal, '(' or '['")


def parse(text: str) -> Expr:
    """Parse filter text into an expression tree; never evaluates anything.

    >>> str(parse("not refused and (score>=4 or teacher in ['a','b'])"))
    "not refused and (score >= 4 or teacher in ['a', 'b'])"
    >>> parse("len(x) > 3)")  # raises ExprSyntaxError: unexpected ')' at column 11
    """
    if not isinstance(text, str):
        raise ExprSyntaxError(f"expression must be a string, got {type(text).__name__}", 0)
    return _Parser(text).parse()
