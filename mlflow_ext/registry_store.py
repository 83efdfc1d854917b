"""A PostgreSQL model registry store whose lookup by alias and search take fewer, plainer statements.

How the server gets it: as for the tracking store (``mlflow_ext.tracking_store``), MLflow picks a registry
store by the scheme of the registry URI in a ``ModelRegistryStoreRegistry`` (the server's is
``ModelRegistryStoreRegistryWrapper`` in ``mlflow/server/handlers.py``), which registers MLflow's builders
first and then the ``mlflow.model_registry_store`` entry points: ``pyproject.toml`` registers ``build``
below for ``postgresql``. ``MLFLOW_EXT_FAST_TRACKING_STORE`` (on by default) turns both fast stores on or
off; off, or with MLflow's workspaces on, ``build`` builds MLflow's own store exactly as MLflow's server
does.

What changes: ``get_model_version_by_alias`` (what ``models:/name@alias`` resolves through) and
``search_registered_models``. MLflow's store reads a version by alias in six statements through the ORM
(the registered model, the alias, the version, its tags, every alias of the model); here one statement
reads the version the alias points to with its tags and aliases. The search keeps MLflow's checks, filter
query, ORDER BY and page tokens, but reads the page as plain rows and its models' tags, aliases and latest
versions in two statements. Entities are built as MLflow's ``to_mlflow_entity`` builds them. Names and
aliases are checked by MLflow's own validators first. Every other case (the reserved ``latest`` alias, no
such model, no such alias, a deleted version, an out-of-range page size) is handed to MLflow's own method,
which gives MLflow's exact answer or error. ``tests/integration/test_registry_store_differential.py``
compares both stores' answers.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from mlflow_ext import mlflow_internals, tracking_store

LATEST_ALIAS = "latest"  # mlflow.store.model_registry.sqlalchemy_store._REGISTERED_MODEL_ALIAS_LATEST
DELETED_INTERNAL = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages

# The version an alias points to, in the store's workspace, with its tags (by key) and the model's aliases
# that point to it (by name); no row when the model, the alias or a live version is missing.
_BY_ALIAS = """
SELECT mv.name, mv.version, mv.creation_time, mv.last_updated_time, mv.description, mv.user_id,
       mv.current_stage, mv.source, mv.run_id, mv.status, mv.status_message, mv.run_link, mv.workspace,
       ARRAY(SELECT t.key FROM model_version_tags t
             WHERE t.workspace = mv.workspace AND t.name = mv.name AND t.version = mv.version ORDER BY t.key),
       ARRAY(SELECT t.value FROM model_version_tags t
             WHERE t.workspace = mv.workspace AND t.name = mv.name AND t.version = mv.version ORDER BY t.key),
       ARRAY(SELECT o.alias FROM registered_model_aliases o
             WHERE o.workspace = rm.workspace AND o.name = rm.name AND o.version = mv.version
             ORDER BY o.alias)
FROM registered_models rm
JOIN registered_model_aliases a ON a.workspace = rm.workspace AND a.name = rm.name AND a.alias = :alias
JOIN model_versions mv ON mv.workspace = a.workspace AND mv.name = a.name AND mv.version = a.version
  AND mv.current_stage <> 'Deleted_Internal'
WHERE rm.workspace = :workspace AND rm.name = :name
"""
# A page of registered models' tags ("t": key, value) and aliases ("a": alias, version).
_MODEL_CHILDREN = """
SELECT 't', name, key, value, NULL::integer FROM registered_model_tags
WHERE workspace = :workspace AND name = ANY(:names)
UNION ALL SELECT 'a', name, alias, NULL, version FROM registered_model_aliases
WHERE workspace = :workspace AND name = ANY(:names)
"""
# Their latest version per stage (as MLflow's ``_get_latest_versions_for_models``), with its tags.
_LATEST_VERSIONS = """
SELECT mv.name, mv.version, mv.creation_time, mv.last_updated_time, mv.description, mv.user_id,
       mv.current_stage, mv.source, mv.run_id, mv.status, mv.status_message, mv.run_link, mv.workspace,
       ARRAY(SELECT t.key FROM model_version_tags t
             WHERE t.workspace = mv.workspace AND t.name = mv.name AND t.version = mv.version ORDER BY t.key),
       ARRAY(SELECT t.value FROM model_version_tags t
             WHERE t.workspace = mv.workspace AND t.name = mv.name AND t.version = mv.version ORDER BY t.key),
       ARRAY[]::varchar[]
FROM (
  SELECT *, row_number() OVER (PARTITION BY workspace, name, current_stage ORDER BY version DESC) AS rn
  FROM model_versions
  WHERE workspace = :workspace AND name = ANY(:names) AND current_stage <> 'Deleted_Internal'
) mv
WHERE mv.rn = 1
"""
_DEFAULT = object()  # MLflow's default page size (SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT)


def build(store_uri: str) -> Any:
    """The ``mlflow.model_registry_store`` builder for ``postgresql``: this store, or MLflow's when off."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    read_db_uri = os.environ.get(mlflow_internals.read_replica_env_var())
    if MLFLOW_ENABLE_WORKSPACES.get():
        from mlflow.store.model_registry.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

        return WorkspaceAwareSqlAlchemyStore(store_uri, read_db_uri=read_db_uri)
    if not tracking_store.enabled():
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(store_uri, read_db_uri=read_db_uri)
    return store_class()(store_uri, read_db_uri=read_db_uri)


