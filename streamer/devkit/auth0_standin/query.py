"""The Lucene subset streamer sends to `GET /api/v2/users` and `GET /api/v2/logs` (`q`), and
Auth0's `fields` projection: pure functions over JSON objects."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

Terms = list[tuple[str, list[str]]]

_VALUE = r'"(?:[^"\\]|\\.)*"'
_TERM = re.compile(
    r"\s*(?P<field>[A-Za-z_$][\w.$]*):(?:(?P<quoted>" + _VALUE + r")|\((?P<group>[^()]*)\)"
    r'|(?P<bare>[^\s"()]+))\s*'
)
_AND = re.compile(r"AND\s+")


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def _term_values(match: re.Match[str]) -> list[str]:
    if match.group("quoted") is not None:
        return [_unquote(match.group("quoted"))]
    if match.group("group") is not None:
        group = match.group("group")
        quoted = re.findall(_VALUE, group)
        rest = re.sub(_VALUE, " ", group).split()
        if not quoted or rest != ["OR"] * (len(quoted) - 1):
            raise ValueError("a group must be quoted values separated by OR")
        return [_unquote(v) for v in quoted]
    return [match.group("bare")]


def parse_query(q: str) -> Terms:
    """The Lucene subset streamer sends: `f:"a"`, `f:("a" OR "b")`, `f:bare`, joined by AND.

    Returns [(field, accepted values)]; raises ValueError for anything else.
    """
    terms: Terms = []
    pos = 0
    while True:
        match = _TERM.match(q, pos)
        if not match:
            raise ValueError(f"cannot parse query at character {pos}")
        terms.append((match.group("field"), _term_values(match)))
        pos = match.end()
        if pos >= len(q):
            return terms
        joiner = _AND.match(q, pos)
        if not joiner:
            raise ValueError(f"expected AND at character {pos}")
        pos = joiner.end()


def field_value(obj: dict[str, Any], dotted: str) -> Any:
    """`app_metadata.plan` of an object, None when absent."""
    value: Any = obj
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(obj: dict[str, Any], terms: Terms) -> bool:
    """Every term matches (values: exact; `*` wildcards; booleans as true/false; email ignores case)."""
    for name, values in terms:
        actual = field_value(obj, name)
        if actual is None:
            return False
        if isinstance(actual, bool):
            actual = "true" if actual else "false"
        text = str(actual)
        if name == "email":
            text = text.lower()
        wanted = [v.lower() if name == "email" else v for v in values]
        if not any(fnmatch.fnmatchcase(text, w) if "*" in w else text == w for w in wanted):
            return False
    return True


def project(obj: dict[str, Any], fields: str | None, include: bool) -> dict[str, Any]:
    """Auth0's `fields` + `include_fields`."""
    if not fields:
        return obj
    names = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in obj.items() if (k in names) == include}
