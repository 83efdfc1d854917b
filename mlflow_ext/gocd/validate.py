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
- a ``timer.spec`` is a Quartz cron expression GoCD accepts (``schedule.check``: 6 or 7 fields, seconds
  first, one of day-of-month and day-of-week ``?``);
- secure variables hold encrypted values (``AES:...``) or secret references (``{{SECRET:[..][..]}}``);
- pipeline names are unique across all files checked together; with a routing file, every route's
  pipeline exists and declares every variable the bridge passes, at pipeline level (else GoCD answers 422).

Every message names the file, the pipeline (when there is one) and the path inside it.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from mlflow_ext import progress
from mlflow_ext.errors import FastYamlUnsupported, PipelineError
from mlflow_ext.gocd import fastyaml, names, schedule
from mlflow_ext.routing import BRIDGE_VARIABLES

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


def _describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SchemaCompiler:
    """Turns the schema into nested closures once; each closure appends (path, message) pairs."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema
        self._refs: dict[str, Check | None] = {}

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
            checks.append(self._any_of(schema["anyOf"], schema.get("description")))
        if len(checks) == 1:
            return checks[0]
        typed = "type" in schema
        if typed and len(checks) == 2:
            allowed, wanted = self._python_types(schema["type"])
            family = checks[1]

            def typed_check(value: Any, path: Path_, errors: list) -> None:
                if type(value) not in allowed:
                    errors.append((path, f"must be {wanted}, not {_describe(value)}"))
                else:
                    family(value, path, errors)

            return typed_check

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
            self._refs[key] = None  # compiling: a reference back to it (on_cancel) goes through the table
            self._refs[key] = self.compile(self.root["$defs"][key])
        compiled = self._refs[key]
        if compiled is not None:
            return compiled
        refs = self._refs

        def indirect(value: Any, path: Path_, errors: list) -> None:
            check = refs[key]
            assert check is not None
            check(value, path, errors)

        return indirect

    _PY_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "object": (dict,),
        "array": (list,),
        "null": (type(None),),
    }
    _WANTED: ClassVar[dict[str, str]] = {
        "object": "a mapping",
        "array": "a list",
        "integer": "an integer",
        "string": "a string",
        "boolean": "true or false",
        "number": "a number",
        "null": "null",
    }

    def _python_types(self, spec: str | list[str]) -> tuple[frozenset[type], str]:
        kinds = [spec] if isinstance(spec, str) else list(spec)
        unknown = [k for k in kinds if k not in self._PY_TYPES]
        if unknown:
            raise ValueError(f"unknown JSON type(s) {unknown}")
        allowed = frozenset(t for k in kinds for t in self._PY_TYPES[k])
        return allowed, " or ".join(self._WANTED[k] for k in kinds)

    def _type(self, spec: str | list[str]) -> Check:
        allowed, wanted = self._python_types(spec)

        def check(value: Any, path: Path_, errors: list) -> None:
            if type(value) not in allowed:
                errors.append((path, f"must be {wanted}, not {_describe(value)}"))

        return check

    def _enum(self, options: list[Any]) -> Check:
        allowed = ", ".join(str(o) for o in options)

        def check(value: Any, path: Path_, errors: list) -> None:
            if not any(value == o and type(value) is type(o) for o in options):
                errors.append((path, f"{_show(value)} is not one of: {allowed}"))

        return check

    def _string(self, schema: Mapping[str, Any]) -> Check:
        pattern = None
        if "pattern" in schema:
            source = schema["pattern"]
            # ECMA-262's $ (JSON Schema's dialect) ends the input; Python's also matches before a final \n.
            if source.endswith("$") and not source.endswith("\\$"):
                source = source[:-1] + r"\Z"
            pattern = re.compile(source)
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

    def _any_of(self, branches: list[Any], description: str | None = None) -> Check:
        compiled = [self.compile(b) for b in branches]
        resolved = [self._resolve(b) for b in branches]
        required = [set(b.get("required", ())) for b in resolved]
        types = [self._branch_types(b) for b in resolved]
        known = {key for b in resolved for key in b.get("properties", {})}
        objects = any(b.get("type") == "object" for b in resolved)

        def check(value: Any, path: Path_, errors: list) -> None:
            results = []
            for index, branch in enumerate(compiled):
                found: list = []
                branch(value, path, found)
                if not found:
                    return
                # Prefer a branch of the value's type whose required keys are all present, then the one
                # with the fewest problems.
                kinds = types[index]
                wrong_type = kinds is not None and type(value) not in kinds
                has_keys = isinstance(value, dict) and required[index] <= set(value)
                results.append((wrong_type, not has_keys, len(found), index, found))
            results.sort(key=lambda r: r[:4])
            if objects and isinstance(value, dict) and all(r[1] for r in results):
                # No form fits: say what was expected and which keys no form knows.
                strange = [k for k in value if k not in known]
                what = f"is not {description}" if description else "matches none of the allowed forms"
                more = f": unknown key {', '.join(repr(k) for k in strange)}" if strange else ""
                errors.append((path, what + more))
                return
            errors.extend(results[0][4])

        return check

    def _branch_types(self, schema: Mapping[str, Any]) -> frozenset[type] | None:
        if "type" in schema:
            return self._python_types(schema["type"])[0]
        if "enum" in schema:
            return frozenset(type(v) for v in schema["enum"])
        if "const" in schema:
            return frozenset({type(schema["const"])})
        return None

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
# Set by the agent's own environment on any POSIX host, and the MLflow connection every platform agent
# has in its environment (gocd/README.md); everything else must be declared.
AGENT_VARIABLES = frozenset(
    {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
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
    name: str, pipeline: dict[str, Any], environment_vars: set[str], may_have_params: bool = True
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
    timer = pipeline.get("timer")
    if isinstance(timer, dict) and isinstance(timer.get("spec"), str):
        problem = schedule.check(timer["spec"])
        if problem is not None:
            add((("timer", "spec"), f"{timer['spec']!r} is not a timer spec GoCD accepts: {problem}"))
    params = set(pipeline.get("parameters") or ())
    for path, text in _strings(pipeline, ()) if may_have_params else ():
        for ref in _PARAM_REF.findall(text):
            if ref not in params:
                add((path, f"#{{{ref}}} names a parameter the pipeline does not declare"))
    for key, value in (pipeline.get("secure_variables") or {}).items():
        if not _SECURE_VALUE.fullmatch(value):
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
            if not _SECURE_VALUE.fullmatch(value):
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
                    if not _SECURE_VALUE.fullmatch(value):
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


_STR = "tag:yaml.org,2002:str"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader with a shorter path for scalar tags (same answers: YAML 1.1 implicit types)."""

    _implicit = yaml.SafeLoader.yaml_implicit_resolvers

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in self._implicit.get(value[:1] if value else "", ()):
                    if regexp.match(value):
                        return tag
            return _STR
        return super().resolve(kind, value, implicit)


