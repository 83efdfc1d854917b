"""Drift guard: the MLflow internals mlflow_ext relies on are still there, as its wrappers use them.

``mlflow_ext.mlflow_internals.INTERNALS`` is the list; each entry is checked against the installed MLflow
(the version pinned in requirements/server.lock, or the previous minor's requirements/server-3.16.lock
in a venv of its own). An internal bounded to other minors (``since`` / ``until``) is skipped, naming the
range; every other one must be there. A failure names the internal, the mlflow_ext module that uses it
and the MLflow version: adapt mlflow_ext/mlflow_internals.py, nowhere else. The last test keeps the rest
of the package from reaching into MLflow's privates directly.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from mlflow_ext import mlflow_internals
from mlflow_ext.errors import MlflowInternalMissing
from mlflow_ext.mlflow_internals import INTERNALS, Internal

PACKAGE = Path(__file__).resolve().parents[2] / "mlflow_ext"
_ABSENT = object()
_PASSABLE = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_OPTIONAL = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
# The listed internals' own names (private or module-level tables), read on any object.
_LISTED_NAMES = frozenset(
    last
    for last in (internal.name.rsplit(".", 1)[-1] for internal in INTERNALS)
    if last.startswith("_") or last.isupper()
)


def _fail(internal: Internal, reason: str) -> None:
    pytest.fail(mlflow_internals.missing(internal, reason), pytrace=False)


def _resolve(internal: Internal) -> Any:
    try:
        return mlflow_internals.resolve(internal)
    except MlflowInternalMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def _target(internal: Internal) -> Any:
    if internal.instance_args is None:
        return _resolve(internal)
    owner, attribute = internal.name.rsplit(".", 1)
    instance = _resolve(dataclasses.replace(internal, name=owner))(*internal.instance_args)
    found = getattr(instance, attribute, _ABSENT)
    if found is _ABSENT:
        _fail(internal, f"is no longer set on a new {owner}")
    return found


def _check_params(internal: Internal, target: Any, passed: tuple[str, ...]) -> None:
    if not callable(target):
        _fail(internal, f"is no longer callable (it is a {type(target).__name__})")
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError) as exc:
        _fail(internal, f"has no readable signature ({exc})")
    names = tuple(p.name for p in parameters)
    leading = parameters[: len(passed)]
    if tuple(p.name for p in leading) != passed or any(p.kind not in _PASSABLE for p in leading):
        _fail(internal, f"now takes {names}; mlflow_ext passes {passed}")
    required = [p.name for p in parameters[len(passed) :] if p.kind not in _OPTIONAL and p.default is p.empty]
    if required:
        _fail(internal, f"now requires {tuple(required)} too; mlflow_ext passes {passed}")


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.qualname)
def test_each_internal_is_as_mlflow_ext_uses_it(internal: Internal) -> None:
    if not mlflow_internals.applies(internal):
        installed = mlflow_internals.mlflow_version()
        pytest.skip(f"{internal.qualname} exists in MLflow {internal.versions}, not {installed}")
    target = _target(internal)
    if internal.kind is not None and not isinstance(target, internal.kind):
        _fail(internal, f"is a {type(target).__name__}, not a {internal.kind.__name__}")
    if internal.value is not None and target != internal.value:
        _fail(internal, f"is {target!r}, not {internal.value!r}")
    lacking = [name for name in internal.attributes if not hasattr(target, name)]
    if lacking:
        _fail(internal, f"has no attribute {', '.join(lacking)}")
    if internal.params is not None:
        _check_params(internal, target, internal.params)
    if internal.replaced:
        module = importlib.import_module(internal.module)
        readers = [
            name
            for name, function in vars(module).items()
            if inspect.isfunction(function)
            and function.__module__ == internal.module
            and internal.name in function.__code__.co_names
        ]
        if not readers:
            _fail(
                internal,
                "is no longer looked up in its module by MLflow's own code, so replacing it does nothing",
            )
    if internal.frame:
        code = inspect.unwrap(target)
        module_name = getattr(code, "__globals__", {}).get("__name__")
        if (
            getattr(code, "__code__", None) is None
            or code.__code__.co_name != internal.name
            or module_name != internal.module
        ):
            _fail(internal, "no longer runs as a frame of that name in that module")
    if internal.overridden_by is not None:
        module_name, class_name = internal.overridden_by.split(":")
        ours = getattr(importlib.import_module(module_name), class_name)
        owner_name, method = internal.name.rsplit(".", 1)
        owner = _resolve(dataclasses.replace(internal, name=owner_name))
        if not issubclass(ours, owner):
            _fail(internal, f"belongs to a class {internal.overridden_by} no longer derives from")
        mlflow_names = tuple(inspect.signature(target).parameters)
        our_names = tuple(inspect.signature(getattr(ours, method)).parameters)
        if mlflow_names != our_names:
            _fail(internal, f"now takes {mlflow_names}; {internal.overridden_by} overrides it as {our_names}")


def test_the_wrapped_validators_still_decide_routes() -> None:
    """policy.wrap_validators finds MLflow's validators by identity: one that no route uses is a no-op."""
    table = _resolve(mlflow_internals.BEFORE_REQUEST_VALIDATORS)
    in_use = set(table.values())
    for internal in mlflow_internals.AUTH_VALIDATORS:
        if mlflow_internals.applies(internal) and _resolve(internal) not in in_use:
            _fail(internal, "decides no route in BEFORE_REQUEST_VALIDATORS any more")


def test_the_installed_mlflow_is_a_supported_minor() -> None:
    """A minor the table was not checked against may lack a bounded internal's counterpart unnoticed."""
    version = mlflow_internals.mlflow_version()
    assert ".".join(version.split(".")[:2]) in mlflow_internals.SUPPORTED_MINORS, (
        f"MLflow {version} is not in mlflow_internals.SUPPORTED_MINORS {mlflow_internals.SUPPORTED_MINORS}: "
        "check the internals bounded by since/until against it, then add it"
    )


def test_version_bounds_are_supported_minors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bound names a supported minor, and an internal applies exactly inside its bounds."""
    for internal in INTERNALS:
        for bound in (internal.since, internal.until):
            assert bound is None or bound in mlflow_internals.SUPPORTED_MINORS, internal.qualname
    bounded = Internal("m", "n", "u", since="3.16", until="3.17")
    for version, expected in (("3.15.9", False), ("3.16.0", True), ("3.17.2", True), ("3.18.0rc1", False)):
        monkeypatch.setattr(mlflow_internals, "mlflow_version", lambda version=version: version)
        assert mlflow_internals.applies(bounded) is expected, version
        assert mlflow_internals.applies(Internal("m", "n", "u")) is True


def test_every_listed_internal_is_in_the_table() -> None:
    listed = set(INTERNALS)
    for name, value in vars(mlflow_internals).items():
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if isinstance(item, Internal):
                assert item in listed, f"mlflow_internals.{name} is missing from INTERNALS"


def _private_uses(path: Path) -> list[str]:
    """``from mlflow... import _x``, ``<name bound to an mlflow import>._x`` and a listed internal read
    on any object (``auth_module._run_requirement``, ``self._bucket_owner_params``) in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
        ) or (isinstance(node, ast.Attribute) and node.attr in _LISTED_NAMES):
            found.append(f"{path.name}:{node.lineno} reads {ast.unparse(node)}")
    return found


def test_only_mlflow_internals_reaches_into_mlflow_privates() -> None:
    leaks = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "mlflow_internals.py"
        for use in _private_uses(path)
    ]
    assert not leaks, "MLflow internals used outside mlflow_ext/mlflow_internals.py:\n" + "\n".join(leaks)
