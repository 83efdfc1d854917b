"""The promotion policy file: which gates a model version must pass before an alias moves to it.

```yaml
defaults:                      # every model no entry matches (and what entries leave out)
  require: [code, training_data]
models:                        # first matching entry wins
  - name: "iris-*"             # fnmatch on the registered model name
    aliases: [champion, prod*] # fnmatch on the alias, case-insensitive; absent: every alias
    require: [code, training_data, lineage.ci.pipeline]
    metrics:
      accuracy: {min: 0.9, better: higher, max_regression: 0.01}
      rmse: {max: 0.5, better: lower, max_regression: 0.02}
      f1: {min: 0.85, from: evaluation}
```

``require`` names what the version's run must carry: ``code`` (a ``lineage.code.commit`` tag, or
MLflow's ``mlflow.source.git.commit``), ``training_data`` (a ``lineage.data.<name>.fingerprint`` whose
``lineage.data.<name>.role`` is ``training``), or any run tag key (``*`` patterns allowed). ``metrics``
gates read the run's metrics: ``min``/``max`` are absolute thresholds; ``max_regression`` bounds how much
worse than the alias's current holder the candidate may be, in the direction ``better`` names;
``from: evaluation`` reads the metric from the version's evaluation run (its ``evaluation.run_id`` tag,
set by ``mlflow-ext evaluate``) instead of its training run.

Without a file the built-in policy applies: ``require: [code, training_data]``, no metric gates.
A bad file raises ConfigError naming the file, the entry and the problem.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from mlflow_ext.errors import ConfigError

CODE = "code"
TRAINING_DATA = "training_data"
BUILTIN_REQUIRE: tuple[str, ...] = (CODE, TRAINING_DATA)

_TOP_KEYS = {"version", "defaults", "models"}
_RULE_KEYS = {"require", "metrics"}
_ENTRY_KEYS = {"name", "aliases"} | _RULE_KEYS
_METRIC_KEYS = {"min", "max", "better", "max_regression", "from"}
_TAG_PATTERN = re.compile(r"[\w.\-/ *?\[\]]{1,250}")

Better = Literal["higher", "lower"]
Source = Literal["run", "evaluation"]


@dataclass(frozen=True)
class MetricRule:
    """The gates on one metric: absolute bounds and the allowed regression against the alias's holder."""

    metric: str
    min: float | None = None
    max: float | None = None
    better: Better | None = None
    max_regression: float | None = None
    source: Source = "run"  # the version's training run, or its evaluation run


@dataclass(frozen=True)
class Rules:
    """What applies to one (model, alias): the gates, and where they came from (for messages)."""

    require: tuple[str, ...] = BUILTIN_REQUIRE
    metrics: tuple[MetricRule, ...] = ()
    source: str = "built-in defaults"


@dataclass(frozen=True)
class Entry:
    index: int
    name: str
    aliases: tuple[str, ...] | None
    require: tuple[str, ...] | None
    metrics: tuple[MetricRule, ...] | None

    def matches(self, model: str, alias: str) -> bool:
        if not fnmatch.fnmatchcase(model, self.name):
            return False
        if self.aliases is None:
            return True
        return any(fnmatch.fnmatchcase(alias.lower(), pattern.lower()) for pattern in self.aliases)

    @property
    def label(self) -> str:
        return f"models[{self.index}] (name {self.name!r})"


@dataclass(frozen=True)
class Policy:
    path: str | None = None
    defaults: Rules = field(default_factory=Rules)
    entries: tuple[Entry, ...] = ()

    def rules_for(self, model: str, alias: str) -> Rules:
        where = f" of {self.path}" if self.path else ""
        for entry in self.entries:
            if entry.matches(model, alias):
                return Rules(
                    require=self.defaults.require if entry.require is None else entry.require,
                    metrics=self.defaults.metrics if entry.metrics is None else entry.metrics,
                    source=f"{entry.label}{where}",
                )
        return self.defaults


BUILTIN = Policy()