@functools.cache
def store_class() -> type:
    """``PostgresRegistryStore``: the lookup below on MLflow's registry ``SqlAlchemyStore`` (built on first
    use, as the tracking store's class is)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    return type(
        "PostgresRegistryStore", (PostgresRegistryHotPaths, SqlAlchemyStore), {"__module__": __name__}
    )


def __getattr__(name: str) -> Any:
    if name == "PostgresRegistryStore":
        return store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PostgresRegistryHotPaths:
    """Mixed in before MLflow's registry ``SqlAlchemyStore``: ``super()`` is MLflow's method."""

    def get_model_version_by_alias(self, name, alias):
        from sqlalchemy import text

        mlflow_internals.validate_model_name(name)
        mlflow_internals.validate_model_alias_name(alias)
        if alias.lower() == LATEST_ALIAS:
            return super().get_model_version_by_alias(name, alias)
        workspace = mlflow_internals.registry_workspace(self)
        with self.ManagedSessionMaker() as session:
            rows = session.execute(
                text(_BY_ALIAS), {"workspace": workspace, "name": name, "alias": alias}
            ).all()
        if len(rows) != 1:
            return super().get_model_version_by_alias(name, alias)
        return _model_version(rows[0])

    def search_registered_models(
        self, filter_string=None, max_results=_DEFAULT, order_by=None, page_token=None
    ):
        """MLflow's ``search_registered_models``, step for step (the same checks in the same order, MLflow's
        own filter query and ORDER BY, so the same models in the same order and the same page tokens), but
        the page's models are read as plain rows and their tags, aliases and latest versions (with their
        tags) in two statements, built into MLflow's entities directly instead of through ORM objects."""
        from mlflow.entities.model_registry import RegisteredModel, RegisteredModelAlias, RegisteredModelTag
        from mlflow.store.entities.paged_list import PagedList
        from mlflow.store.model_registry import (
            SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
            SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD,
        )
        from mlflow.utils.search_utils import SearchModelUtils, SearchUtils
        from sqlalchemy import text

        if max_results is _DEFAULT:
            max_results = SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT
        if type(max_results) is not int or max_results > SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD:
            return super().search_registered_models(filter_string, max_results, order_by, page_token)
        parsed_filters = SearchModelUtils.parse_search_filter(filter_string)
        parsed_orderby = mlflow_internals.registered_models_order_by(self, order_by)
        offset = SearchUtils.parse_start_offset_from_page_token(page_token)
        max_results_for_query = max_results + 1
        model = mlflow_internals.registered_model_model()
        workspace = mlflow_internals.registry_workspace(self)

        with self.ManagedSessionMaker() as session:
            filter_query = mlflow_internals.registered_models_filter_query(
                self, session, parsed_filters, self.engine.dialect.name
            )
            query = (
                filter_query.with_only_columns(
                    model.name,
                    model.creation_time,
                    model.last_updated_time,
                    model.description,
                    model.workspace,
                )
                .order_by(*parsed_orderby)
                .limit(max_results_for_query)
            )
            if page_token:
                query = query.offset(offset)
            rows = session.execute(query).all()
            next_page_token = None
            if len(rows) == max_results_for_query:
                next_page_token = SearchUtils.create_page_token(offset + max_results)
            rows = rows[:max_results]
            names = [row[0] for row in rows]
            tags: dict[str, list[Any]] = {name: [] for name in names}
            aliases: dict[str, list[Any]] = {name: [] for name in names}
            latest: dict[str, list[Any]] = {name: [] for name in names}
            if names:
                args = {"workspace": workspace, "names": names}
                for kind, name, key, value, version in session.execute(text(_MODEL_CHILDREN), args):
                    if kind == "t":
                        tags[name].append(RegisteredModelTag(key, value))
                    else:
                        aliases[name].append(RegisteredModelAlias(key, version))
                for row in session.execute(text(_LATEST_VERSIONS), args):
                    latest[row[0]].append(_model_version(row))
            found = [
                RegisteredModel(
                    name,
                    creation_time,
                    last_updated_time,
                    description,
                    latest[name],
                    tags[name],
                    aliases[name],
                    workspace=model_workspace,
                )
                for name, creation_time, last_updated_time, description, model_workspace in rows
            ]
            return PagedList(found, next_page_token)


def _model_version(row: Any) -> Any:
    """The ModelVersion that MLflow's ``SqlModelVersion.to_mlflow_entity`` builds, from a row of
    ``_BY_ALIAS``' columns (its aliases last)."""
    from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

    (
        name,
        version,
        creation_time,
        last_updated_time,
        description,
        user_id,
        stage,
        source,
        run_id,
        status,
        status_message,
        run_link,
        workspace,
        tag_keys,
        tag_values,
        aliases,
    ) = row
    found = ModelVersion(
        name,
        version,
        creation_time,
        last_updated_time,
        description,
        user_id,
        stage,
        source,
        run_id,
        status,
        status_message,
        [ModelVersionTag(key, value) for key, value in zip(tag_keys, tag_values, strict=True)],
        run_link,
        [],
        workspace=workspace,
    )
    found.aliases = list(aliases)
    return found
