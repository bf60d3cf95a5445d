"""gcloud's ``--format`` grammar (the subset scripts use) and its printers.

``NAME[ATTRS](COLUMNS)``, for example ``json``, ``yaml``, ``value(state)``,
``value(trainingInput.scaleTier, labels)``, ``csv[no-heading](jobId,state)``,
``table[box](jobId:label=JOB, createTime.date(), trainingInput.args[0])``.

- Names: ``json``, ``yaml``, ``csv``, ``value``, ``table``, ``none`` and ``default`` (the
  command's own output). ``csv``, ``value`` and ``table`` without columns take the command's
  default columns (its table); a command that prints one resource has none, so they need columns
  there ("requires a non-empty projection", as gcloud says).
- Keys: dotted field names with list indices (``trainingOutput.trials[0].trialId``), a column
  label (``:label=NAME``), and the transforms ``basename()``, ``date()``, ``join(SEP)``,
  ``len()``, ``lower()``, ``upper()``, ``yesno(YES, NO)``. A missing key is empty.
- ``value``: one line per resource, columns separated by a tab, list items by ``;``, a mapping
  as ``k=v;k2=v2`` (sorted), nothing for null; attributes ``separator``, ``delimiter``,
  ``terminator``, ``quote``. ``csv``: the same with ``,`` and a heading of the lower-case labels;
  attributes ``no-heading``, ``separator``, ``delimiter``, ``terminator``, ``no-quote``.
- ``table``: upper-case ANGRY_SNAKE_CASE headings from the last key part (``scaleTier`` ->
  ``SCALE_TIER``), columns two spaces apart; attributes ``no-heading`` and ``box``.
- ``json``/``yaml`` with columns print only those keys (nested as in the resource); ``yaml``
  prints a list as documents separated by ``---``, as gcloud does.

Parsing happens when the option is read (:func:`parse`): a bad format is a usage error before
any request is sent. Pure functions only; yaml is imported when something is printed as YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMES = ("csv", "default", "json", "none", "table", "value", "yaml")
NEEDS_COLUMNS = ("csv", "table", "value")
_MISSING = object()
_SNAKE = re.compile(r"((?<=[a-z0-9])[A-Z]+|(?!^)[A-Z](?=[a-z]))")
_SEGMENT = re.compile(r"([A-Za-z_@$][\w@$-]*)?((?:\[-?\d+\])*)$")


class FormatError(ValueError):
    """A ``--format`` that cannot be parsed or used; ``str()`` is the message for the user."""


@dataclass(frozen=True)
class Transform:
    name: str
    args: tuple[str, ...] = ()
    kwargs: tuple[tuple[str, str], ...] = ()

    def arg(self, index: int, name: str, default: str) -> str:
        """Argument ``index`` or ``name=`` (gcloud takes either)."""
        named = dict(self.kwargs)
        if name in named:
            return named[name]
        return self.args[index] if index < len(self.args) else default


@dataclass(frozen=True)
class Column:
    key: tuple[str | int, ...]
    transforms: tuple[Transform, ...] = ()
    label: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    text: str = ""

    @property
    def bare(self) -> bool:
        """No columns given: the command's default columns apply (if any)."""
        return not self.columns


