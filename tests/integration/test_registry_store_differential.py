"""The PostgreSQL registry store against MLflow's own, differentially (hypothesis).

Two databases on one real PostgreSQL: MLflow's registry ``SqlAlchemyStore`` on one, ``PostgresRegistryStore``
on the other. Each example runs the same random sequence of registry calls on both (models created and
deleted, versions created and deleted, aliases set and removed, version tags set and removed, stages
changed), then looks every model up by every alias (known, unknown, the reserved ``latest``, bad names and
aliases), and searches registered models (by name and tags, ordered, paged; bad ones too). Every answer
and every error (type, code, message) must match.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.services import mlflow_schema_databases

pytestmark = pytest.mark.integration
DB_USER = "mlflow"
EXAMPLES = int(os.environ.get("REGISTRY_STORE_DIFF_EXAMPLES", "40"))
MODELS = 3
ALIASES = ["champion", "challenger"]
LOOKUP_ALIASES = [*ALIASES, "latest", "LATEST", "unknown", "bad alias!", "v1"]

model_st = st.integers(0, MODELS - 1)
version_st = st.integers(1, 3)
operation_st = st.one_of(
    st.tuples(st.just("create_model"), model_st, st.none()),
    st.tuples(st.just("create_version"), model_st, st.none()),
    st.tuples(st.just("create_version"), model_st, st.none()),
    st.tuples(st.just("set_alias"), model_st, st.tuples(st.sampled_from(ALIASES), version_st)),
    st.tuples(st.just("set_alias"), model_st, st.tuples(st.sampled_from(ALIASES), version_st)),
    st.tuples(st.just("delete_alias"), model_st, st.sampled_from(ALIASES)),
    st.tuples(
        st.just("set_version_tag"),
        model_st,
        st.tuples(version_st, st.sampled_from(["team", "note"]), st.sampled_from(["a", "b", ""])),
    ),
    st.tuples(
        st.just("delete_version_tag"), model_st, st.tuples(version_st, st.sampled_from(["team", "note"]))
    ),
    st.tuples(st.just("delete_version"), model_st, version_st),
    st.tuples(st.just("stage"), model_st, st.tuples(version_st, st.sampled_from(["Staging", "Production"]))),
    st.tuples(st.just("delete_model"), model_st, st.none()),
    st.tuples(
        st.just("set_model_tag"),
        model_st,
        st.tuples(
            st.sampled_from(["team", "owner", "mlflow.prompt.is_prompt"]), st.sampled_from(["a", "b", "true"])
        ),
    ),
    st.tuples(st.just("delete_model_tag"), model_st, st.sampled_from(["team", "owner"])),
)
SEARCH_FILTERS = [
    "name LIKE '{prefix}%'",
    "name LIKE '{prefix}%' AND tags.team = 'a'",
    "name LIKE '{prefix}%' AND tags.team != 'a'",
    "name LIKE '{prefix}%' AND tags.team = 'a' AND tags.owner LIKE '%'",
    "name = '{prefix}0'",
    "name LIKE '{prefix}%' AND tags.`mlflow.prompt.is_prompt` = 'true'",
    "tags.team ILIKE 'A' AND name ILIKE '{prefix}%'",
    "bogus.key = 'x'",
    "name >",
]
search_st = st.tuples(
    st.sampled_from(SEARCH_FILTERS),
    st.sampled_from([None, ["name DESC"], ["last_updated_timestamp"], ["name", "name"], ["bogus"]]),
    st.sampled_from([1, 2, 100, 1001, 0]),
)


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Any, Any]]:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from mlflow_ext.registry_store import PostgresRegistryStore

    with mlflow_schema_databases(("registry_ref", "registry_fast"), DB_USER) as (uris, _artifacts):
        reference = SqlAlchemyStore(uris["registry_ref"])
        fast = PostgresRegistryStore(uris["registry_fast"])
        yield reference, fast
        reference.engine.dispose()
        fast.engine.dispose()


def _call(store: Any, names: list[str], operation: tuple) -> Any:
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag

    kind, index, args = operation
    name = names[index]
    if kind == "create_model":
        return store.create_registered_model(name).name
    if kind == "create_version":
        return store.create_model_version(name, "s3://bucket/model", run_id=None).version
    if kind == "set_alias":
        alias, version = args
        return store.set_registered_model_alias(name, alias, version)
    if kind == "delete_alias":
        return store.delete_registered_model_alias(name, args)
    if kind == "set_version_tag":
        version, key, value = args
        return store.set_model_version_tag(name, version, ModelVersionTag(key, value))
    if kind == "delete_version_tag":
        version, key = args
        return store.delete_model_version_tag(name, version, key)
    if kind == "delete_version":
        return store.delete_model_version(name, args)
    if kind == "stage":
        version, stage = args
        return store.transition_model_version_stage(name, version, stage, False).current_stage
    if kind == "delete_model":
        return store.delete_registered_model(name)
    if kind == "set_model_tag":
        key, value = args
        return store.set_registered_model_tag(name, RegisteredModelTag(key, value))
    if kind == "delete_model_tag":
        return store.delete_registered_model_tag(name, args)
    raise AssertionError(kind)


def _outcome(call: Any, names: list[str]) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        result: Any = ("ok", call())
    except MlflowException as exc:
        result = ("error", type(exc).__name__, exc.error_code, exc.message)
    except Exception as exc:  # any other failure must match too
        result = ("raised", type(exc).__name__, str(exc))
    return _normalized(result, names)


def _normalized(value: Any, names: list[str]) -> Any:
    if isinstance(value, str):
        for index, name in enumerate(names):
            value = value.replace(name, f"<model {index}>")
        return value
    if isinstance(value, tuple | list):
        return type(value)(_normalized(item, names) for item in value)
    return value


def _version_view(version: Any) -> tuple:
    """Everything a ModelVersion answers, times as they are (both stores run the same calls)."""
    return (
        version.name,
        version.version,
        version.description,
        version.user_id,
        version.current_stage,
        version.source,
        version.run_id,
        version.status,
        version.status_message,
        version.run_link,
        sorted(version.tags.items()),
        sorted(version.aliases),
        version.workspace,
        version.creation_timestamp is not None,
        version.last_updated_timestamp is not None,
    )


def _lookups(store: Any, names: list[str]) -> list[Any]:
    candidates = [*names, "", "no-such-model"]
    return [
        _outcome(
            lambda name=name, alias=alias: _version_view(store.get_model_version_by_alias(name, alias)), names
        )
        for name in candidates
        for alias in LOOKUP_ALIASES
    ]


def _model_view(model: Any) -> tuple:
    return (
        model.name,
        model.description,
        sorted(_version_view(version) for version in model.latest_versions),
        sorted(model.tags.items()),
        sorted(model.aliases.items()),
        model.workspace,
        model.creation_timestamp is not None,
        model.last_updated_timestamp is not None,
    )


def _searched(store: Any, prefix: str, search: tuple) -> list[Any]:
    """Up to 4 pages of one search, each as its models in order and its next page token; or the error."""
    from mlflow.exceptions import MlflowException

    filter_template, order_by, max_results = search
    pages: list[Any] = []
    token = None
    try:
        for _ in range(4):
            found = store.search_registered_models(
                filter_template.format(prefix=prefix), max_results, order_by, token
            )
            pages.append(([_model_view(model) for model in found], found.token))
            token = found.token
            if token is None:
                break
    except MlflowException as exc:
        pages.append(("error", exc.error_code, exc.message))
    return pages


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operations=st.lists(operation_st, min_size=1, max_size=14),
    searches=st.lists(search_st, min_size=1, max_size=4),
)
@example(
    operations=[
        ("create_model", 0, None),
        ("create_version", 0, None),
        ("create_version", 0, None),
        ("set_alias", 0, ("champion", 1)),
        ("set_alias", 0, ("challenger", 1)),
        ("set_version_tag", 0, (1, "team", "a")),
        ("set_version_tag", 0, (1, "note", "")),
        ("set_alias", 0, ("champion", 2)),
        ("delete_version", 0, 1),
        ("create_model", 1, None),
        ("create_version", 1, None),
        ("create_version", 1, None),
        ("set_model_tag", 0, ("team", "a")),
        ("set_model_tag", 1, ("team", "a")),
        ("stage", 0, (2, "Production")),
    ],
    searches=[
        ("name LIKE '{prefix}%' AND tags.team = 'a'", None, 1),
        ("name LIKE '{prefix}%'", ["name DESC"], 100),
    ],
)
def test_the_fast_registry_store_answers_as_mlflow_does(stores, operations, searches):
    reference, fast = stores
    prefix = f"m-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(MODELS)]
    for step, operation in enumerate(operations):
        expected = _outcome(lambda operation=operation: _call(reference, names, operation), names)
        got = _outcome(lambda operation=operation: _call(fast, names, operation), names)
        assert got == expected, f"call {step}: {operation!r}"
        assert _lookups(fast, names) == _lookups(reference, names), f"after call {step}: {operation!r}"
    for search in searches:
        assert _searched(fast, prefix, search) == _searched(reference, prefix, search), f"search {search!r}"


def test_the_fast_registry_store_is_the_servers_store_for_postgresql_unless_turned_off(stores, monkeypatch):
    """MLflow's server registry builds it for a postgresql URI; MLFLOW_EXT_FAST_TRACKING_STORE=false gives
    MLflow's own store."""
    from mlflow.server.handlers import ModelRegistryStoreRegistryWrapper
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from mlflow_ext.registry_store import PostgresRegistryStore

    _, fast = stores
    uri = fast.db_uri
    monkeypatch.delenv("MLFLOW_EXT_FAST_TRACKING_STORE", raising=False)
    built = ModelRegistryStoreRegistryWrapper().get_store_builder(uri)(store_uri=uri)
    assert type(built) is PostgresRegistryStore
    built.engine.dispose()
    monkeypatch.setenv("MLFLOW_EXT_FAST_TRACKING_STORE", "false")
    built = ModelRegistryStoreRegistryWrapper().get_store_builder(uri)(store_uri=uri)
    assert type(built) is SqlAlchemyStore
    built.engine.dispose()
