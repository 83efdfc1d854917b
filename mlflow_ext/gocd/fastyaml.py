"""A reader for the block-style YAML subset that mlflow_ext.gocd.emit writes, giving PyYAML's answers.

Reading 5,000 generated files back is most of `mlflow-ext gocd validate`'s time, and most of that is PyYAML
building node objects. This reader handles only what ``emit.dump`` writes: full-line comments before
``---``, block mappings and sequences indented by two, ``- key: value`` items, plain scalars that can only be
strings, decimal integers, ``true``/``false``/``null``, double-quoted strings with the escapes ``emit`` uses,
and ``{}``/``[]``. Anything else (a flow collection, an anchor, a comment after a value, a tab, an odd indent,
a duplicate key, any plain scalar YAML 1.1 could read as something else) raises ``FastYamlUnsupported``,
and the caller parses the file with PyYAML instead, so the result is always PyYAML's.
"""

from __future__ import annotations

import re
from typing import Any

from mlflow_ext.errors import FastYamlUnsupported
from mlflow_ext.gocd.emit import _PLAIN, _SPECIAL

_INT = re.compile(r"0|-?[1-9][0-9]*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_SIMPLE = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\x00"}
# Characters PyYAML refuses raw in a stream, plus tabs (indentation and separators here are spaces only).
_RAW_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff\t\r]")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    simple = _SIMPLE.get(code)
    if simple is not None:
        return simple
    if code[0] in "xuU" and len(code) > 1:
        char = chr(int(code[1:], 16))
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise FastYamlUnsupported("surrogate escape")
        return char
    raise FastYamlUnsupported(f"escape \\{code}")


def _scalar(text: str) -> Any:
    if text[0] == '"':
        match = _QUOTED.fullmatch(text)
        if match is None:
            raise FastYamlUnsupported("quoted scalar")
        body = match.group(1)
        return _ESCAPE.sub(_unescape, body) if "\\" in body else body
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if _PLAIN.fullmatch(text):
        if _SPECIAL.fullmatch(text):
            if text in _WORDS:
                return _WORDS[text]
            raise FastYamlUnsupported(f"plain {text!r}")
        return text
    if _INT.fullmatch(text):
        return int(text)
    raise FastYamlUnsupported(f"plain {text!r}")


_WORDS = {"true": True, "false": False, "null": None}
# Immutable answers already worked out (strings, numbers, booleans): files repeat most of their scalars.
_KNOWN: dict[str, Any] = {}
_KNOWN_LIMIT = 50_000


def _value(text: str) -> Any:
    known = _KNOWN.get(text, _KNOWN)
    if known is not _KNOWN:
        return known
    value = _scalar(text)
    if not isinstance(value, (dict, list)) and len(_KNOWN) < _KNOWN_LIMIT:
        _KNOWN[text] = value
    return value


_KEYS: set[str] = set()


def _key(text: str) -> tuple[str, str]:
    """A ``key: rest`` line (without its indent): the key and what follows ``:``."""
    if text[0] == '"':
        match = _QUOTED.match(text)
        if match is None:
            raise FastYamlUnsupported("quoted key")
        key = _scalar(match.group(0))
        rest = text[match.end() :]
    else:
        colon = text.find(":")
        if colon <= 0:
            raise FastYamlUnsupported("not a mapping entry")
        key, rest = text[:colon], text[colon:]
        if key not in _KEYS:
            if not _PLAIN.fullmatch(key) or _SPECIAL.fullmatch(key):
                raise FastYamlUnsupported(f"key {key!r}")
            if len(_KEYS) < _KNOWN_LIMIT:
                _KEYS.add(key)
    if rest == ":":
        return key, ""
    if not rest.startswith(": ") or rest[2:3] in ("", " "):
        raise FastYamlUnsupported("mapping entry")
    return key, rest[2:]


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.indents = [len(line) - len(line.lstrip(" ")) for line in lines]
        self.contents = [line.lstrip(" ") for line in lines]
        self.end = len(lines)
        self.pos = 0

    def block(self, indent: int) -> Any:
        content = self.contents[self.pos]
        if content == "-" or content.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def nested(self, parent: int) -> Any:
        """The block under a ``key:`` or ``-`` at indent ``parent``: exactly two more spaces."""
        if self.pos >= self.end or self.indents[self.pos] != parent + 2:
            raise FastYamlUnsupported("empty or oddly indented block")
        return self.block(parent + 2)

    def mapping(self, indent: int, first: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        indents, contents, end = self.indents, self.contents, self.end
        while self.pos < end:
            if first is not None:
                content, first = first, None
            else:
                if indents[self.pos] != indent:
                    break
                content = contents[self.pos]
                if content[0] == "-":
                    break
            key, rest = _key(content)
            if key in result:
                raise FastYamlUnsupported("duplicate key")
            self.pos += 1
            result[key] = self.nested(indent) if rest == "" else _value(rest)
        if self.pos < end and indents[self.pos] > indent:
            raise FastYamlUnsupported("indentation")
        return result

    def sequence(self, indent: int) -> list[Any]:
        result: list[Any] = []
        indents, contents, end = self.indents, self.contents, self.end
        while self.pos < end:
            if indents[self.pos] != indent:
                break
            content = contents[self.pos]
            if content == "-":
                self.pos += 1
                result.append(self.nested(indent))
                continue
            if not content.startswith("- "):
                break
            item = content[2:]
            if not item or item[0] in " -":
                raise FastYamlUnsupported("nested sequence item")
            quoted = item[0] == '"'
            if (quoted and _QUOTED.fullmatch(item)) or (not quoted and ":" not in item):
                self.pos += 1
                result.append(_value(item))
            else:
                result.append(self.mapping(indent + 2, first=item))
        if self.pos < end and indents[self.pos] > indent:
            raise FastYamlUnsupported("indentation")
        return result


def load(text: str) -> Any:
    """The document in ``text`` as PyYAML would read it, or FastYamlUnsupported."""
    if (
        _RAW_REFUSED.search(text)
        or "\ufeff" in text
        or "\x85" in text
        or "\u2028" in text
        or "\u2029" in text
    ):
        raise FastYamlUnsupported("characters")
    lines = text.split("\n")
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    if start >= len(lines) or lines[start] != "---":
        raise FastYamlUnsupported("no document start after the header")
    body = lines[start + 1 :]
    while body and body[-1] == "":
        body.pop()
    if not body:
        raise FastYamlUnsupported("empty document")
    reader = _Reader(body)
    if reader.indents[0] != 0 or not all(reader.contents):
        raise FastYamlUnsupported("layout")
    value = reader.block(0)
    if reader.pos != len(body):
        raise FastYamlUnsupported("trailing content")
    return value
