"""The routing file: which registry events trigger which GoCD pipeline, with which extra variables.

```yaml
routes:
  - model: "iris-*"              # fnmatch on the registered model name
    alias: "production"          # fnmatch on the alias (alias events), or:
    # event: model_version.created | model_version_tag.set (the latter with `tag: <key pattern>`)
    pipeline: iris-classifier-release
    variables: {DEPLOY_TARGET: local}
```

Every matching route triggers its pipeline; a route matches case-sensitively. Tag events for keys under
``gocd.``, ``deploy.`` and ``promotion.`` never match (the platform writes those itself).
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from mlflow_ext.errors import ConfigError
from mlflow_ext.events import ALIAS_CREATED, ROUTABLE, TAG_SET, VERSION_CREATED, Event

# The variables the bridge sets itself; routes cannot redefine them.
BRIDGE_VARIABLES = (
    "MLFLOW_MODEL_NAME",
    "MLFLOW_MODEL_VERSION",
    "MLFLOW_MODEL_ALIAS",
    "MLFLOW_RUN_ID",
    "MLFLOW_MODEL_URI",
    "MLFLOW_TRACKING_URI",
)
_PIPELINE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_KEYS = {"model", "alias", "event", "tag", "pipeline", "variables"}


@dataclass(frozen=True)
class Route:
    model: str
    event: str
    pipeline: str
    alias: str | None = None
    tag: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def matches(self, event: Event) -> bool:
        if event.event != self.event or not fnmatch.fnmatchcase(event.model, self.model):
            return False
        if self.event == ALIAS_CREATED:
            return event.alias is not None and fnmatch.fnmatchcase(event.alias, self.alias or "")
        if self.event == TAG_SET:
            return (
                event.tag_key is not None
                and not event.reserved_tag
                and fnmatch.fnmatchcase(event.tag_key, self.tag or "")
            )
        return True


def _route(index: int, entry: object, where: str) -> Route:
    at = f"{where}: routes[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{at} must be a mapping")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{at} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    model, pipeline = entry.get("model"), entry.get("pipeline")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{at}.model must be a model-name pattern")
    if not isinstance(pipeline, str) or not _PIPELINE.fullmatch(pipeline):
        raise ConfigError(f"{at}.pipeline must be a GoCD pipeline name ([A-Za-z0-9_.-], at most 255)")
    alias, event, tag = entry.get("alias"), entry.get("event"), entry.get("tag")
    if (alias is None) == (event is None):
        raise ConfigError(f"{at} needs exactly one of alias or event")
    if alias is not None:
        if not isinstance(alias, str) or not alias:
            raise ConfigError(f"{at}.alias must be an alias pattern")
        event = ALIAS_CREATED
    elif event not in ROUTABLE or event == ALIAS_CREATED:
        raise ConfigError(f"{at}.event must be {VERSION_CREATED} or {TAG_SET} (use alias: for aliases)")
    if event == TAG_SET:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"{at}.tag (a tag-key pattern) is required with event {TAG_SET}")
    elif tag is not None:
        raise ConfigError(f"{at}.tag only goes with event {TAG_SET}")
    variables = entry.get("variables") or {}
    if not isinstance(variables, dict):
        raise ConfigError(f"{at}.variables must be a mapping of names to values")
    clean: dict[str, str] = {}
    for name, value in variables.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise ConfigError(f"{at}.variables: {name!r} is not a valid variable name")
        if name in BRIDGE_VARIABLES:
            raise ConfigError(f"{at}.variables: {name} is set by the bridge")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{at}.variables.{name} must be a string or a number")
        clean[name] = str(value)
    return Route(model, str(event), pipeline, alias, tag, clean)


def parse(text: str, where: str = "routing file") -> tuple[Route, ...]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) - {"routes"}:
        raise ConfigError(f"{where} must be a mapping with one key, routes")
    entries = document.get("routes") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: routes must be a list")
    return tuple(_route(i, entry, where) for i, entry in enumerate(entries))


def load(path: str) -> tuple[Route, ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read routing file {path}: {exc.strerror}") from None
    return parse(text, path)


class Router:
    """The routes of one file, re-read when the file changes (a bad new version keeps the old routes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._routes = load(path)
        self.last_error: str | None = None

    def _mtime(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    @property
    def routes(self) -> tuple[Route, ...]:
        stamp = self._mtime()
        if stamp is not None and stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._routes = load(self.path)
                        self.last_error = None
                    except ConfigError as exc:
                        self.last_error = str(exc)
        return self._routes

    def match(self, event: Event) -> list[Route]:
        return [route for route in self.routes if route.matches(event)]

    def alias_routes(self) -> list[Route]:
        return [route for route in self.routes if route.event == ALIAS_CREATED]
