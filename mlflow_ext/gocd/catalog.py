"""The model catalog: which models get GoCD pipelines, from a YAML file or from registry tags.

Format (documented with an example in gocd/README.md)::

    tracking_uri: https://mlflow.example.com   # optional: default of MLFLOW_TRACKING_URI in the pipelines
    defaults:                                  # optional: any model field but name and gocd_name
      repository: https://git.example.com/ml/models.git
      deploy: {target: local}
    models:
      - name: iris-classifier                  # the registered model name in MLflow
        team: data-science                     # GoCD pipeline group (and file, with --per team)
        repository: https://git.example.com/ml/iris.git
        branch: main                           # default main
        directory: examples/iris               # cwd of every task, relative to the checkout; default "."
        entry_point: python train.py           # run by /bin/sh -c in the build's train stage
        test_data: data/test.csv               # relative to directory
        target: species                        # the label column
        deploy: {target: local, port: 5201}    # deploy target and port (port optional)
        aliases:                               # one release pipeline per alias
          staging: {}
          production: {production: true, deploy: {port: 5202}, variables: {DEPLOY_TIER: prod}}
        variables: {}                          # route variables for every alias (the bridge passes them)
        environment: {}                        # variables declared on every pipeline of the model
        approval: {roles: [release-managers]}  # who may approve a production deploy (default: anyone)
        resources: [python]                    # GoCD agent resources for every job
        timeout: 60                            # minutes for every job (default: GoCD's server setting)
        schedule: {window: "SUN 00:00-06:00"}  # retrain weekly: a timer on the build pipeline (see below)
        gocd_name: iris                        # optional: the GoCD name instead of the sanitised name

``schedule`` is a Quartz spec as GoCD takes it (``"0 30 2 ? * SUN"``), or a mapping with ``spec`` or
``window`` (``[DAYS] HH:MM-HH:MM``: one start per model in it, from a hash of the model name) and
``only_on_changes`` (default false: retrain on new data even when the code did not change). In ``defaults``
it gives every model a timer; ``schedule: null`` on an entry opts out.

Registry tags (``--from-registry``): a registered model carrying ``gocd.team`` becomes an entry; the other
fields come from ``gocd.<field>`` tags (``gocd.aliases`` a comma list, ``gocd.production_aliases`` the
production ones, ``gocd.deploy.target`` and ``gocd.deploy.port``) over the catalog's ``defaults``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

import yaml

from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import names, schedule, validate
from mlflow_ext.routing import BRIDGE_VARIABLES

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# MLflow reserves these alias names.
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)

TOP_KEYS = {"tracking_uri", "defaults", "models"}
MODEL_KEYS = {
    "name",
    "gocd_name",
    "team",
    "repository",
    "branch",
    "directory",
    "entry_point",
    "test_data",
    "target",
    "deploy",
    "aliases",
    "variables",
    "environment",
    "approval",
    "resources",
    "timeout",
    "schedule",
}
DEFAULTABLE_KEYS = MODEL_KEYS - {"name", "gocd_name"}
REQUIRED_KEYS = ("team", "repository", "entry_point", "test_data", "target", "deploy", "aliases")
ALIAS_KEYS = {"production", "deploy", "variables"}
DEPLOY_KEYS = {"target", "port"}
APPROVAL_KEYS = {"roles", "users"}
SCHEDULE_KEYS = {"spec", "window", "only_on_changes"}

# Registered-model tags read by --from-registry.
TAG_PREFIX = "gocd."
TEAM_TAG = "gocd.team"
REGISTRY_TAGS = {
    "gocd.team": "team",
    "gocd.name": "gocd_name",
    "gocd.repository": "repository",
    "gocd.branch": "branch",
    "gocd.directory": "directory",
    "gocd.entry_point": "entry_point",
    "gocd.test_data": "test_data",
    "gocd.target": "target",
    "gocd.aliases": None,
    "gocd.production_aliases": None,
    "gocd.deploy.target": None,
    "gocd.deploy.port": None,
}


@dataclass(frozen=True)
class Deploy:
    target: str
    port: int | None = None


@dataclass(frozen=True)
class Timer:
    spec: str  # Quartz cron, as GoCD's timer takes it
    only_on_changes: bool = False
    window: str | None = None  # the window the spec was spread from, if any


@dataclass(frozen=True)
class Alias:
    name: str  # the MLflow alias
    gocd_name: str  # sanitised
    production: bool
    deploy: Deploy
    variables: Mapping[str, str]  # route variables: passed by the bridge, declared by the pipeline


@dataclass(frozen=True)
class Model:
    name: str  # the registered model name
    gocd_name: str
    team: str
    group: str  # sanitised team
    repository: str
    branch: str
    directory: str
    entry_point: str
    test_data: str
    target: str
    aliases: tuple[Alias, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    approval_roles: tuple[str, ...] = ()
    approval_users: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    timeout: int | None = None
    timer: Timer | None = None

    @property
    def build_pipeline(self) -> str:
        return names.build_pipeline(self.gocd_name)

    def release_pipeline(self, alias: Alias) -> str:
        return names.release_pipeline(self.gocd_name, alias.gocd_name)


@dataclass(frozen=True)
class Catalog:
    source: str
    models: tuple[Model, ...]
    tracking_uri: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)


class _Problems:
    """Collects every problem of one catalog so a user fixes them in one pass."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{self.source}: {where}: {message}")

    def raise_any(self) -> None:
        if self.messages:
            count = len(self.messages)
            head = f"catalog {self.source} has {count} problem{'s' if count > 1 else ''}:"
            raise PipelineError("\n".join([head, *(f"  {m}" for m in self.messages)]))


