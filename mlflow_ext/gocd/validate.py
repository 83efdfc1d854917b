"""Check GoCD YAML config files (format_version 10): the project's JSON schema, then semantic rules.

The schema (``gocd-config-v10.schema.json``, shipped with the package) is interpreted here by a small
validator for the keywords it uses; a schema using any other keyword fails to load, so nothing in it is
silently ignored. ``jsonschema`` agrees with it on the test corpus (tests/contract), but is not needed at
run time. Semantic rules the schema cannot say:

- a pipeline has ``template`` or ``stages``, not both and not neither;
- stage names are unique in a pipeline and job names in a stage (GoCD ignores case); a stage has ``jobs``
  or the single-job shorthand (``tasks`` at stage level), not both;
- a job has ``resources`` or ``elastic_profile_id``, not both; a git material ``includes`` or ``ignore``;
- every variable a shell task reads (``$VAR``/``${VAR}`` in ``sh -c``) is declared on the pipeline, its
  stage, its job or an environment holding the pipeline (GoCD's own ``GO_*`` and the agent's basic
  POSIX variables excepted); ``${VAR}`` in a non-shell exec is an error (GoCD passes it literally);
- every ``#{param}`` is a declared parameter; ``label_template`` names only ``COUNT``, materials and
  ``env:`` variables the pipeline declares;
- secure variables hold encrypted values (``AES:...``) or secret references (``{{SECRET:[..][..]}}``);
- pipeline names are unique across all files checked together; with a routing file, every route's
  pipeline exists and declares every variable the bridge passes, at pipeline level (else GoCD answers 422).

Every message names the file, the pipeline (when there is one) and the path inside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import names
from mlflow_ext.gocd.catalog import BRIDGE_VARIABLES

SCHEMA_FILE = "gocd-config-v10.schema.json"
SUFFIXES = (".gocd.yaml", ".gocd.yml")

Path_ = tuple[Any, ...]
Check = Callable[[Any, Path_, list[tuple[Path_, str]]], None]


@dataclass(frozen=True)
class Issue:
    file: str
    pipeline: str | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f" pipeline {self.pipeline}:" if self.pipeline else ""
        at = f" {self.path}:" if self.path else ""
        return f"{self.file}:{where}{at} {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "pipeline": self.pipeline, "path": self.path, "message": self.message}


def load_schema() -> dict[str, Any]:
    text = resources.files("mlflow_ext.gocd").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


# -- a validator for the JSON-schema keywords the schema uses -----------------------------------------

_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "$defs", "default", "examples"}
_KEYWORDS = {
    "type",
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "anyOf",
    "$ref",
}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    raise ValueError(f"unknown JSON type {name!r}")


def _describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SchemaCompiler:
    """Turns the schema into nested closures once; each closure appends (path, message) pairs."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema
        self._refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {} or (isinstance(schema, dict) and set(schema) <= _ANNOTATIONS):
            return lambda value, path, errors: None
        if not isinstance(schema, dict):
            raise ValueError(f"schema must be an object, not {schema!r}")
        unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
        if unknown:
            raise ValueError(f"schema keyword(s) this validator does not implement: {sorted(unknown)}")
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if "type" in schema:
            checks.append(self._type(schema["type"]))
            if len(schema) == 1:
                return checks[0]
        if "const" in schema:
            expected = schema["const"]

            def const(value: Any, path: Path_, errors: list) -> None:
                if value != expected or type(value) is not type(expected):
                    errors.append((path, f"must be {expected!r}, not {_show(value)}"))

            checks.append(const)
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if any(k in schema for k in ("pattern", "minLength", "maxLength")):
            checks.append(self._string(schema))
        if "minimum" in schema or "maximum" in schema:
            checks.append(self._number(schema))
        if any(
            k in schema
            for k in (
                "properties",
                "required",
                "additionalProperties",
                "propertyNames",
                "minProperties",
                "maxProperties",
            )
        ):
            checks.append(self._object(schema))
        if any(k in schema for k in ("items", "minItems", "maxItems")):
            checks.append(self._array(schema))
        if "anyOf" in schema:
            checks.append(self._any_of(schema["anyOf"]))
        if len(checks) == 1:
            return checks[0]
        typed = "type" in schema

        def all_of(value: Any, path: Path_, errors: list) -> None:
            if typed:
                before = len(errors)
                checks[0](value, path, errors)
                if len(errors) > before:
                    return  # a wrong type says it all
                for check in checks[1:]:
                    check(value, path, errors)
            else:
                for check in checks:
                    check(value, path, errors)

        return all_of

    def _ref(self, ref: str) -> Check:
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"only local $defs references are supported, not {ref!r}")
        key = ref.removeprefix("#/$defs/")
        if key not in self._refs:
            self._refs[key] = lambda value, path, errors: None  # placeholder while compiling cycles
            target = self.root["$defs"][key]
            compiled = self.compile(target)
            holder = self._refs

            def indirect(value: Any, path: Path_, errors: list, _c: Check = compiled) -> None:
                _c(value, path, errors)

            holder[key] = indirect
        refs = self._refs
        return lambda value, path, errors: refs[key](value, path, errors)

    def _type(self, spec: str | list[str]) -> Check:
        kinds = [spec] if isinstance(spec, str) else list(spec)
        for kind in kinds:
            _is_type(None, kind)  # raises for an unknown name
        wanted = " or ".join(
            {
                "object": "a mapping",
                "array": "a list",
                "integer": "an integer",
                "string": "a string",
                "boolean": "true or false",
                "number": "a number",
                "null": "null",
            }[k]
            for k in kinds
        )

        def check(value: Any, path: Path_, errors: list) -> None:
            for kind in kinds:
                if _is_type(value, kind):
                    return
            errors.append((path, f"must be {wanted}, not {_describe(value)}"))

        return check

    def _enum(self, options: list[Any]) -> Check:
        allowed = ", ".join(str(o) for o in options)

        def check(value: Any, path: Path_, errors: list) -> None:
            if not any(value == o and type(value) is type(o) for o in options):
                errors.append((path, f"{_show(value)} is not one of: {allowed}"))

        return check

    def _string(self, schema: Mapping[str, Any]) -> Check:
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        low = schema.get("minLength")
        high = schema.get("maxLength")
        what = schema.get("description")

        def check(value: Any, path: Path_, errors: list) -> None:
            if not isinstance(value, str):
                return
            if low is not None and len(value) < low:
                errors.append((path, "must not be empty" if low == 1 else f"must have {low}+ characters"))
            elif pattern is not None and not pattern.search(value):
                errors.append((path, f"{_show(value)} is not {what or 'matching ' + pattern.pattern}"))
            elif high is not None and len(value) > high:
                errors.append((path, f"is longer than {high} characters" + (f" ({what})" if what else "")))

        return check

    def _number(self, schema: Mapping[str, Any]) -> Check:
        low, high = schema.get("minimum"), schema.get("maximum")

        def check(value: Any, path: Path_, errors: list) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return
            if low is not None and value < low:
                errors.append((path, f"must be at least {low}, not {value}"))
            if high is not None and value > high:
                errors.append((path, f"must be at most {high}, not {value}"))

        return check

    def _object(self, schema: Mapping[str, Any]) -> Check:
        properties = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        required = list(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        extra_check = None if isinstance(extra, bool) else self.compile(extra)
        names_check = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None
        low, high = schema.get("minProperties"), schema.get("maxProperties")
        known = ", ".join(properties)
        description = schema.get("description")

        def check(value: Any, path: Path_, errors: list) -> None:
            if not isinstance(value, dict):
                return
            if low is not None and len(value) < low:
                errors.append((path, "must not be empty" if low == 1 else f"needs {low}+ entries"))
            if high is not None and len(value) > high:
                errors.append(
                    (
                        path,
                        f"must have exactly one key ({description})"
                        if high == 1 and low == 1
                        else f"must have at most {high} entries",
                    )
                )
            for key in required:
                if key not in value:
                    errors.append((path, f"missing required key {key!r}"))
            for key, item in value.items():
                where = (*path, key)
                if names_check is not None:
                    found: list = []
                    names_check(key, where, found)
                    errors.extend((p, f"key {m}") for p, m in found)
                prop = properties.get(key)
                if prop is not None:
                    prop(item, where, errors)
                elif extra_check is not None:
                    extra_check(item, where, errors)
                elif extra is False:
                    hint = _HINTS.get(key, "GoCD would ignore it silently")
                    errors.append((where, f"unknown key {key!r} ({hint}); known keys: {known}"))

        return check

    def _array(self, schema: Mapping[str, Any]) -> Check:
        items = self.compile(schema["items"]) if "items" in schema else None
        low, high = schema.get("minItems"), schema.get("maxItems")

        def check(value: Any, path: Path_, errors: list) -> None:
            if not isinstance(value, list):
                return
            if low is not None and len(value) < low:
                errors.append((path, "must not be empty" if low == 1 else f"needs {low}+ items"))
            if high is not None and len(value) > high:
                errors.append((path, f"must have at most {high} items"))
            if items is not None:
                for index, item in enumerate(value):
                    items(item, (*path, index), errors)

        return check

    def _any_of(self, branches: list[Any]) -> Check:
        compiled = [self.compile(b) for b in branches]
        required = [set(self._resolve(b).get("required", ())) for b in branches]

        def check(value: Any, path: Path_, errors: list) -> None:
            results = []
            for index, branch in enumerate(compiled):
                found: list = []
                branch(value, path, found)
                if not found:
                    return
                # Prefer the branch whose required keys are all present, then the fewest problems.
                has_keys = isinstance(value, dict) and required[index] <= set(value)
                type_error = any(p == path and m.startswith("must be ") for p, m in found)
                results.append((type_error, not has_keys, len(found), index, found))
            results.sort(key=lambda r: r[:4])
            errors.extend(results[0][4])

        return check

    def _resolve(self, schema: Any) -> dict[str, Any]:
        while isinstance(schema, dict) and "$ref" in schema:
            schema = self.root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
        return schema if isinstance(schema, dict) else {}


_HINTS = {
    "script": "script tasks need the script-executor plugin, which GoCD does not bundle: use exec",
    "blacklist": "format_version 10 spells it ignore",
    "whitelist": "format_version 10 spells it includes",
    "properties": "job properties were removed in format_version 7",
    "locking": "format_version 10 uses lock_behavior",
    "mingle": "removed in format_version 8",
    "clean": "the stage key is clean_workspace",
}


# -- semantic rules -----------------------------------------------------------------------------------

_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash"}
_SHELL_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)[^}]*\}")
_PARAM_REF = re.compile(r"(?<!#)#\{([^}]*)\}")
_LABEL_REF = re.compile(r"\$\{([^}\[]*)(?:\[[^\]]*\])?\}")
_SINGLE_QUOTED = re.compile(r"'[^']*'")
_SECURE_VALUE = re.compile(r"^(AES:\S+|\{\{SECRET:\[[^\]]+\]\[[^\]]+\]\}\})$")
# Set by the agent's own environment on any POSIX host; everything else must be declared.
AGENT_VARIABLES = frozenset(
    {
        "HOME",
        "PATH",
        "PWD",
        "OLDPWD",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "HOSTNAME",
        "IFS",
    }
)
_JOB_KEYS = ("tasks", "timeout", "run_instances", "resources", "elastic_profile_id", "tabs", "artifacts")