_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


def load_text(text: str) -> Any:
    """One YAML document as plain data, refusing duplicate keys (PyYAML would keep the last one silently).

    The C parser composes the node graph; this converts it, handing every tag but plain strings, mappings
    and lists to PyYAML's safe constructor, so the data equals ``yaml.safe_load``'s.
    """
    try:
        return fastyaml.load(text)
    except FastYamlUnsupported:
        pass  # outside the generator's subset: PyYAML decides
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _Converter(loader).convert(node)
    finally:
        loader.dispose()


class _Converter:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.seen: dict[int, Any] = {}

    def convert(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        known = self.seen.get(id(node))
        if known is not None:
            return known  # an alias
        if tag == _MAP:
            if any(key.tag == _MERGE for key, _ in node.value):
                self.loader.flatten_mapping(node)
            mapping: dict[Any, Any] = {}
            self.seen[id(node)] = mapping
            for key_node, value_node in node.value:
                key = self.convert(key_node)
                if key in mapping:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (YAML keeps only the last one)",
                        key_node.start_mark,
                    )
                mapping[key] = self.convert(value_node)
            return mapping
        if tag == _SEQ:
            items: list[Any] = []
            self.seen[id(node)] = items
            items.extend(self.convert(item) for item in node.value)
            return items
        return self.loader.construct_object(node, deep=True)


def load_file(path: str | Path) -> Any:
    return load_text(Path(path).read_text(encoding="utf-8"))


class Validator:
    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        self.schema = schema or load_schema()
        self._check = SchemaCompiler(self.schema).compile(self.schema)

    def check_document(self, document: Any, file: str, text: str | None = None) -> list[Issue]:
        """Schema and per-pipeline semantic rules for one parsed file (``text``: its source, if known)."""
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
            params = text is None or "#{" in text
            for path, message in _check_pipeline(name, pipeline, env_vars.get(name, set()), params):
                issues.append(Issue(file, name, _fmt(path), message))
        return issues

    def check_documents(
        self, documents: Iterable[tuple[str, Any]], texts: Mapping[str, str] | None = None
    ) -> list[Issue]:
        """Several files checked together: each on its own, then pipeline names across all of them."""
        results = [
            FileResult(
                file,
                self.check_document(document, file, texts.get(file) if texts else None),
                declared_by(document),
            )
            for file, document in documents
        ]
        return [issue for result in results for issue in result.issues] + cross_check(results)


