"""List filters in the Google API filter syntax (AIP-160), evaluated against resource JSON.

Supported: comparisons ``field OP value`` with ``= != < <= > >= :`` (``:`` means "has":
substring for strings, key presence for maps, ``*`` wildcard suffix), dotted fields
(``labels.team``, ``trainingInput.scaleTier``), ``AND``/``OR``/``NOT``/``-``, parentheses and
implicit AND between terms. ``state=RUNNING OR state=QUEUED``, ``labels.owner="ann"``,
``createTime>"2026-01-01T00:00:00Z"``, ``jobId:tune*`` all work.

Values that both look like RFC 3339 timestamps (``createTime>"2026-01-01T00:00:00Z"``) compare
as instants, not as strings (``...00.5Z`` is after ``...00Z``).

Parsing errors raise ``invalid("filter", ...)`` naming the position of the problem. Filters are
bounded (:data:`MAX_LENGTH` characters, :data:`MAX_TERMS` comparisons, :data:`MAX_DEPTH` nested
parentheses or NOTs) and evaluated without recursion over AND/OR chains.

:func:`parse_filter` returns the expression as a small tree (:data:`Node`) so a repository can
compile what it can to SQL (:func:`to_sql`) and evaluate only the rest in Python.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlengine.errors import invalid

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement

Predicate = Callable[[Mapping[str, Any]], bool]

MAX_LENGTH = 4096
MAX_TERMS = 200
MAX_DEPTH = 32

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|(?P<op><=|>=|!=|=|<|>|:)'
    r"|(?P<paren>[()])|(?P<word>[^\s()=<>!:\"']+))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise invalid("filter", f"cannot parse {text!r} at position {pos}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            try:
                value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
            except UnicodeDecodeError as exc:
                raise invalid("filter", f"bad escape sequence in the string at position {pos}: {exc.reason}") from None
        tokens.append((kind, value))
        pos = m.end()
    return tokens


def _lookup(resource: Mapping[str, Any], path: str) -> Any:
    current: Any = resource
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return None
    return current


def _coerce_pair(actual: Any, expected: str) -> tuple[Any, Any]:
    if isinstance(actual, bool):
        return actual, expected.lower() == "true"
    if isinstance(actual, (int, float)):
        try:
            return actual, float(expected)
        except ValueError:
            return str(actual), expected
    return ("" if actual is None else str(actual)), expected


_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An RFC 3339 timestamp (``2026-01-01T00:00:00Z``, fractions to nanoseconds, offsets) as an
    aware UTC datetime (microsecond precision, truncated); None if ``text`` is not one."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return None
    micros = int(((m[7] or "") + "000000")[:6])
    zone = m[8].upper()
    if zone == "Z":
        tz = dt.timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        value = dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), micros, tzinfo=tz)
        return value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _compare(actual: Any, op: str, expected: str) -> bool:
    if op == ":":
        if isinstance(actual, Mapping):
            return expected == "*" or expected in actual
        if isinstance(actual, list):
            return any(_compare(item, ":", expected) for item in actual)
        if actual is None:
            return False
        text = str(actual)
        if expected == "*":
            return True
        if expected.endswith("*"):
            return text.startswith(expected[:-1])
        return expected in text
    left, right = _coerce_pair(actual, expected)
    if isinstance(left, str) and isinstance(right, str) and left[:1].isdigit() and right[:1].isdigit():
        when, at = parse_timestamp(left), parse_timestamp(right)
        if when is not None and at is not None:
            left, right = when, at
    if op == "=":
        if isinstance(right, str) and right.endswith("*") and isinstance(left, str):
            return left.startswith(right[:-1])
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    try:
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
    except TypeError:
        return False
    raise invalid("filter", f"unknown operator {op!r}")




# The expression tree ----------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class All:
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    terms: tuple[Node, ...]


Node = Comparison | Not | All | AnyOf


def evaluate(node: Node, resource: Mapping[str, Any]) -> bool:
    """Whether ``resource`` (API JSON) matches ``node``; recursion only as deep as the filter's
    parentheses and NOTs (at most :data:`MAX_DEPTH`)."""
    if isinstance(node, Comparison):
        return _compare(_lookup(resource, node.field), node.op, node.value)
    if isinstance(node, Not):
        return not evaluate(node.inner, resource)
    if isinstance(node, All):
        return all(evaluate(term, resource) for term in node.terms)
    return any(evaluate(term, resource) for term in node.terms)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.terms = 0

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise invalid("filter", f"parentheses and NOTs are nested deeper than {MAX_DEPTH} levels")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise invalid("filter", "unexpected end of the filter expression")
        self.i += 1
        return token

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise invalid("filter", f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        terms = [self.conjunction()]
        while self.peek() == ("word", "OR"):
            self.take()
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))

    def conjunction(self) -> Node:
        terms = [self.unary()]
        while True:
            token = self.peek()
            if token is None or token == ("word", "OR") or token == ("paren", ")"):
                break
            if token == ("word", "AND"):
                self.take()
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else All(tuple(terms))

    def unary(self) -> Node:
        token = self.peek()
        if token == ("word", "NOT"):
            self.take()
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return Not(inner)
        if token is not None and token[0] == "word" and token[1].startswith("-") and len(token[1]) > 1:
            self.tokens[self.i] = ("word", token[1][1:])
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return Not(inner)
        if token == ("paren", "("):
            self.take()
            self.nested()
            inner = self.expr()
            if self.take() != ("paren", ")"):
                raise invalid("filter", "missing ')'")
            self.depth -= 1
            return inner
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise invalid("filter", f"more than {MAX_TERMS} comparisons")
        return self.comparison()

    def comparison(self) -> Comparison:
        kind, field = self.take()
        if kind not in ("word", "str"):
            raise invalid("filter", f"expected a field name, got {field!r}")
        token = self.peek()
        if token is None or token[0] != "op":
            raise invalid("filter", f"expected an operator after {field!r} (one of = != < <= > >= :)")
        op = self.take()[1]
        vkind, value = self.take()
        if vkind not in ("word", "str"):
            raise invalid("filter", f"expected a value after {field}{op}")
        return Comparison(field, op, value)


def parse_filter(text: str | None) -> Node | None:
    """The expression tree of a filter string; None for an empty filter (everything matches)."""
    if not text or not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise invalid("filter", f"is longer than {MAX_LENGTH} characters")
    return _Parser(_tokenize(text)).parse()


def compile_filter(text: str | None) -> Predicate:
    """Turn a filter string into a predicate over resource JSON; empty → always true."""
    node = parse_filter(text)
    if node is None:
        return lambda _r: True
    return lambda r: evaluate(node, r)


# SQL ----------------------------------------------------------------------------------------

#: Compiles one comparison on a field to an *exact* SQL condition (same answer as
#: :func:`evaluate` on the rendered resource for every row), or None if it cannot.
FieldCompiler = Callable[[Comparison], "ColumnElement[bool] | None"]


@dataclass(frozen=True)
class SqlFilter:
    """``where`` narrows the rows (None: no narrowing); ``exact`` says it alone decides, so the
    filter need not be evaluated in Python on the rows it selects."""

    where: ColumnElement[bool] | None
    exact: bool


def to_sql(node: Node | None, fields: Callable[[str], FieldCompiler | None]) -> SqlFilter:
    """Compile what can be compiled of ``node`` (``fields(name)`` gives the compiler of a field,
    None for a field only Python knows). The result never excludes a matching row: an AND keeps
    its compilable terms, an OR or a NOT compiles only if all of it does exactly."""
    from sqlalchemy import and_, not_, or_

    if node is None:
        return SqlFilter(None, True)
    if isinstance(node, Comparison):
        compiler = fields(node.field)
        where = compiler(node) if compiler is not None else None
        return SqlFilter(where, where is not None)
    if isinstance(node, Not):
        inner = to_sql(node.inner, fields)
        return SqlFilter(not_(inner.where), True) if inner.exact and inner.where is not None else SqlFilter(None, False)
    parts = [to_sql(term, fields) for term in node.terms]
    if isinstance(node, All):
        clauses = [p.where for p in parts if p.where is not None]
        where = and_(*clauses) if clauses else None
        return SqlFilter(where, all(p.exact for p in parts))
    if any(p.where is None for p in parts):
        return SqlFilter(None, False)
    return SqlFilter(or_(*[p.where for p in parts if p.where is not None]), all(p.exact for p in parts))


def _prefix(expression: Any, prefix: str) -> ColumnElement[bool]:
    """``expression`` starts with ``prefix``, case-sensitively in SQLite and PostgreSQL alike
    (``LIKE`` ignores case in SQLite)."""
    from sqlalchemy import func, true

    if not prefix:
        return true()
    return func.substr(expression, 1, len(prefix)) == prefix


def string_compiler(expression: Any) -> FieldCompiler:
    """A text expression that is never NULL and renders as itself (``state``, ``jobId``):
    ``=`` and ``!=`` (``=x*`` a prefix), ``:*`` and ``:x*``. Ordering and substrings depend on
    the database's collation and functions: they are left to Python."""

    def compile(c: Comparison) -> ColumnElement[bool] | None:
        from sqlalchemy import true

        if c.op == "=":
            return _prefix(expression, c.value[:-1]) if c.value.endswith("*") else expression == c.value
        if c.op == "!=":
            return expression != c.value
        if c.op == ":" and c.value == "*":
            return true()
        if c.op == ":" and c.value.endswith("*"):
            return _prefix(expression, c.value[:-1])
        return None

    return compile


def optional_string_compiler(expression: Any) -> FieldCompiler:
    """A text expression that is NULL when the field is absent (a label): absent compares as
    ``""`` for ``=``/``!=`` and never has (``:``) anything."""
    from sqlalchemy import func

    present = string_compiler(func.coalesce(expression, ""))

    def compile(c: Comparison) -> ColumnElement[bool] | None:
        if c.op == ":" and c.value.endswith("*"):
            return expression.is_not(None) & _prefix(expression, c.value[:-1])
        return present(c)

    return compile


def timestamp_compiler(column: Any) -> FieldCompiler:
    """A timestamp column that is never NULL and renders as RFC 3339 with microseconds: every
    comparison but ``:`` with an RFC 3339 value."""
    import operator

    ops = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge}

    def compile(c: Comparison) -> ColumnElement[bool] | None:
        when = parse_timestamp(c.value) if c.op in ops else None
        if when is None:
            return None
        return ops[c.op](column, when)

    return compile