def _declared(*levels: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for level in levels:
        found.update(level.get("environment_variables") or ())
        found.update(level.get("secure_variables") or ())
    return found


def _fmt(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _strings(value: Any, path: Path_) -> Iterable[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _check_pipeline(
    name: str, pipeline: dict[str, Any], environment_vars: set[str]
) -> list[tuple[Path_, str]]:
    problems: list[tuple[Path_, str]] = []
    add = problems.append
    has_template, has_stages = "template" in pipeline, "stages" in pipeline
    if has_template == has_stages:
        add(
            (
                (),
                "has both `template` and `stages`: a pipeline takes one"
                if has_template
                else "has neither `template` nor `stages`",
            )
        )
    params = set(pipeline.get("parameters") or ())
    for path, text in _strings(pipeline, ()):
        for ref in _PARAM_REF.findall(text):
            if ref not in params:
                add((path, f"#{{{ref}}} names a parameter the pipeline does not declare"))
    for key, value in (pipeline.get("secure_variables") or {}).items():
        if not _SECURE_VALUE.match(value):
            add((("secure_variables", key), UNENCRYPTED_VALUE))
    materials = pipeline["materials"]
    for mname, material in materials.items():
        if "includes" in material and "ignore" in material:
            add((("materials", mname), "has both `includes` and `ignore`: GoCD takes one"))
    pipeline_vars = _declared(pipeline) | environment_vars
    label = pipeline.get("label_template", "")
    for ref in _LABEL_REF.findall(label):
        ok = ref == "COUNT" or ref in materials
        if ref.startswith("env:"):
            ok = ref[4:] in pipeline_vars
        if not ok:
            add(
                (("label_template",), f"${{{ref}}} is neither COUNT, a material nor a declared env: variable")
            )
    seen_stages: dict[str, int] = {}
    for index, entry in enumerate(pipeline.get("stages") or ()):
        ((stage_name, stage),) = entry.items()
        spath: Path_ = ("stages", index, stage_name)
        first = seen_stages.setdefault(stage_name.lower(), index)
        if first != index:
            add((spath, f"stage name {stage_name!r} is used twice (stages[{first}] and stages[{index}])"))
        for key, value in (stage.get("secure_variables") or {}).items():
            if not _SECURE_VALUE.match(value):
                add(((*spath, "secure_variables", key), UNENCRYPTED_VALUE))
        if "jobs" in stage:
            misplaced = [k for k in _JOB_KEYS if k in stage]
            if misplaced:
                add(
                    (
                        spath,
                        f"has `jobs` and job keys at stage level ({', '.join(misplaced)}): "
                        "put them under a job",
                    )
                )
            jobs = stage["jobs"]
        elif "tasks" in stage:
            jobs = {stage_name: stage}  # the single-job shorthand
        else:
            add((spath, "has neither `jobs` nor `tasks`"))
            continue
        seen_jobs: dict[str, str] = {}
        stage_vars = pipeline_vars | _declared(stage)
        for job_name, job in jobs.items():
            jpath: Path_ = (*spath, "jobs", job_name) if "jobs" in stage else spath
            other = seen_jobs.setdefault(job_name.lower(), job_name)
            if other != job_name:
                add((jpath, f"job names {other!r} and {job_name!r} differ only in case"))
            if job is not stage:
                for key, value in (job.get("secure_variables") or {}).items():
                    if not _SECURE_VALUE.match(value):
                        add(((*jpath, "secure_variables", key), UNENCRYPTED_VALUE))
            if job.get("resources") and "elastic_profile_id" in job:
                add((jpath, "has both `resources` and `elastic_profile_id`: GoCD takes one"))
            job_vars = stage_vars | (_declared(job) if job is not stage else set())
            for tindex, task in enumerate(job["tasks"]):
                _check_task(task, (*jpath, "tasks", tindex), job_vars, add)
    return problems


UNENCRYPTED_VALUE = (
    "secure variable holds a plain value: encrypt it with GoCD's encryption API (AES:...) "
    "or reference a secret ({{SECRET:[config][key]}})"
)


def _check_task(task: dict[str, Any], path: Path_, declared: set[str], add: Callable) -> None:
    ((kind, body),) = task.items()
    if "on_cancel" in body:
        _check_task(body["on_cancel"], (*path, kind, "on_cancel"), declared, add)
    if kind != "exec":
        return
    command = body["command"]
    arguments = [str(a) for a in body.get("arguments") or ()]
    program = command.rsplit("/", 1)[-1]
    flag = arguments[0] if arguments else ""
    if program in _SHELLS and flag.startswith("-") and "c" in flag and len(arguments) > 1:
        script = _SINGLE_QUOTED.sub("", arguments[1].replace("\\$", ""))
        for braced, bare in _SHELL_REF.findall(script):
            var = braced or bare
            if var not in declared and var not in AGENT_VARIABLES and not var.startswith("GO_"):
                add(
                    (
                        (*path, kind, "arguments", 1),
                        f"the shell script reads ${var}, which neither the pipeline, its stage, its job "
                        "nor an environment declares (GoCD would run it empty)",
                    )
                )
        return
    for where, text in (
        ("command", command),
        *((("arguments", i), a) for i, a in enumerate(arguments)),
        ("working_directory", body.get("working_directory") or ""),
    ):
        for var in _BRACED_REF.findall(text):
            sub = (where,) if isinstance(where, str) else where
            add(
                (
                    (*path, kind, *sub),
                    f"${{{var}}} reaches the program literally: GoCD does not expand variables in exec "
                    "arguments (use /bin/sh -c, or read it from the environment)",
                )
            )


# -- documents, files and routes ----------------------------------------------------------------------


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _unique_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (YAML keeps only the last one)", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_file(path: str | Path) -> Any:
    """A YAML file, refusing duplicate keys (PyYAML would keep the last one silently)."""
    with open(path, "rb") as handle:
        return yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


class Validator:
    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        self.schema = schema or load_schema()
        self._check = SchemaCompiler(self.schema).compile(self.schema)

    def check_document(self, document: Any, file: str) -> list[Issue]:
        """Schema and per-pipeline semantic rules for one parsed file."""
        found: list[tuple[Path_, str]] = []
        self._check(document, (), found)
        issues = [_issue(file, path, message) for path, message in found]
        if not isinstance(document, dict):
            return issues
        broken = {i.pipeline for i in issues}
        pipelines = document.get("pipelines")
        if not isinstance(pipelines, dict):
            return issues
        env_vars: dict[str, set[str]] = {}
        environments = document.get("environments")
        if isinstance(environments, dict) and not any(i.path.startswith("environments") for i in issues):
            for env in environments.values():
                for pipeline in env.get("pipelines") or ():
                    env_vars.setdefault(pipeline, set()).update(_declared(env))
        for name, pipeline in pipelines.items():
            if name in broken:
                continue  # the schema's messages come first; semantic rules need the right shape
            for path, message in _check_pipeline(name, pipeline, env_vars.get(name, set())):
                issues.append(Issue(file, name, _fmt(path), message))
        return issues

    def check_documents(self, documents: Iterable[tuple[str, Any]]) -> list[Issue]:
        """Several files checked together: each on its own, then pipeline names across all of them."""
        issues: list[Issue] = []
        owners: dict[str, tuple[str, str]] = {}
        for file, document in documents:
            issues.extend(self.check_document(document, file))
            pipelines = document.get("pipelines") if isinstance(document, dict) else None
            for name in pipelines if isinstance(pipelines, dict) else ():
                if not isinstance(name, str):
                    continue
                first = owners.setdefault(name.lower(), (file, name))
                if first != (file, name):
                    issues.append(
                        Issue(
                            file,
                            name,
                            "",
                            f"pipeline name is also defined in {first[0]} (as {first[1]}); "
                            "GoCD needs names unique, ignoring case",
                        )
                    )
        return issues


def _issue(file: str, path: Path_, message: str) -> Issue:
    if len(path) >= 2 and path[0] == "pipelines":
        return Issue(file, str(path[1]), _fmt(path[2:]), message)
    return Issue(file, None, _fmt(path), message)


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and ``*.gocd.yaml``/``*.gocd.yml`` files under directories named (sorted)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)))
        elif path.exists():
            found.append(path)
        else:
            raise PipelineError(f"{path}: no such file or directory")
    return found