@dataclass(frozen=True)
class FileResult:
    """One file's problems and, per pipeline, the variables it declares at pipeline level."""

    file: str
    issues: list[Issue]
    declared: dict[str, tuple[str, ...]]


def declared_by(document: Any) -> dict[str, tuple[str, ...]]:
    pipelines = document.get("pipelines") if isinstance(document, dict) else None
    if not isinstance(pipelines, dict):
        return {}
    found = {}
    for name, pipeline in pipelines.items():
        if isinstance(name, str):
            found[name] = tuple(_declared(pipeline)) if isinstance(pipeline, dict) else ()
    return found


def cross_check(results: Iterable[FileResult]) -> list[Issue]:
    """Pipeline names unique across files, ignoring case as GoCD does."""
    issues = []
    owners: dict[str, tuple[str, str]] = {}
    for result in results:
        for name in result.declared:
            first = owners.setdefault(name.lower(), (result.file, name))
            if first != (result.file, name):
                issues.append(
                    Issue(
                        result.file,
                        name,
                        "",
                        f"pipeline name is also defined in {first[0]} (as {first[1]}); "
                        "GoCD needs names unique, ignoring case",
                    )
                )
    return issues


def yaml_message(exc: yaml.YAMLError) -> str:
    text = " ".join(str(exc).replace('in "<unicode string>", ', "").split())
    return f"not valid YAML: {text}"


@functools.lru_cache(maxsize=1)
def default_validator() -> Validator:
    return Validator()


def check_file(path: str) -> FileResult:
    """Read, parse and check one file (run in worker processes for large sets)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = load_text(text)
    except yaml.YAMLError as exc:
        return FileResult(path, [Issue(path, None, "", yaml_message(exc))], {})
    except (OSError, UnicodeDecodeError) as exc:
        return FileResult(path, [Issue(path, None, "", f"cannot read: {exc}")], {})
    return FileResult(path, default_validator().check_document(document, path, text), declared_by(document))


def workers() -> int:
    """Processes for large file sets: MLFLOW_EXT_GOCD_WORKERS, else the machine's cores (at most 4)."""
    configured = os.environ.get("MLFLOW_EXT_GOCD_WORKERS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, min(os.cpu_count() or 1, 4))


def parallel_map(
    func: Callable[[Any], Any],
    items: list[Any],
    min_items: int = 200,
    advance: Callable[[int], None] | None = None,
) -> list[Any]:
    """``[func(i) for i in items]``, spread over forked worker processes when there are many items.
    ``advance`` (a progress task's) hears of each result as it comes."""
    count = workers()
    if count < 2 or len(items) < min_items or "fork" not in multiprocessing.get_all_start_methods():
        return _collect(map(func, items), advance)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(count, mp_context=context) as pool:
        return _collect(pool.map(func, items, chunksize=max(1, len(items) // (count * 8))), advance)


def _collect(results: Iterable[Any], advance: Callable[[int], None] | None) -> list[Any]:
    if advance is None:
        return list(results)
    done = []
    for result in results:
        done.append(result)
        advance(1)
    return done


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
    files = [str(p) for p in expand(paths)]
    with progress.task("gocd validate: checking files", total=len(files), unit="files") as bar:
        results: list[FileResult] = parallel_map(check_file, files, advance=bar.advance)
    issues = [issue for result in results for issue in result.issues] + cross_check(results)
    declared: dict[str, tuple[str, ...]] = {}
    for result in results:
        declared.update(result.declared)
    if routes_file is not None:
        try:
            data = load_file(routes_file)
        except (OSError, yaml.YAMLError) as exc:
            issues.append(Issue(str(routes_file), None, "", f"cannot read the routing file: {exc}"))
        else:
            issues.extend(check_routes(data, str(routes_file), declared))
    return Report(files=len(files), pipelines=len(declared), issues=issues)


def check_routes(data: Any, file: str, pipelines: Mapping[str, Iterable[str]]) -> list[Issue]:
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
        declared = set(pipelines[actual])
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
