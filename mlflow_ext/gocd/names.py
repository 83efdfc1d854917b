"""GoCD's naming rules, and the names the generator derives from MLflow model and alias names.

GoCD accepts pipeline, stage, job, material, group and environment names matching
``[a-zA-Z0-9_-][a-zA-Z0-9_.-]*`` of at most 255 characters, and compares pipeline names without regard to
case. MLflow model names are free text, so they are sanitised: every character outside the rule becomes
``_`` and a leading ``.`` gets a ``_`` in front. Sanitising can make two names equal (``fraud model`` and
``fraud_model``, or ``Iris`` and ``iris`` for GoCD): that is an error naming both, never a silent suffix,
because a pipeline's name is its history in GoCD and must not change when another model is added. A
catalog entry resolves it with an explicit ``gocd_name``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mlflow_ext.errors import PipelineError

MAX_LENGTH = 255
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")

BUILD_SUFFIX = "-build"
RELEASE_INFIX = "-release-"


def is_valid(name: str) -> bool:
    """True when GoCD accepts ``name`` as a pipeline, stage, job, material or group name."""
    return len(name) <= MAX_LENGTH and bool(_NAME.fullmatch(name))


def sanitise(name: str) -> str:
    """The GoCD name for free text: invalid characters become ``_``; never longer than the input."""
    if not name:
        raise PipelineError("an empty name cannot become a GoCD name")
    cleaned = _INVALID.sub("_", name)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return cleaned


def build_pipeline(model: str) -> str:
    """``<model>-build`` for a sanitised model name."""
    return f"{model}{BUILD_SUFFIX}"


def release_pipeline(model: str, alias: str) -> str:
    """``<model>-release-<alias>`` for a sanitised model name and alias."""
    return f"{model}{RELEASE_INFIX}{alias}"


def find_collisions(names: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Pairs of distinct originals whose GoCD names are equal ignoring case.

    ``names`` holds (original, gocd_name) pairs; the answer holds (first original, second original,
    gocd_name) for each clash, the first in input order.
    """
    seen: dict[str, str] = {}
    clashes = []
    for original, gocd_name in names:
        key = gocd_name.lower()
        first = seen.setdefault(key, original)
        if first != original:
            clashes.append((first, original, gocd_name))
    return clashes


def fnmatch_literal(text: str) -> str:
    """A pattern that fnmatch matches against ``text`` only (``*``, ``?`` and ``[`` escaped)."""
    return re.sub(r"([*?\[])", r"[\1]", text)