@dataclass(frozen=True)
class Report:
    files: int
    pipelines: int
    issues: list[Issue]


def validate_paths(paths: Iterable[str | Path], routes_file: str | Path | None = None) -> Report:
    """Check files and directories (and a routing file against them); never raises for bad content."""
    validator = Validator()
    files = expand(paths)
    documents: list[tuple[str, Any]] = []
    issues: list[Issue] = []
    for path in files:
        try:
            documents.append((str(path), load_file(path)))
        except yaml.YAMLError as exc:
            issues.append(Issue(str(path), None, "", f"not valid YAML: {exc}".replace("\n", " ")))
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue(str(path), None, "", f"cannot read: {exc}"))
    issues.extend(validator.check_documents(documents))
    pipelines: dict[str, Mapping[str, Any]] = {}
    for _file, document in documents:
        if isinstance(document, dict) and isinstance(document.get("pipelines"), dict):
            pipelines.update(document["pipelines"])
    if routes_file is not None:
        try:
            data = load_file(routes_file)
        except (OSError, yaml.YAMLError) as exc:
            issues.append(Issue(str(routes_file), None, "", f"cannot read the routing file: {exc}"))
        else:
            issues.extend(check_routes(data, str(routes_file), pipelines))
    return Report(files=len(files), pipelines=len(pipelines), issues=issues)