class _Problem(Exception):
    """One problem in the file, raised where found and reported with the file and entry."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Problem(f"{what} must be a number, got {value!r}")
    return float(value)


def _require(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Problem(f"require must be a list (e.g. [{CODE}, {TRAINING_DATA}]), got {type(value).__name__}")
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _Problem(f"require entries must be non-empty strings, got {item!r}")
        name = item.strip()
        if name not in (CODE, TRAINING_DATA) and not _TAG_PATTERN.fullmatch(name):
            raise _Problem(
                f"require entry {name!r} is neither {CODE}, {TRAINING_DATA} nor a run tag key (pattern)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def _metric(name: Any, spec: Any) -> MetricRule:
    if not isinstance(name, str) or not name.strip():
        raise _Problem(f"metric names must be non-empty strings, got {name!r}")
    where = f"metric {name!r}"
    if not isinstance(spec, dict) or not spec:
        raise _Problem(f"{where} needs a mapping of {', '.join(sorted(_METRIC_KEYS))}, got {spec!r}")
    unknown = set(spec) - _METRIC_KEYS
    if unknown:
        raise _Problem(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_METRIC_KEYS))})"
        )
    low = _number(spec["min"], f"{where}: min") if "min" in spec else None
    high = _number(spec["max"], f"{where}: max") if "max" in spec else None
    if low is not None and high is not None and low > high:
        raise _Problem(f"{where}: min {low:g} is above max {high:g}")
    better = spec.get("better")
    if better is not None and better not in ("higher", "lower"):
        raise _Problem(f"{where}: better must be higher or lower, got {better!r}")
    regression = None
    if "max_regression" in spec:
        regression = _number(spec["max_regression"], f"{where}: max_regression")
        if regression < 0:
            raise _Problem(f"{where}: max_regression must be 0 or more, got {regression:g}")
        if better is None:
            raise _Problem(f"{where}: max_regression needs better: higher or better: lower")
    source = spec.get("from", "run")
    if source not in ("run", "evaluation"):
        raise _Problem(f"{where}: from must be run or evaluation, got {source!r}")
    return MetricRule(name.strip(), low, high, better, regression, source)


def _metrics(value: Any) -> tuple[MetricRule, ...]:
    if not isinstance(value, dict):
        raise _Problem(f"metrics must be a mapping of metric name to gates, got {type(value).__name__}")
    return tuple(_metric(name, spec) for name, spec in value.items())


def _rule_fields(data: dict[str, Any]) -> tuple[tuple[str, ...] | None, tuple[MetricRule, ...] | None]:
    require = _require(data["require"]) if data.get("require") is not None else None
    metrics = _metrics(data["metrics"]) if data.get("metrics") is not None else None
    return require, metrics


def _patterns(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise _Problem(f"{what} must be a non-empty string or list of strings, got {value!r}")
    return tuple(i.strip() for i in items)


def parse(data: Any, path: str = "<policy>") -> Policy:
    """Build a Policy from the loaded YAML; ConfigError names ``path``, the entry and the problem."""
    where = "top level"
    try:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _Problem(f"expected a mapping with defaults and models, got {type(data).__name__}")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise _Problem(f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
        if data.get("version", 1) != 1:
            raise _Problem(f"version must be 1, got {data.get('version')!r}")
        where = "defaults"
        raw_defaults = data.get("defaults") or {}
        if not isinstance(raw_defaults, dict):
            raise _Problem(f"expected a mapping with require and metrics, got {type(raw_defaults).__name__}")
        unknown = set(raw_defaults) - _RULE_KEYS
        if unknown:
            raise _Problem(f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
        require, metrics = _rule_fields(raw_defaults)
        defaults = Rules(
            require=BUILTIN_REQUIRE if require is None else require,
            metrics=metrics or (),
            source=f"defaults of {path}",
        )
        where = "models"
        raw_entries = data.get("models") or []
        if not isinstance(raw_entries, list):
            raise _Problem(f"expected a list of entries, got {type(raw_entries).__name__}")
        entries = []
        for index, raw in enumerate(raw_entries):
            where = f"models[{index}]"
            if not isinstance(raw, dict):
                raise _Problem(f"expected a mapping with name, aliases, require, metrics, got {raw!r}")
            if isinstance(raw.get("name"), str):
                where = f"models[{index}] (name {raw['name']!r})"
            unknown = set(raw) - _ENTRY_KEYS
            if unknown:
                raise _Problem(
                    f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})"
                )
            if not isinstance(raw.get("name"), str) or not raw["name"].strip():
                raise _Problem("name (a model name or fnmatch pattern) is required")
            aliases = _patterns(raw["aliases"], "aliases") if raw.get("aliases") is not None else None
            require, metrics = _rule_fields(raw)
            entries.append(Entry(index, raw["name"].strip(), aliases, require, metrics))
    except _Problem as exc:
        raise ConfigError(f"promotion policy {path}: {where}: {exc}") from None
    return Policy(path=path, defaults=defaults, entries=tuple(entries))


def _stamp(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"promotion policy {path}: cannot read: {exc.strerror or exc}") from None
    return info.st_mtime_ns, info.st_size


def read_text(path: str) -> str:
    """The file's text; ConfigError names the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"promotion policy {path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None


def _read(path: str) -> Policy:
    return from_text(read_text(path), path)


def from_text(text: str, path: str) -> Policy:
    """Parse a policy from its YAML text; ``path`` names it in messages and in each rule's source."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"promotion policy {path}: {at}not valid YAML: {problem}") from None
    return parse(data, path)


# Each version of a file (modification time and size) is parsed once per process; a file that does not
# parse is read again on the next call, so a fixed file is picked up and a broken one keeps failing.
_parsed: dict[str, tuple[tuple[int, int], Policy]] = {}
_parsed_lock = threading.Lock()


def load(path: str) -> Policy:
    """Read and validate a policy file. Raises ConfigError naming the file, entry and problem."""
    stamp = _stamp(path)
    with _parsed_lock:
        known = _parsed.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        policy = _read(path)
        _parsed[path] = (stamp, policy)
        return policy


def load_optional(path: str | None) -> Policy:
    """The file's policy, or the built-in one when no file is named."""
    return load(path) if path else BUILTIN
