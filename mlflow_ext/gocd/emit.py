"""A small, fast YAML writer for generated GoCD files: mappings, lists, strings, numbers, booleans.

Output is fixed by the input alone (keys in the order given, no timestamps), passes yamllint's default
rules (document start, sequences indented under their key, true/false only), and reads back with any YAML
1.1 or 1.2 parser to the same data: a string is written plain only when it cannot be read as anything else
(no number, boolean, null or indicator look-alikes), otherwise double-quoted with escapes for every
character YAML does not allow raw. PyYAML's pure-Python dumper is about ten times slower on the generator's
5,000-model catalog and indents sequences the way yamllint rejects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*(?: [A-Za-z0-9_./-]+)*$")
_SPECIAL = re.compile(r"^(?:y|n|yes|no|on|off|true|false|null|nan|inf)$", re.IGNORECASE)
# Characters YAML does not accept raw (C0/C1 controls, surrogates, BOM, line and paragraph separators).
_ESCAPE = re.compile('[\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]')
_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def scalar(value: Any) -> str:
    """One scalar as YAML text."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    if _PLAIN.fullmatch(value) and not _SPECIAL.fullmatch(value):
        return value
    return '"' + _ESCAPE.sub(_escape, value) + '"'


def dump(data: Mapping[str, Any], header: str = "") -> str:
    """A YAML document for a mapping, with ``header`` as comment lines on top."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("---")
    if len(_CACHE) > 50_000:
        _CACHE.clear()
    _mapping(data, "", lines, _CACHE)
    lines.append("")
    return "\n".join(lines)


# Scalars already written: generated files repeat most of theirs (commands, flags, paths).
_CACHE: dict[str, str] = {}


def _text(value: Any, cache: dict[str, str]) -> str:
    if type(value) is str:
        text = cache.get(value)
        if text is None:
            text = cache[value] = scalar(value)
        return text
    return scalar(value)


def _mapping(data: Mapping[str, Any], indent: str, lines: list[str], cache: dict[str, str]) -> None:
    inner = indent + "  "
    for key, value in data.items():
        head = f"{indent}{_text(key, cache)}:"
        kind = type(value)
        if kind is dict or (kind is not list and isinstance(value, Mapping)):
            if value:
                lines.append(head)
                _mapping(value, inner, lines, cache)
            else:
                lines.append(head + " {}")
        elif kind is list:
            if value:
                lines.append(head)
                _sequence(value, inner, lines, cache)
            else:
                lines.append(head + " []")
        else:
            lines.append(f"{head} {_text(value, cache)}")


def _sequence(items: list[Any], indent: str, lines: list[str], cache: dict[str, str]) -> None:
    inner = indent + "  "
    for item in items:
        kind = type(item)
        nested = kind is dict or kind is list or isinstance(item, Mapping)
        if nested and item:
            start = len(lines)
            if kind is list:
                _sequence(item, inner, lines, cache)
            else:
                _mapping(item, inner, lines, cache)
            lines[start] = f"{indent}- {lines[start][len(inner) :]}"
        elif nested:
            lines.append(f"{indent}- {'[]' if kind is list else '{}'}")
        else:
            lines.append(f"{indent}- {_text(item, cache)}")