def check_routes(data: Any, file: str, pipelines: Mapping[str, Mapping[str, Any]]) -> list[Issue]:
    """Every route names a pipeline among ``pipelines`` that declares, at pipeline level, every variable
    the bridge passes to it (GoCD answers 422 otherwise)."""
    issues: list[Issue] = []
    routes = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(routes, list):
        return [Issue(file, None, "routes", "must be a list of routes")]
    lowered = {name.lower(): name for name in pipelines}
    for index, route in enumerate(routes):
        where = f"routes[{index}]"
        if not isinstance(route, dict):
            issues.append(Issue(file, None, where, "must be a mapping"))
            continue
        name = route.get("pipeline")
        if not isinstance(name, str) or not names.is_valid(name):
            issues.append(
                Issue(file, None, f"{where}.pipeline", f"{_show(name)} is not a GoCD pipeline name")
            )
            continue
        variables = route.get("variables") or {}
        if not isinstance(variables, dict):
            issues.append(Issue(file, name, f"{where}.variables", "must be a mapping of NAME: value"))
            continue
        actual = lowered.get(name.lower())
        if actual is None:
            issues.append(
                Issue(file, name, where, "no checked file defines this pipeline (GoCD answers 404)")
            )
            continue
        declared = set(pipelines[actual].get("environment_variables") or ()) | set(
            pipelines[actual].get("secure_variables") or ()
        )
        missing = [v for v in (*BRIDGE_VARIABLES, *sorted(variables)) if v not in declared]
        if missing:
            issues.append(
                Issue(
                    file,
                    name,
                    where,
                    f"the pipeline does not declare {', '.join(missing)} at pipeline level: "
                    "GoCD answers 422 when the bridge passes them",
                )
            )
    return issues
