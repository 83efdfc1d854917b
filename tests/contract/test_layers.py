"""Drift guard: imports inside mlflow_ext point down its layers (see mlflow_ext/__init__.py).

Read from the source with ``ast``, so an import hidden inside a function counts like any other.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_ext import errors

PACKAGE = Path(__file__).resolve().parents[2] / "mlflow_ext"

# Bottom to top. A module imports from its own layer's shared pieces or below; features never import
# each other; only the entry points sit above the features.
FOUNDATION = ("errors", "settings", "pglock", "db_pools", "migrations", "mlflow_internals", "progress")
SHARED = (
    "lineage",
    "data",
    "run_context",
    "artifacts",
    "artifact_access",
    "policy",
    "events",
    "routing",
    "clients",
    "tracking_store",
    "tracking_migrations",
    "registry_store",
    "rest_store",
    "rest_post",
)
FEATURES = ("auth", "promotion", "bridge", "gocd", "stages")
ENTRY_POINTS = ("cli", "commands", "server")
LAYERS = {
    **{name: 0 for name in FOUNDATION},
    **{name: 1 for name in SHARED},
    **{name: 2 for name in FEATURES},
    **{name: 3 for name in ENTRY_POINTS},
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported mlflow_ext module
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """``mlflow_ext.a.b.C`` -> the longest prefix that is a module."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports() -> list[Import]:
    modules = _modules()
    found: list[Import] = []
    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rsplit(".", 1)[0]

        def visit(node: ast.AST, in_function: bool, source: str = source, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parent = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join([*parent, *([child.module] if child.module else [])])
                    targets = [f"{base}.{alias.name}" for alias in child.names]
                for target in targets:
                    if target.split(".")[0] == "mlflow_ext":
                        found.append(Import(source, _resolve(target, modules), child.lineno, in_function))
                visit(child, nested)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _part(module: str) -> str:
    """The top-level piece a module belongs to: ``mlflow_ext.auth.store`` -> ``auth``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    unplaced = sorted({_part(m) for m in _modules() if _part(m) and _part(m) not in LAYERS})
    assert not unplaced, (
        f"place these in a layer (tests/contract/test_layers.py, mlflow_ext/__init__.py): {unplaced}"
    )


def _violations(imports: list[Import]) -> list[str]:
    wrong = []
    for imp in imports:
        source, target = _part(imp.source), _part(imp.target)
        if not target or source == target or not source:
            continue  # the package's own __init__, or inside one piece
        if source in FEATURES and target in FEATURES:
            wrong.append(f"{imp.source}:{imp.line} imports the feature {imp.target} sideways")
        elif LAYERS[target] > LAYERS[source]:
            wrong.append(f"{imp.source}:{imp.line} imports {imp.target}, a layer above it")
    return wrong


def test_imports_point_down_and_features_stay_apart():
    wrong = _violations(_imports())
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for imp in _imports():
        if imp.target != imp.source and imp.target != "mlflow_ext":
            graph.setdefault(imp.source, set()).add(imp.target)
    cycles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_mlflow_ext_is_imported_at_module_top():
    """An import inside a function hides a layer loop; the CLI loads its subcommands with importlib."""
    hidden = [f"{imp.source}:{imp.line} imports {imp.target}" for imp in _imports() if imp.in_function]
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("mlflow_ext.auth.policy", "mlflow_ext.promotion.promote", "sideways"),
        ("mlflow_ext.settings", "mlflow_ext.policy.rules", "a layer above"),
        ("mlflow_ext.lineage", "mlflow_ext.stages.common", "a layer above"),
    ],
)
def test_the_rules_name_a_wrong_import(source, target, problem):
    assert problem in " ".join(_violations([Import(source, target, 1, False)]))


def _exception_classes(tree: ast.AST) -> list[ast.ClassDef]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception")) for base in node.bases
        )
    ]


def test_every_public_exception_lives_in_errors():
    """One documented hierarchy: a module-private exception (``_Name``) may stay where it is raised."""
    strays = [
        f"{name}.{node.name}"
        for name, path in _modules().items()
        if name != "mlflow_ext.errors"
        for node in _exception_classes(ast.parse(path.read_text(encoding="utf-8")))
        if not node.name.startswith("_")
    ]
    assert not strays, f"move these to mlflow_ext/errors.py: {strays}"


def test_every_error_has_an_exit_code_and_the_table_lists_it():
    table = (errors.__doc__ or "").split("| exit code |", 1)[1]
    code = ""
    listed: dict[str, str] = {}
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) > 2:
            code = cells[1].strip() or code  # a row that goes on keeps the code above
            listed.update({name: code for name in re.findall(r"\b[A-Z][A-Za-z]+\b", cells[2])})
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.MlflowExtError):
            assert cls.__name__ in listed, f"{cls.__name__} is missing from the exit-code table in errors.py"
            assert listed[cls.__name__] == str(cls.exit_code), f"{cls.__name__} exits {cls.exit_code}"
