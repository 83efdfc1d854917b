"""Versioned schemas of mlflow_ext's own tables, with Alembic, as MLflow versions its stores.

Each feature that owns tables keeps a migrations package beside its models (``auth/migrations``,
``bridge/migrations``: ``env.py`` and ``versions/``) and its own version table, so it shares a database with
MLflow's schema without touching MLflow's ``alembic_version`` tables. ``upgrade`` brings one schema to its
head under a PostgreSQL advisory lock. A database made before migrations existed (every table of the
baseline present, no version row) is stamped at the baseline revision, not recreated: its rows stay.

To change a table: edit the model, then write the revision against a database at head with
``alembic.command.revision(alembic_config(SCHEMA, connection), "what changed", autogenerate=True)`` and review
it; tests/integration/test_schema_migrations.py fails while the models and the revisions disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, MetaData, inspect

from mlflow_ext.errors import MigrationError
from mlflow_ext.pglock import advisory_lock


@dataclass(frozen=True)
class Schema:
    """One versioned schema: its models, where its revisions live, and how it is recorded."""

    name: str
    metadata: MetaData
    # An importable package holding env.py and versions/ (e.g. "mlflow_ext.auth.migrations").
    package: str
    version_table: str
    # The revision equal to the tables ``create_all`` made before migrations existed.
    baseline: str
    lock_id: int


def alembic_config(schema: Schema, connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", f"{schema.package}:")
    config.attributes["schema"] = schema
    config.attributes["connection"] = connection
    return config


def head(schema: Schema) -> str:
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
    assert revision is not None, f"{schema.package} has no revisions"
    return revision


def current(schema: Schema, connection: Any) -> str | None:
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": schema.version_table})
    return context.get_current_revision()


def include_name(schema: Schema) -> Any:
    """Alembic's filter: only this schema's tables (MLflow's and other features' share the database)."""

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or name in schema.metadata.tables

    return include


def run_env(context: Any) -> None:
    """The body of every migrations package's env.py: run on the connection ``upgrade`` handed over."""
    schema: Schema = context.config.attributes["schema"]
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=schema.metadata,
        version_table=schema.version_table,
        include_name=include_name(schema),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _existing(connection: Any, schema: Schema) -> set[str]:
    return set(inspect(connection).get_table_names()) & set(schema.metadata.tables)


def upgrade(engine: Engine, schema: Schema) -> dict[str, Any]:
    """Bring ``schema`` to its head (stamping a pre-migrations database first); report what was done.

    ``changed`` is true only when a revision ran or the database was stamped, so Ansible reports it
    truthfully. Concurrent callers wait on the advisory lock; the second finds the schema at head.
    """
    from alembic import command

    with advisory_lock(engine, schema.lock_id), engine.connect() as connection:
        before = current(schema, connection)
        stamped = False
        if before is None:
            present = _existing(connection, schema)
            if present == set(schema.metadata.tables):
                command.stamp(alembic_config(schema, connection), schema.baseline)
                stamped = True
            elif present:
                missing = ", ".join(sorted(set(schema.metadata.tables) - present))
                raise MigrationError(
                    f"{schema.name}: the database has some of this schema's tables but not {missing}, and "
                    "no version row: restore it from a backup, or drop the partial tables, then migrate again"
                )
        connection.commit()
        command.upgrade(alembic_config(schema, connection), "head")
        connection.commit()
        after = current(schema, connection)
    return {
        "before": before,
        "after": after,
        "stamped": stamped,
        "changed": stamped or before != after,
    }