# Parsing ------------------------------------------------------------------------------------
def _split(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets, parentheses and quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote or depth:
        raise FormatError(f"unbalanced quotes or brackets in {text!r}")
    parts.append("".join(current))
    return parts


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def _unquote(text: str) -> str:
    """An attribute or argument value: quotes removed, ``\\n`` and ``\\t`` made real (gcloud
    asks for them escaped, e.g. ``separator="\\n"``)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _attrs(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in _split(text):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        attrs[name.strip()] = _unquote(value) if sep else ""
    return attrs


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start``."""
    pairs = {"(": ")", "[": "]"}
    opening, depth, quote = text[start], 0, ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == opening:
            depth += 1
        elif ch == pairs[opening]:
            depth -= 1
            if depth == 0:
                return i
    raise FormatError(f"no closing {pairs[opening]!r} in {text!r}")


TRANSFORMS = ("basename", "date", "join", "len", "lower", "upper", "yesno")


def _column(text: str) -> Column:
    spec, _, options = text.strip().partition(":")
    label = None
    for option in filter(None, (o.strip() for o in options.split(":"))):
        name, _, value = option.partition("=")
        if name.strip() == "label":
            label = _unquote(value)
        elif name.strip() not in ("sort", "reverse", "align", "optional", "wrap"):
            raise FormatError(f"unknown column attribute {name.strip()!r} in {text.strip()!r}")
    key: list[str | int] = []
    transforms: list[Transform] = []
    rest = spec.strip()
    if not rest:
        raise FormatError("an empty column")
    for part in _split(rest, "."):
        part = part.strip()
        if "(" in part:
            name, _, args = part.partition("(")
            if not part.endswith(")") or name not in TRANSFORMS:
                raise FormatError(f"unknown transform {part!r} (use one of {', '.join(TRANSFORMS)})")
            positional: list[str] = []
            named: list[tuple[str, str]] = []
            for arg in filter(str.strip, _split(args[:-1])):
                keyword = re.match(r"\s*([A-Za-z_]\w*)\s*=(.*)$", arg, re.S)
                if keyword:
                    named.append((keyword.group(1), _unquote(keyword.group(2))))
                else:
                    positional.append(_unquote(arg))
            transforms.append(Transform(name, tuple(positional), tuple(named)))
            continue
        if transforms:
            raise FormatError(f"a key cannot follow a transform in {spec.strip()!r}")
        match = _SEGMENT.match(part)
        if not match or not part:
            raise FormatError(f"{part!r} is not a key in {spec.strip()!r}")
        if match.group(1):
            key.append(match.group(1))
        key += [int(i) for i in re.findall(r"-?\d+", match.group(2))]
    return Column(tuple(key), tuple(transforms), label)


def parse(text: str) -> Format:
    """A :class:`Format` for ``--format TEXT``; :class:`FormatError` naming the problem."""
    source = text.strip()
    match = re.match(r"[A-Za-z-]+", source)
    name = match.group(0) if match else ""
    if name not in NAMES:
        raise FormatError(f"Format must be one of {', '.join(NAMES)}; received [{name or source}].")
    rest = source[len(name):].strip()
    attrs: dict[str, str] = {}
    columns: tuple[Column, ...] = ()
    while rest:
        if rest[0] not in "[(":
            raise FormatError(f"unexpected {rest!r} in format {source!r}")
        end = _closing(rest, 0)
        inner = rest[1:end]
        if rest[0] == "[":
            attrs.update(_attrs(inner))
        else:
            columns += tuple(_column(c) for c in _split(inner) if c.strip())
        rest = rest[end + 1:].strip()
    return Format(name, attrs, columns, source)


# Values -------------------------------------------------------------------------------------
def lookup(resource: Any, key: Sequence[str | int]) -> Any:
    """The value at ``key`` in ``resource``, or None."""
    value = resource
    for part in key:
        in_list = isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value)
        if not (in_list or (isinstance(part, str) and isinstance(value, dict) and part in value)):
            return None
        value = value[part]
    return value


def _date(value: Any) -> Any:
    text = str(value or "")
    if "." in text and text.endswith("Z"):
        return text.split(".", 1)[0] + "Z"
    return value


_FUNCS: dict[str, Callable[[Any, Transform], Any]] = {
    "basename": lambda v, _t: v.rsplit("/", 1)[-1] if isinstance(v, str) else v,
    "date": lambda v, _t: _date(v),
    "join": lambda v, t: t.arg(0, "sep", ",").join(str(x) for x in v) if isinstance(v, list) else v,
    "len": lambda v, _t: len(v) if isinstance(v, (list, dict, str)) else 0,
    "lower": lambda v, _t: v.lower() if isinstance(v, str) else v,
    "upper": lambda v, _t: v.upper() if isinstance(v, str) else v,
    "yesno": lambda v, t: t.arg(0, "yes", "Yes") if v else t.arg(1, "no", "No"),
}


def value_of(resource: Any, column: Column) -> Any:
    value = lookup(resource, column.key)
    for transform in column.transforms:
        if value is None and transform.name not in ("yesno", "len"):
            break
        value = _FUNCS[transform.name](value, transform)
    return value


def labels(columns: Sequence[Column]) -> list[str]:
    """gcloud's headings: the label, else the key's last name in ANGRY_SNAKE_CASE, adding parts
    from the right while it repeats an earlier heading."""
    seen: set[str] = set()
    result = []
    for column in columns:
        if column.label is not None:
            result.append(column.label)
            continue
        label = ""
        for part in reversed(column.key):
            if isinstance(part, str):
                snake = _SNAKE.sub(r"_\1", part).upper()
                label = f"{snake}_{label}" if label else snake
                if label not in seen:
                    break
        seen.add(label)
        result.append(label)
    return result


