"""List filters in the Google API filter syntax (AIP-160), evaluated against resource JSON.

Supported: comparisons ``field OP value`` with ``= != < <= > >= :`` (``:`` means "has":
substring for strings, key presence for maps, ``*`` wildcard suffix), dotted fields
(``labels.team``, ``trainingInput.scaleTier``), ``AND``/``OR``/``NOT``/``-``, parentheses and
implicit AND between terms. ``state=RUNNING OR state=QUEUED``, ``labels.owner="ann"``,
``createTime>"2026-01-01T00:00:00Z"``, ``jobId:tune*`` all work.

Parsing errors raise ``invalid("filter", ...)`` naming the position of the problem. Filters are
bounded (:data:`MAX_LENGTH` characters, :data:`MAX_TERMS` comparisons, :data:`MAX_DEPTH` nested
parentheses or NOTs) and evaluated without recursion over AND/OR chains.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from mlengine.errors import invalid

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

    def parse(self) -> Predicate:
        predicate = self.expr()
        if self.peek() is not None:
            raise invalid("filter", f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return predicate

    def expr(self) -> Predicate:
        terms = [self.conjunction()]
        while self.peek() == ("word", "OR"):
            self.take()
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda r: any(term(r) for term in terms)

    def conjunction(self) -> Predicate:
        terms = [self.unary()]
        while True:
            token = self.peek()
            if token is None or token == ("word", "OR") or token == ("paren", ")"):
                break
            if token == ("word", "AND"):
                self.take()
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]
        return lambda r: all(term(r) for term in terms)

    def unary(self) -> Predicate:
        token = self.peek()
        if token == ("word", "NOT"):
            self.take()
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return lambda r: not inner(r)
        if token is not None and token[0] == "word" and token[1].startswith("-") and len(token[1]) > 1:
            self.tokens[self.i] = ("word", token[1][1:])
            self.nested()
            inner = self.unary()
            self.depth -= 1
            return lambda r: not inner(r)
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

    def comparison(self) -> Predicate:
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
        return lambda r: _compare(_lookup(r, field), op, value)


def compile_filter(text: str | None) -> Predicate:
    """Turn a filter string into a predicate over resource JSON; empty → always true."""
    if not text or not text.strip():
        return lambda _r: True
    if len(text) > MAX_LENGTH:
        raise invalid("filter", f"is longer than {MAX_LENGTH} characters")
    return _Parser(_tokenize(text)).parse()