def load(path: str | Path, tracking_uri: str | None = None) -> Catalog:
    """Read and check a catalog file; PipelineError lists every problem with file, entry and field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"{source}: cannot read the catalog: {exc.strerror or exc}") from exc
    try:  # the same YAML reading as the validator: duplicate keys refused
        data = validate.load_text(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{source}: {validate.yaml_message(exc)}") from exc
    return parse(data, source, tracking_uri=tracking_uri)


def parse(data: Any, source: str, tracking_uri: str | None = None, entries_from: str = "models") -> Catalog:
    """Check a catalog's parsed YAML (see the module doc for the format)."""
    problems = _Problems(source)
    if not isinstance(data, dict):
        problems.add("top level", "must be a mapping with a `models` list")
        problems.raise_any()
    for key in sorted(set(data) - TOP_KEYS, key=str):
        problems.add("top level", f"unknown key {key!r} (known: {', '.join(sorted(TOP_KEYS))})")
    uri = data.get("tracking_uri", tracking_uri)
    if uri is not None and not _is_text(uri):
        problems.add("tracking_uri", "must be a non-empty string")
        uri = None
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.add("defaults", "must be a mapping")
        defaults = {}
    for key in sorted(set(defaults) - DEFAULTABLE_KEYS, key=str):
        why = "cannot have a default" if key in MODEL_KEYS else "unknown key"
        problems.add("defaults", f"{why} {key!r}")
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        problems.add("models", "missing: a non-empty list of models is required")
        problems.raise_any()
    models = []
    for index, entry in enumerate(entries):
        registry = entries_from == "registry" and isinstance(entry, dict)
        where = f"registered model {entry.get('name')!r}" if registry else _where(index, entry)
        model = _parse_model(entry, where, defaults, problems)
        if model is not None:
            models.append(model)
    _check_unique(models, problems)
    problems.raise_any()
    return Catalog(
        source=source,
        models=tuple(sorted(models, key=lambda m: m.gocd_name.lower())),
        tracking_uri=uri,
        defaults=defaults,
    )