def _text(value: Any) -> str:
    """A table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# Printers -----------------------------------------------------------------------------------
def _separated(fmt: Format, rows: list[list[Any]], heading: list[str] | None) -> str:
    """``csv`` and ``value`` (gcloud's CsvPrinter and ValuePrinter)."""
    is_csv = fmt.name == "csv"
    attrs = fmt.attrs
    delimiter = attrs.get("delimiter", ";")
    separator = attrs.get("separator", "," if is_csv else "\t")
    terminator = attrs.get("terminator", "\n")
    quote = ('"' if "no-quote" not in attrs else "") if is_csv else ('"' if "quote" in attrs else "")

    def quoted(text: str) -> str:
        if not text or not quote:
            return text
        if not any(s and s in text for s in (delimiter, quote, separator, terminator)) and \
                not (text[0].isspace() or text[-1].isspace()):
            return text
        return quote + text.replace(quote, quote * 2) + quote

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, dict):
            return delimiter.join(quoted(f"{k}={_plain(v)}") for k, v in sorted(value.items()))
        if isinstance(value, list):
            return delimiter.join(quoted(_plain(x)) if x else "" for x in value)
        return quoted(_plain(value))

    out = []
    if heading is not None and is_csv and "no-heading" not in attrs:
        out.append(separator.join(quoted(h.lower()) for h in heading) + terminator)
    out += [separator.join(cell(v) for v in row) + terminator for row in rows]
    return "".join(out)


def _plain(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(fmt: Format, rows: list[list[Any]], heading: list[str]) -> str:
    cells = [[_text(v) for v in row] for row in rows]
    show_heading = "no-heading" not in fmt.attrs
    widths = [max([len(h) if show_heading else 0] + [len(r[i]) for r in cells]) for i, h in enumerate(heading)]
    if "box" in fmt.attrs:
        def boxed(values: Sequence[str]) -> str:
            return "│ " + " │ ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " │"

        def rule(left: str, mid: str, right: str) -> str:
            return left + mid.join("─" * (w + 2) for w in widths) + right

        lines = [rule("┌", "┬", "┐")]
        if show_heading:
            lines += [boxed(heading), rule("├", "┼", "┤")]
        lines += [boxed(r) for r in cells] + [rule("└", "┴", "┘")]
        return "\n".join(lines) + "\n"

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    lines = ([line(heading)] if show_heading else []) + [line(r) for r in cells]
    return "".join(f"{x}\n" for x in lines)


def project(resource: Any, columns: Sequence[Column]) -> Any:
    """``resource`` reduced to ``columns`` for json/yaml (nested like the resource; a column
    with transforms is keyed by its label)."""
    if not columns:
        return resource
    result: dict[str, Any] = {}
    for column, label in zip(columns, labels(columns), strict=True):
        value = value_of(resource, column)
        if column.transforms or column.label or not all(isinstance(p, str) for p in column.key):
            result[column.label or label.lower()] = value
            continue
        target = result
        for part in column.key[:-1]:
            target = target.setdefault(str(part), {})
        target[str(column.key[-1])] = value
    return result


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def to_yaml(value: Any) -> str:
    import yaml

    return str(yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True))


def render(value: Any, fmt: Format, *, many: bool, default_columns: Sequence[Column] = ()) -> str:
    """``value`` (one resource, or a list of them when ``many``) printed as ``fmt``; the text
    ends with a newline unless it is empty. ``default_columns`` stand in for a bare
    ``csv``/``value``/``table``."""
    if fmt.name == "none":
        return ""
    columns = fmt.columns or tuple(default_columns)
    items = list(value) if many else [value]
    if fmt.name == "json":
        shown = [project(i, fmt.columns) for i in items]
        return to_json(shown if many else shown[0]) + "\n"
    if fmt.name in ("yaml", "default"):
        shown = [project(i, fmt.columns) for i in items]
        if not many:
            return to_yaml(shown[0])
        return "---\n".join(to_yaml(i) for i in shown)
    if not columns:
        raise FormatError(f"Format [{fmt.name}] requires a non-empty projection, e.g. "
                          f"{fmt.name}(name,state).")
    rows = [[value_of(i, c) for c in columns] for i in items]
    heading = labels(columns)
    if fmt.name == "table":
        return _table(fmt, rows, heading) if rows else ""
    return _separated(fmt, rows, heading if rows else None)


def columns_of(text: str) -> tuple[Column, ...]:
    """The columns of a projection written like gcloud's, e.g. ``table(name.basename(), state)``
    (a command's default table)."""
    return parse(text).columns