def _is_text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _where(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"models[{index}] ({name})" if isinstance(name, str) else f"models[{index}]"


def _parse_model(entry: Any, where: str, defaults: dict, problems: _Problems) -> Model | None:
    if not isinstance(entry, dict):
        problems.add(where, "must be a mapping")
        return None
    before = len(problems.messages)
    for key in sorted(set(entry) - MODEL_KEYS, key=str):
        problems.add(where, f"unknown key {key!r}")
    merged = {**defaults, **entry}
    if isinstance(defaults.get("deploy"), dict) and isinstance(entry.get("deploy"), dict):
        merged["deploy"] = {**defaults["deploy"], **entry["deploy"]}
    if isinstance(defaults.get("schedule"), dict) and isinstance(entry.get("schedule"), dict):
        base = dict(defaults["schedule"])
        if "spec" in entry["schedule"] or "window" in entry["schedule"]:
            base.pop("spec", None)
            base.pop("window", None)
        merged["schedule"] = {**base, **entry["schedule"]}
    name = merged.get("name")
    if not _is_text(name):
        problems.add(where, "field 'name': missing (the registered model name)")
        return None
    for key in REQUIRED_KEYS:
        if key not in merged or merged[key] is None:
            problems.add(where, f"field {key!r}: missing")
    for key in ("team", "repository", "entry_point", "test_data", "target", "branch", "directory"):
        if key in merged and merged[key] is not None and not _is_text(merged[key]):
            problems.add(where, f"field {key!r}: must be a non-empty string")
    gocd_name = merged.get("gocd_name")
    if gocd_name is None:
        gocd_name = names.sanitise(name)
    elif not isinstance(gocd_name, str) or not names.is_valid(gocd_name):
        problems.add(
            where, f"field 'gocd_name': {gocd_name!r} is not a valid GoCD name ({names.NAME_PATTERN})"
        )
        gocd_name = names.sanitise(str(gocd_name) or "_")
    for key in ("directory", "test_data"):
        value = merged.get(key)
        if _is_text(value) and not _is_relative_inside(value):
            problems.add(where, f"field {key!r}: {value!r} must be a relative path inside the checkout")
    deploy = _parse_deploy(merged.get("deploy"), f"{where}: field 'deploy'", problems)
    aliases = _parse_aliases(merged.get("aliases"), where, deploy, merged.get("variables"), problems)
    environment = _parse_variables(merged.get("environment"), f"{where}: field 'environment'", problems)
    for alias in aliases:
        for key in sorted(set(alias.variables) & set(environment)):
            problems.add(
                where, f"variable {key!r} is both in 'environment' and a route variable of {alias.name!r}"
            )
    roles, users = _parse_approval(merged.get("approval"), where, problems)
    resources = merged.get("resources") or []
    if not isinstance(resources, list) or not all(_is_text(r) for r in resources):
        problems.add(where, "field 'resources': must be a list of agent resource names")
        resources = []
    timeout = merged.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        problems.add(where, "field 'timeout': must be a whole number of minutes (0: never)")
        timeout = None
    timer = _parse_schedule(merged.get("schedule"), name, where, problems)
    longest = max((names.release_pipeline(gocd_name, a.gocd_name) for a in aliases), key=len, default="")
    if len(longest) > names.MAX_LENGTH:
        problems.add(
            where,
            f"pipeline name {longest[:40]}... is longer than {names.MAX_LENGTH} characters: "
            "set a shorter 'gocd_name'",
        )
    if len(problems.messages) > before or deploy is None:
        return None
    team = merged["team"]
    return Model(
        name=name,
        gocd_name=gocd_name,
        team=team,
        group=names.sanitise(team),
        repository=merged["repository"],
        branch=merged.get("branch") or "main",
        directory=str(PurePosixPath(merged.get("directory") or ".")),
        entry_point=merged["entry_point"],
        test_data=merged["test_data"],
        target=merged["target"],
        aliases=aliases,
        environment=environment,
        approval_roles=roles,
        approval_users=users,
        resources=tuple(sorted(set(resources))),
        timeout=timeout,
        timer=timer,
    )


def _is_relative_inside(path: str) -> bool:
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and "\\" not in path


def _parse_deploy(value: Any, where: str, problems: _Problems) -> Deploy | None:
    if value is None:
        return None  # reported as missing by the caller
    if not isinstance(value, dict):
        problems.add(where, "must be a mapping with `target` (and optional `port`)")
        return None
    for key in sorted(set(value) - DEPLOY_KEYS, key=str):
        problems.add(where, f"unknown key {key!r}")
    target = value.get("target")
    if not _is_text(target):
        problems.add(where, "'target' missing: the deploy target's name (e.g. local)")
        return None
    port = value.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
        problems.add(where, f"'port' {port!r} must be a number from 1 to 65535")
        return None
    return Deploy(target=target, port=port)


def _parse_variables(value: Any, where: str, problems: _Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(where, "must be a mapping of NAME: value")
        return {}
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not VARIABLE_NAME.fullmatch(key):
            problems.add(where, f"variable name {key!r} must match {VARIABLE_NAME.pattern}")
        elif key in BRIDGE_VARIABLES or key.startswith("GO_"):
            problems.add(where, f"variable {key!r} is reserved (the bridge or GoCD sets it)")
        elif isinstance(item, (dict, list)) or item is None:
            problems.add(where, f"variable {key!r} must have a string value")
        else:
            out[key] = _scalar_text(item)
    return dict(sorted(out.items()))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_aliases(
    value: Any, where: str, deploy: Deploy | None, model_variables: Any, problems: _Problems
) -> tuple[Alias, ...]:
    if value is None:
        return ()  # reported as missing by the caller
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = {item: {} for item in value}
    if not isinstance(value, dict) or not value:
        problems.add(
            where, "field 'aliases': must be a non-empty mapping of alias: {production, deploy, variables}"
        )
        return ()
    shared = _parse_variables(model_variables, f"{where}: field 'variables'", problems)
    aliases = []
    for alias, options in value.items():
        at = f"{where}: aliases.{alias}"
        if not _is_text(alias) or _RESERVED_ALIAS.fullmatch(alias):
            problems.add(at, f"{alias!r} is not an alias MLflow allows")
            continue
        options = options or {}
        if not isinstance(options, dict):
            problems.add(at, "must be a mapping (production, deploy, variables) or empty")
            continue
        for key in sorted(set(options) - ALIAS_KEYS, key=str):
            problems.add(at, f"unknown key {key!r}")
        production = options.get("production", False)
        if not isinstance(production, bool):
            problems.add(at, "'production' must be true or false")
        alias_deploy = deploy
        if options.get("deploy") is not None:
            merged = {**({"target": deploy.target, "port": deploy.port} if deploy else {})}
            if isinstance(options["deploy"], dict):
                merged.update(options["deploy"])
                merged = {k: v for k, v in merged.items() if v is not None}
                alias_deploy = _parse_deploy(merged, f"{at}: 'deploy'", problems)
            else:
                problems.add(at, "'deploy' must be a mapping")
        variables = {**shared, **_parse_variables(options.get("variables"), f"{at}: 'variables'", problems)}
        if alias_deploy is None:
            continue
        aliases.append(
            Alias(
                name=alias,
                gocd_name=names.sanitise(alias),
                production=production is True,
                deploy=alias_deploy,
                variables=dict(sorted(variables.items())),
            )
        )
    for first, second, gocd_name in names.find_collisions((a.name, a.gocd_name) for a in aliases):
        problems.add(where, f"aliases {first!r} and {second!r} both become {gocd_name!r} in GoCD names")
    return tuple(sorted(aliases, key=lambda a: a.gocd_name))


def _parse_schedule(value: Any, name: str, where: str, problems: _Problems) -> Timer | None:
    """A timer from ``schedule``: a Quartz spec, or a mapping with ``spec`` or ``window``."""
    if value is None:
        return None
    at = "field 'schedule'"
    if isinstance(value, str):
        value = {"spec": value}
    if not isinstance(value, dict):
        problems.add(where, f"{at}: must be a Quartz spec or a mapping with `spec` or `window`")
        return None
    for key in sorted(set(value) - SCHEDULE_KEYS, key=str):
        problems.add(where, f"{at}: unknown key {key!r} (known: {', '.join(sorted(SCHEDULE_KEYS))})")
    only = value.get("only_on_changes", False)
    if not isinstance(only, bool):
        problems.add(where, f"{at}: 'only_on_changes' must be true or false")
    if ("spec" in value) == ("window" in value):
        problems.add(where, f"{at}: give `spec` (a Quartz cron) or `window` (e.g. 'SUN 00:00-06:00'), one")
        return None
    if "window" in value:
        try:
            window = schedule.parse_window(value["window"])
        except PipelineError as exc:
            problems.add(where, f"{at}: {exc}")
            return None
        return Timer(spec=window.spec_for(name), only_on_changes=only is True, window=window.text)
    spec = value["spec"]
    problem = schedule.check(spec)
    if problem is not None:
        problems.add(where, f"{at}: {spec!r} is not a timer spec GoCD accepts: {problem}")
        return None
    return Timer(spec=" ".join(spec.split()), only_on_changes=only is True)


def _parse_approval(value: Any, where: str, problems: _Problems) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if value is None:
        return (), ()
    if not isinstance(value, dict):
        problems.add(where, "field 'approval': must be a mapping with `roles` and/or `users`")
        return (), ()
    for key in sorted(set(value) - APPROVAL_KEYS, key=str):
        problems.add(where, f"field 'approval': unknown key {key!r}")
    lists = []
    for key in ("roles", "users"):
        items = value.get(key) or []
        if not isinstance(items, list) or not all(_is_text(i) for i in items):
            problems.add(where, f"field 'approval': {key!r} must be a list of names")
            items = []
        lists.append(tuple(sorted(set(items))))
    return lists[0], lists[1]


def _check_unique(models: list[Model], problems: _Problems) -> None:
    seen: dict[str, Model] = {}
    for model in models:
        if model.name in seen:
            problems.add(f"model {model.name!r}", "duplicate name: the catalog lists it more than once")
        seen.setdefault(model.name, model)
    unique = list(seen.values())
    for first, second, gocd_name in names.find_collisions((m.name, m.gocd_name) for m in unique):
        problems.add(
            f"models {first!r} and {second!r}",
            f"both become the GoCD name {gocd_name!r} (GoCD ignores case): set `gocd_name` on one of them",
        )
    teams = sorted({m.team for m in unique})
    for first, second, group in names.find_collisions((t, names.sanitise(t)) for t in teams):
        problems.add(f"teams {first!r} and {second!r}", f"both become the GoCD group {group!r}")


# -- the registry ------------------------------------------------------------------------------------


def registry_models(client: Any, advance: Callable[[int], None] | None = None) -> dict[str, dict[str, str]]:
    """Every registered model's name and tags, through MlflowClient.search_registered_models pages;
    ``advance`` (a progress task's) hears how many each page brought."""
    found: dict[str, dict[str, str]] = {}
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for model in page:
            found[model.name] = dict(model.tags or {})
        if advance is not None:
            advance(len(page))
        token = getattr(page, "token", None)
        if not token:
            return found


def from_registry(
    registered: Mapping[str, Mapping[str, str]], base: Catalog | None = None, source: str = "registry"
) -> Catalog:
    """The catalog of registered models tagged ``gocd.team``, over ``base``'s defaults and entries.

    An entry of ``base`` (the --catalog file) wins over tags for its model, and must name a registered
    model: a missing one is an error, as is a tagged model whose tags leave required fields missing.
    """
    problems = _Problems(source)
    if base is not None:
        for model in base.models:
            if model.name not in registered:
                problems.add(
                    base.source,
                    f"model {model.name!r} is not in the registry (register it first, or remove the entry)",
                )
    problems.raise_any()
    explicit = {m.name for m in base.models} if base else set()
    entries = []
    for name in sorted(registered):
        tags = registered[name]
        if TEAM_TAG not in tags or name in explicit:
            continue
        entries.append(_entry_from_tags(name, tags, problems))
    problems.raise_any()
    defaults = dict(base.defaults) if base else {}
    generated = (
        parse({"models": entries, "defaults": defaults}, source, entries_from="registry") if entries else None
    )
    models = list(base.models if base else ()) + list(generated.models if generated else ())
    if not models:
        raise PipelineError(f"{source}: no registered model carries the tag {TEAM_TAG!r}")
    check = _Problems(source)
    _check_unique(models, check)
    check.raise_any()
    return Catalog(
        source=base.source if base else source,
        models=tuple(sorted(models, key=lambda m: m.gocd_name.lower())),
        tracking_uri=base.tracking_uri if base else None,
    )


def _entry_from_tags(name: str, tags: Mapping[str, str], problems: _Problems) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name}
    for tag, key in REGISTRY_TAGS.items():
        if key and tags.get(tag, "").strip():
            entry[key] = tags[tag].strip()
    unknown = sorted(t for t in tags if t.startswith(TAG_PREFIX) and t not in REGISTRY_TAGS)
    for tag in unknown:
        problems.add(f"registered model {name!r}", f"unknown tag {tag!r} (known: {', '.join(REGISTRY_TAGS)})")
    aliases = _split(tags.get("gocd.aliases", ""))
    production = set(_split(tags.get("gocd.production_aliases", "")))
    for alias in sorted(production - set(aliases)):
        problems.add(
            f"registered model {name!r}", f"gocd.production_aliases names {alias!r}, not in gocd.aliases"
        )
    if aliases:
        entry["aliases"] = {alias: {"production": True} if alias in production else {} for alias in aliases}
    deploy: dict[str, Any] = {}
    if tags.get("gocd.deploy.target", "").strip():
        deploy["target"] = tags["gocd.deploy.target"].strip()
    if tags.get("gocd.deploy.port", "").strip():
        port = tags["gocd.deploy.port"].strip()
        deploy["port"] = int(port) if port.isdigit() else port
    if deploy:
        entry["deploy"] = deploy
    return entry


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
