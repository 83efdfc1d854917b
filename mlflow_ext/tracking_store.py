"""A PostgreSQL tracking store whose write hot paths take one or two round trips.

How the server gets it: MLflow picks a tracking store by the scheme of the backend store URI, in a
``TrackingStoreRegistry`` (``mlflow/tracking/_tracking_service/registry.py``; the server's own registry is
``TrackingStoreRegistryWrapper`` in ``mlflow/server/handlers.py``). Both register MLflow's builders first
(every engine of ``DATABASE_ENGINES``, ``postgresql`` among them), then the ``mlflow.tracking_store`` entry
points, which therefore replace a built-in scheme. The scheme of ``postgresql+psycopg2://...`` is
``postgresql`` (``get_uri_scheme`` drops the driver). So ``pyproject.toml`` registers ``build`` below as the
``postgresql`` entry point: the server (any worker, any host, compose or Ansible) and ``mlflow gc`` get this
store with no change to the command line. ``build`` reads ``MLFLOW_EXT_FAST_TRACKING_STORE`` (on by
default) each time MLflow builds a store: off, or with MLflow's workspaces on (its workspace-aware store
filters every query, which the plain SQL here does not), it builds MLflow's own store exactly as MLflow's
server does.

What changes: ``log_batch``, ``log_metric``, ``log_param`` and ``set_tag``, for the case that succeeds.
MLflow's store does each in several statements through the ORM (read the run, read ``latest_metrics`` with
a lock, insert, update, commit). Here:

- ``log_metric``, ``log_param``, ``set_tag``: one statement, one round trip in autocommit, prepared once per
  connection (``_Prepared``). A common table expression reads the run and writes only when it exists and is
  active; its answer says which happened.
- ``log_batch``: one transaction: the metrics through ``COPY`` straight into ``metrics``, then one
  multi-statement string that inserts the new params, upserts ``latest_metrics`` set-based (the batch's
  newest per key, by step, then timestamp, then value, the first of equals winning, replacing the stored row
  only when strictly newer, as MLflow compares), upserts the tags (the last value of a key wins) and, last,
  reads the run's state and the batch's params as stored. It commits only when the run is active and every
  param holds the batch's value; otherwise it rolls back. A batch whose ``COPY`` meets a row logged before
  (MLflow keeps one row per identical metric: a retried batch, or a metric twice in one) is written again
  through a temporary table, from which ``ON CONFLICT DO NOTHING`` moves only the new rows.

What stays MLflow's: everything else, and every failure. Values are checked by MLflow's own validators
(``mlflow_internals``), before any database work and in MLflow's order, so a bad value gets MLflow's error
code and message and writes nothing. When the database says the call cannot succeed (no such run, a deleted
run, a param logged before with another value), the call is handed to MLflow's own method, which raises
MLflow's exact error. The rare shapes are handed over whole: metrics for a logged model (``model_id``), the
``mlflow.runName`` tag (it also renames the run), timestamps or steps that are not integers.

The read hot paths, ``search_runs`` (its ``_search_runs``) and ``get_run``, keep MLflow's checks, filter and
ORDER BY clauses and page tokens, but read the runs and their latest metrics, params and tags as plain rows
in a few statements and build MLflow's entities directly (MLflow loads them as ORM objects through
``selectinload``); see ``_search_runs`` for why its ``DISTINCT`` can go.

``tests/integration/test_tracking_store_differential.py`` runs random sequences of calls against MLflow's
store and this one, on two databases, and compares every answer, every error and the final tables, then
random searches and every run ``get_run`` reads back.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mlflow_ext import mlflow_internals, settings
from mlflow_ext.db_pools import discard_dropped, unpinged_engine

RUN_NAME_TAG = "mlflow.runName"  # mlflow.utils.mlflow_tags.MLFLOW_RUN_NAME
ACTIVE = "active"  # mlflow.entities.LifecycleStage.ACTIVE
DEADLOCK_RETRIES = 3

# Plain SQL on MLflow's tables; mlflow_internals.TRACKING_TABLES and TRACKING_COLUMNS hold MLflow's models to
# these names (tests/contract/test_mlflow_internals.py).

# Written when newer by (step, timestamp, value), as MLflow's _update_latest_metrics_if_necessary compares.
_LATEST_UPSERT = (
    "INSERT INTO latest_metrics (run_uuid, key, value, timestamp, step, is_nan) VALUES {rows} "
    "ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value, timestamp = EXCLUDED.timestamp, "
    "step = EXCLUDED.step, is_nan = EXCLUDED.is_nan "
    "WHERE (EXCLUDED.step, EXCLUDED.timestamp, EXCLUDED.value) "
    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)
# Metrics go straight into ``metrics`` through COPY. COPY cannot skip a row logged before (a client retrying
# a batch that was written, or the same metric twice in one batch): that batch fails on the primary key and
# is written again through a temporary table, from which only the new rows move over.
_METRICS_COPY = "COPY {table} (run_uuid, key, value, timestamp, step, is_nan) FROM STDIN"
_METRICS_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS mlflow_ext_metrics_in "
    "(run_uuid varchar(32), key varchar(250), value double precision, timestamp bigint, step bigint, "
    "is_nan boolean) ON COMMIT DELETE ROWS"
)
_METRICS_FROM_STAGING = (
    "INSERT INTO metrics (run_uuid, key, value, timestamp, step, is_nan) "
    "SELECT run_uuid, key, value, timestamp, step, is_nan FROM mlflow_ext_metrics_in ON CONFLICT DO NOTHING"
)
_PARAMS_INSERT = "INSERT INTO params (run_uuid, key, value) VALUES {rows} ON CONFLICT DO NOTHING"
_TAGS_UPSERT = (
    "INSERT INTO tags (run_uuid, key, value) VALUES {rows} "
    "ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value"
)

# One round trip each: the run's state, and the write done only for an active run.
_LOG_METRIC = """
WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = %(run)s),
new AS (
  SELECT %(run)s AS run_uuid, %(key)s AS key, %(value)s::double precision AS value,
         %(timestamp)s::bigint AS timestamp, %(step)s::bigint AS step, %(is_nan)s AS is_nan
  FROM run WHERE lifecycle_stage = 'active'
),
metric AS (
  INSERT INTO metrics (run_uuid, key, value, timestamp, step, is_nan) SELECT * FROM new
  ON CONFLICT DO NOTHING
),
latest AS (
  INSERT INTO latest_metrics (run_uuid, key, value, timestamp, step, is_nan) SELECT * FROM new
  ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value, timestamp = EXCLUDED.timestamp,
    step = EXCLUDED.step, is_nan = EXCLUDED.is_nan
  WHERE (EXCLUDED.step, EXCLUDED.timestamp, EXCLUDED.value)
      > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)
)
SELECT lifecycle_stage FROM run
"""
_LOG_PARAM = """
WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = %(run)s),
inserted AS (
  INSERT INTO params (run_uuid, key, value)
  SELECT %(run)s, %(key)s, %(value)s FROM run WHERE lifecycle_stage = 'active'
  ON CONFLICT DO NOTHING RETURNING 1
)
SELECT lifecycle_stage, EXISTS (SELECT 1 FROM inserted),
       (SELECT value FROM params WHERE run_uuid = %(run)s AND key = %(key)s)
FROM run
"""
_SET_TAG = """
WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = %(run)s),
tag AS (
  INSERT INTO tags (run_uuid, key, value)
  SELECT %(run)s, %(key)s, %(value)s FROM run WHERE lifecycle_stage = 'active'
  ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value
)
SELECT lifecycle_stage FROM run
"""


class _Prepared:
    """A hot statement, prepared once per connection: PostgreSQL then neither parses nor plans it again on
    each call (log_metric's, on loopback: 0.48 to 0.34 ms a call). The first call on a connection sends the
    ``PREPARE`` and the ``EXECUTE`` as one string (one round trip, one transaction: behind a
    transaction-pooling PgBouncer both reach the same server); later ones only the ``EXECUTE``.
    ``types`` names the parameters (``%(name)s`` in ``sql``) in order, with their SQL types."""

    def __init__(self, name: str, sql: str, types: dict[str, str]) -> None:
        self.name, self.sql, self.params = name, sql, tuple(types)
        numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${self.params.index(m.group(1)) + 1}", sql)
        placeholders = ", ".join(["%s"] * len(types))
        self.execute = f"EXECUTE {name} ({placeholders})"
        self.prepare_and_execute = (
            f"PREPARE {name} ({', '.join(types.values())}) AS {numbered};\n{self.execute}"
        )

    def arguments(self, args: dict[str, Any]) -> list[Any]:
        return [args[name] for name in self.params]


_METRIC_TYPES = {
    "run": "varchar",
    "key": "varchar",
    "value": "double precision",
    "timestamp": "bigint",
    "step": "bigint",
    "is_nan": "boolean",
}
_TEXT_TYPES = {"run": "varchar", "key": "varchar", "value": "varchar"}
_LOG_METRIC_PREPARED = _Prepared("mlflow_ext_log_metric", _LOG_METRIC, _METRIC_TYPES)
_LOG_PARAM_PREPARED = _Prepared("mlflow_ext_log_param", _LOG_PARAM, _TEXT_TYPES)
_SET_TAG_PREPARED = _Prepared("mlflow_ext_set_tag", _SET_TAG, _TEXT_TYPES)


# The last statement of a batch's transaction, after its writes: the run's state and the stored value of
# each of the batch's params. The batch is committed only when the run is active and every param holds the
# batch's value (one logged before with another value kept its own).
_BATCH_STATE = """
SELECT r.lifecycle_stage, p.key, p.value
FROM runs r LEFT JOIN params p ON p.run_uuid = r.run_uuid AND p.key = ANY(%(keys)s)
WHERE r.run_uuid = %(run)s
"""

# The read paths: the runs columns MLflow's ``SqlRun.to_mlflow_entity`` reads, in ``_run_entity``'s order.
_RUN_COLUMNS = mlflow_internals.RUN_MODEL.attributes
# The latest metrics, params and tags of a page of runs, in one statement: (kind, run_uuid, key, text value,
# value, timestamp, step, is_nan), kind "m", "p" or "t".
_RUN_CHILDREN = """
SELECT 'm', run_uuid, key, NULL::text, value, timestamp, step, is_nan FROM latest_metrics
WHERE run_uuid = ANY(:runs)
UNION ALL SELECT 'p', run_uuid, key, value, NULL, NULL, NULL, NULL FROM params WHERE run_uuid = ANY(:runs)
UNION ALL SELECT 't', run_uuid, key, value, NULL, NULL, NULL, NULL FROM tags WHERE run_uuid = ANY(:runs)
"""
# ``get_run`` in one statement, each row (kind, 6 texts, 3 bigints, a double, 2 booleans):
# - "r", the run: run_uuid, name, user_id, status, lifecycle_stage, artifact_uri; experiment_id, start_time,
#   end_time; -; -, whether it has dataset inputs;
# - "m", a latest metric: run_uuid, key; timestamp, step; value; is_nan;
# - "p", "t", a param or tag: run_uuid, key, value;
# - "mi", "mo", a model input or output (as MLflow's ``_get_model_inputs`` / ``_get_model_outputs`` read
#   them): run_uuid, model id; the output's step.
_GET_RUN = """
SELECT 'r', run_uuid, name, user_id, status, lifecycle_stage, artifact_uri,
       experiment_id::bigint, start_time, end_time, NULL::double precision, NULL::boolean,
       EXISTS (SELECT 1 FROM inputs WHERE destination_type = 'RUN' AND destination_id = :run)
FROM runs WHERE run_uuid = :run
UNION ALL SELECT 'm', run_uuid, key, NULL, NULL, NULL, NULL, timestamp, step, NULL, value, is_nan, NULL
  FROM latest_metrics WHERE run_uuid = :run
UNION ALL SELECT 'p', run_uuid, key, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM params WHERE run_uuid = :run
UNION ALL SELECT 't', run_uuid, key, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM tags WHERE run_uuid = :run
UNION ALL SELECT 'mi', source_id, destination_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM inputs WHERE source_type = 'RUN_INPUT' AND source_id = :run AND destination_type = 'MODEL_INPUT'
UNION ALL SELECT 'mo', source_id, destination_id, NULL, NULL, NULL, NULL, step, NULL, NULL, NULL, NULL, NULL
  FROM inputs WHERE source_type = 'RUN_OUTPUT' AND source_id = :run AND destination_type = 'MODEL_OUTPUT'
"""


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether MLflow's server builds this store for PostgreSQL (``MLFLOW_EXT_FAST_TRACKING_STORE``)."""
    return bool(settings.get("MLFLOW_EXT_FAST_TRACKING_STORE", environ))


def build(store_uri: str, artifact_uri: str | None = None) -> Any:
    """The ``mlflow.tracking_store`` builder for ``postgresql``: this store, or MLflow's when turned off."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    if artifact_uri is None:
        artifact_uri = os.environ.get(
            mlflow_internals.server_artifact_root_env_var(), DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
        )
    read_db_uri = os.environ.get(mlflow_internals.read_replica_env_var())
    if MLFLOW_ENABLE_WORKSPACES.get():
        from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

        return WorkspaceAwareSqlAlchemyStore(store_uri, artifact_uri, read_db_uri=read_db_uri)
    if not enabled():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(store_uri, artifact_uri, read_db_uri=read_db_uri)
    return store_class()(store_uri, artifact_uri, read_db_uri=read_db_uri)


@functools.cache
def store_class() -> type:
    """``PostgresTrackingStore``: the hot paths below on MLflow's ``SqlAlchemyStore``.

    Built on first use: MLflow loads this module (its entry point) while ``import mlflow`` is still under
    way, when MLflow's store module cannot be imported yet.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return type("PostgresTrackingStore", (PostgresHotPaths, SqlAlchemyStore), {"__module__": __name__})


def __getattr__(name: str) -> Any:
    if name == "PostgresTrackingStore":
        return store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _database_message(exc: BaseException) -> str:
    """A database error's message as MLflow's session words it: its class, then its text."""
    kind = type(exc)
    module = kind.__module__ if kind.__module__ != "psycopg2.errors" else "psycopg2"
    return f"({module}.{kind.__name__}) {exc}"


def _metric_copy(run_id: str, metrics: Sequence[Any]) -> tuple[str, list[tuple[Any, ...]]]:
    """The batch's metric rows (run_uuid, key, value, timestamp, step, is_nan) in COPY's text format (floats
    exact by repr), and the newest row of each key, by step, then timestamp, then value (the first of
    equals), in key order: in one pass, each key escaped once."""
    lines = []
    newest: dict[str, tuple[Any, ...]] = {}
    escaped: dict[str, str] = {}
    for m in metrics:
        key, value, timestamp, step = m.key, m.value, m.timestamp, m.step
        is_nan, value = _sanitized(value)
        copy_key = escaped.get(key)
        if copy_key is None:
            copy_key = escaped[key] = key.translate(_COPY_ESCAPES)
        nan = "t" if is_nan else "f"
        lines.append(f"{run_id}\t{copy_key}\t{float(value)!r}\t{int(timestamp)}\t{int(step)}\t{nan}\n")
        held = newest.get(key)
        if held is None or (step, timestamp, value) > (held[4], held[3], held[2]):
            newest[key] = (run_id, key, value, timestamp, step, is_nan)
    return "".join(lines), [newest[key] for key in sorted(newest)]


def _check_metrics(metrics: Sequence[Any]) -> None:
    """MLflow's check of every metric of a batch, in order (the first bad one raises MLflow's error), with
    MLflow's validator called once per key: a further metric of a key it passed, whose value is a float or
    an int, timestamp a non-negative int and step an int, passes every check it would make again."""
    passed: set[str] = set()
    for index, m in enumerate(metrics):
        if (
            m.key in passed
            and type(m.value) in (float, int)
            and type(m.timestamp) is int
            and m.timestamp >= 0
            and type(m.step) is int
        ):
            continue
        mlflow_internals.validate_metric(m.key, m.value, m.timestamp, m.step, path=f"metrics[{index}]")
        passed.add(m.key)


def _sanitized(value: float) -> tuple[bool, float]:
    """(is_nan, stored value), as ``SqlAlchemyStore.sanitize_metric_value``: NaN as 0, infinities as the
    largest finite doubles."""
    if value - value == 0:  # finite, the common case, in one test (NaN and the infinities give NaN)
        return False, value
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, 1.7976931348623157e308 if value > 0 else -1.7976931348623157e308
    return False, value


def _run_entity(
    head: Sequence[Any],
    metrics: Iterable[Sequence[Any]],
    params: Iterable[Sequence[Any]],
    tags: Iterable[Sequence[Any]],
) -> Any:
    """The Run that MLflow's ``SqlRun.to_mlflow_entity`` builds: ``head`` holds the _RUN_COLUMNS, metrics are
    (key, value, timestamp, step, is_nan), params and tags (key, value)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    run_uuid, name, experiment_id, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri = head
    info = RunInfo(
        run_id=run_uuid,
        run_name=name,
        experiment_id=str(experiment_id),
        user_id=user_id,
        status=status,
        start_time=start_time,
        end_time=end_time,
        lifecycle_stage=lifecycle_stage,
        artifact_uri=artifact_uri,
    )
    run_tags = [RunTag(key=key, value=value) for key, value in tags]
    data = RunData(
        metrics=[
            Metric(key=key, value=value if not is_nan else float("nan"), timestamp=timestamp, step=step)
            for key, value, timestamp, step, is_nan in metrics
        ],
        params=[Param(key=key, value=value) for key, value in params],
        tags=run_tags,
    )
    if not info.run_name:
        # As MLflow's _get_run_name_from_tags: the run-name tag names a run whose column is empty.
        run_name = next((tag.value for tag in run_tags if tag.key == RUN_NAME_TAG), None)
        if run_name:
            info._set_run_name(run_name)
    return Run(run_info=info, run_data=data)


class _Refused(Exception):
    """The database says the fast path cannot succeed: MLflow's own method gives the error."""


class _Duplicate(Exception):
    """A batch's direct COPY met a metric row logged before (or twice in the batch)."""


class _Dropped(Exception):
    """The database dropped the connection under a statement (a restart, or an idle connection closed)."""


class PostgresHotPaths:
    """The write hot paths in plain SQL (see the module docstring), mixed in before MLflow's
    ``SqlAlchemyStore`` by ``store_class``: ``super()`` is MLflow's method, ``self.engine`` its engine."""

    engine: Any
    # Whether the single statements are prepared on each connection (see ``_Prepared``): until the database
    # shows a session that forgot one.
    _prepares = True

    # --- the hot paths ---

    def log_metric(self, run_id, metric):
        if metric.model_id is not None or type(metric.timestamp) is not int or type(metric.step) is not int:
            return super().log_metric(run_id, metric)
        mlflow_internals.validate_metric(metric.key, metric.value, metric.timestamp, metric.step, path="")
        is_nan, value = _sanitized(metric.value)
        args = {
            "run": run_id,
            "key": metric.key,
            "value": value,
            "timestamp": metric.timestamp,
            "step": metric.step,
            "is_nan": is_nan,
        }
        (row,) = self._one_statement(_LOG_METRIC_PREPARED, args) or [None]
        if row is None or row[0] != ACTIVE:
            return super().log_metric(run_id, metric)
        return None

    def log_param(self, run_id, param):
        checked = mlflow_internals.validate_param(param.key, param.value)
        args = {"run": run_id, "key": checked.key, "value": checked.value}
        (row,) = self._one_statement(_LOG_PARAM_PREPARED, args) or [None]
        if row is None or row[0] != ACTIVE:
            return super().log_param(run_id, param)
        _stage, inserted, existing = row
        if not inserted and existing != checked.value:
            # Logged before with another value (or by a transaction this snapshot did not see).
            return super().log_param(run_id, param)
        return None

    def set_tag(self, run_id, tag):
        checked = mlflow_internals.validate_tag(tag.key, tag.value)
        if checked.key == RUN_NAME_TAG:
            return super().set_tag(run_id, tag)
        (row,) = self._one_statement(
            _SET_TAG_PREPARED, {"run": run_id, "key": checked.key, "value": checked.value}
        ) or [None]
        if row is None or row[0] != ACTIVE:
            return super().set_tag(run_id, tag)
        return None

    def log_batch(self, run_id, metrics, params, tags):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

        mlflow_internals.validate_run_id(run_id)
        _check_metrics(metrics)
        metrics, params, tags = mlflow_internals.validate_batch(metrics, params, tags, metrics_checked=True)
        if (
            any(m.model_id is not None for m in metrics)
            or any(t.key == RUN_NAME_TAG for t in tags)
            # A fractional timestamp or step: PostgreSQL rounds it on the way in as MLflow's insert does.
            or any(type(m.timestamp) is not int or type(m.step) is not int for m in metrics)
        ):
            return super().log_batch(run_id, metrics, params, tags)
        try:
            self._log_batch(run_id, metrics, params, tags)
        except _Refused:
            return super().log_batch(run_id, metrics, params, tags)
        except MlflowException:
            raise
        except Exception as exc:
            raise MlflowException(exc, INTERNAL_ERROR) from exc
        return None

    # --- the read hot paths ---

    def get_run(self, run_id):
        """MLflow's ``get_run`` (the same entity, the same error for an unknown run) in one statement; the
        dataset inputs, when the run has any, through MLflow's own reader."""
        from mlflow.entities import Run, RunInputs, RunOutputs
        from mlflow.entities.logged_model_input import LoggedModelInput
        from mlflow.entities.logged_model_output import LoggedModelOutput
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
        from sqlalchemy import text

        if not isinstance(run_id, str) or "\x00" in run_id:
            return super().get_run(run_id)
        with self.ManagedSessionMaker() as session:
            head = None
            metrics, params, tags, model_inputs, model_outputs = [], [], [], [], []
            for kind, run, key, value, *rest in session.execute(text(_GET_RUN), {"run": run_id}):
                if kind == "m":
                    metrics.append((key, rest[6], rest[3], rest[4], rest[7]))
                elif kind == "p":
                    params.append((key, value))
                elif kind == "t":
                    tags.append((key, value))
                elif kind == "r":
                    head = (run, key, rest[3], value, rest[0], rest[4], rest[5], rest[1], rest[2], rest[8])
                elif kind == "mi":
                    model_inputs.append(LoggedModelInput(model_id=key))
                else:
                    model_outputs.append(LoggedModelOutput(model_id=key, step=rest[3]))
            if head is None:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            found = _run_entity(head[:9], metrics, params, tags)
            inputs = mlflow_internals.run_dataset_inputs(self, session, [run_id])[0] if head[9] else []
            return Run(
                found.info,
                found.data,
                RunInputs(dataset_inputs=inputs, model_inputs=model_inputs),
                RunOutputs(model_outputs),
            )

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        """MLflow's ``_search_runs``, step for step (the same checks in the same order, the same filter
        and order clauses, so the same runs in the same order and the same page tokens), but the page's
        runs are read as plain rows, without ``DISTINCT`` (each join MLflow makes for a metric, param or
        tag filter or order is on one key of a table whose key is (key, run_uuid): at most one row per
        run, so ``DISTINCT`` only costs a sort of every matching run, and kept out the index order), and
        their latest metrics, params and tags in one statement each, built into MLflow's entities
        directly instead of through ORM objects. A dataset filter (whose joins can repeat a run) takes
        MLflow's own way."""
        from mlflow.entities import LifecycleStage, Run, RunInputs, RunOutputs
        from mlflow.utils.search_utils import SearchUtils
        from sqlalchemy import select

        mlflow_internals.validate_max_results(self, max_results)
        stages = set(LifecycleStage.view_type_to_stages(run_view_type))
        run_model = mlflow_internals.run_model()

        with self.ManagedSessionMaker() as session:
            parsed_filters = SearchUtils.parse_search_filter(filter_string)
            cases_orderby, parsed_orderby, sorting_joins = mlflow_internals.search_runs_order_by(
                order_by, session
            )
            attribute_filters, non_attribute_filters, dataset_filters = mlflow_internals.search_runs_filters(
                parsed_filters, session, self._get_dialect()
            )
            if dataset_filters:
                return mlflow_internals.mlflow_search_runs(
                    self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
                )
            columns = [getattr(run_model, name) for name in _RUN_COLUMNS]
            stmt = select(*columns, *cases_orderby)
            for non_attr_filter in non_attribute_filters:
                stmt = stmt.join(non_attr_filter)
            for join in sorting_joins:
                stmt = stmt.outerjoin(join)
            offset = SearchUtils.parse_start_offset_from_page_token(page_token)
            experiment_ids = mlflow_internals.parse_experiment_ids(experiment_ids)
            experiment_ids = mlflow_internals.filter_experiment_ids(self, session, experiment_ids)
            stmt = (
                stmt.filter(
                    run_model.experiment_id.in_(experiment_ids),
                    run_model.lifecycle_stage.in_(stages),
                    *attribute_filters,
                )
                .order_by(*parsed_orderby)
                .offset(offset)
            )
            if max_results is not None:
                stmt = stmt.limit(max_results + 1)
            heads = [tuple(row[: len(_RUN_COLUMNS)]) for row in session.execute(stmt).all()]
            run_ids = [head[0] for head in heads]
            children = self._run_children(session, run_ids)
            runs = [_run_entity(head, *(children[kind].get(head[0], ()) for kind in "mpt")) for head in heads]

            inputs = mlflow_internals.run_dataset_inputs(self, session, run_ids)
            model_outputs_map = mlflow_internals.run_model_outputs(self, session, run_ids)
            found = [
                Run(
                    run.info,
                    run.data,
                    RunInputs(dataset_inputs=inputs[i]),
                    RunOutputs(model_outputs_map[run.info.run_id]),
                )
                for i, run in enumerate(runs)
            ]
            next_page_token = None
            if max_results is not None and len(found) == max_results + 1:
                next_page_token = SearchUtils.create_page_token(offset + max_results)
                found = found[:max_results]
        return found, next_page_token

    @staticmethod
    def _run_children(session: Any, run_ids: list[str]) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
        """The latest metrics, params and tags of these runs, by kind ("m", "p", "t") and run id."""
        from sqlalchemy import text

        out: dict[str, dict[str, list[tuple[Any, ...]]]] = {"m": {}, "p": {}, "t": {}}
        if not run_ids:
            return out
        for kind, run, key, text_value, value, timestamp, step, is_nan in session.execute(
            text(_RUN_CHILDREN), {"runs": run_ids}
        ):
            row = (key, value, timestamp, step, is_nan) if kind == "m" else (key, text_value)
            out[kind].setdefault(run, []).append(row)
        return out

    # --- the work ---

    def _log_batch(
        self, run_id: str, metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
    ) -> None:
        metric_copy, newest = _metric_copy(run_id, metrics)
        tag_values = {t.key: t.value for t in tags}  # the last value of a key wins, as in MLflow
        statements: list[tuple[str, list[tuple[Any, ...]]]] = [
            (_PARAMS_INSERT, [(run_id, p.key, p.value) for p in params]),
            # Keys in one order in every transaction, so concurrent batches lock rows alike.
            (_LATEST_UPSERT, newest),
            (_TAGS_UPSERT, [(run_id, key, tag_values[key]) for key in sorted(tag_values)]),
        ]
        expected = {p.key: p.value for p in params}
        try:
            committed = self._write(run_id, metric_copy, statements, expected, direct=True)
        except _Duplicate:
            committed = self._write(run_id, metric_copy, statements, expected, direct=False)
        if not committed:
            raise _Refused

    @functools.cached_property
    def _hot_engine(self) -> Any:
        """The hot paths' pool: MLflow's engine's settings without its ping on every checkout (a round
        trip per write); a dropped connection is noticed by the statement, and the write runs again."""
        return unpinged_engine(self.engine)

    @contextlib.contextmanager
    def _connection(self, autocommit: bool) -> Iterator[tuple[Any, set[str]]]:
        """A psycopg2 connection of the hot paths' pool, and the names of the statements prepared on it
        (kept in the pool's record of the connection, which forgets them when it connects afresh); without
        autocommit, one transaction committed at the end. A connection the server dropped is discarded with
        every other one pooled beside it (after a restart all are dead), and ``_Dropped`` raised."""
        import psycopg2

        pooled = self._hot_engine.raw_connection()
        connection = pooled.driver_connection
        try:
            connection.autocommit = autocommit
            yield connection, pooled.info.setdefault("mlflow_ext_prepared", set())
            if not autocommit:
                connection.commit()
        except BaseException as exc:
            if connection.closed:
                discard_dropped(self._hot_engine, pooled)
                if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                    raise _Dropped() from exc
            elif not autocommit:
                with contextlib.suppress(Exception):
                    connection.rollback()
            raise
        finally:
            if not connection.closed:
                connection.autocommit = False
            pooled.close()

    def _retrying(self, work: Any) -> Any:
        """Run ``work``, again after a deadlock; database errors become MLflow's, as its managed session
        maps them: an operational error (the database down or restarting) TEMPORARILY_UNAVAILABLE (a 503
        that MLflow's client retries), any other database error BAD_REQUEST. The message names the error's
        class first, as MLflow's does: the server's error guard knows such a message for the database's own
        words (which can hold its address) and answers its own instead."""
        import psycopg2
        import psycopg2.errors
        import sqlalchemy.exc
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST, TEMPORARILY_UNAVAILABLE

        dropped = False
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                return work()
            except _Dropped as exc:
                # Once more on a fresh connection: every hot write is idempotent (the same metric row, param
                # value or tag again), so a write the database committed before it dropped the connection
                # does no harm run twice. A second drop is the database going away: 503, retried by clients.
                if dropped or attempt == DEADLOCK_RETRIES:
                    message = _database_message(exc.__cause__ or exc)
                    raise MlflowException(message, TEMPORARILY_UNAVAILABLE) from exc
                dropped = True
            except (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure) as exc:
                if attempt == DEADLOCK_RETRIES:
                    raise MlflowException(_database_message(exc), TEMPORARILY_UNAVAILABLE) from exc
            except (
                psycopg2.OperationalError,
                psycopg2.InterfaceError,
                sqlalchemy.exc.OperationalError,
            ) as exc:
                raise MlflowException(_database_message(exc), TEMPORARILY_UNAVAILABLE) from exc
            except (psycopg2.Error, sqlalchemy.exc.SQLAlchemyError) as exc:
                raise MlflowException(_database_message(exc), BAD_REQUEST) from exc
        return None

    def _one_statement(self, statement: _Prepared, args: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit (one round trip) and return its rows."""
        import psycopg2.errors

        def work() -> list[tuple[Any, ...]]:
            with self._connection(autocommit=True) as (connection, prepared), connection.cursor() as cursor:
                try:
                    if not self._prepares:
                        cursor.execute(statement.sql, args)
                    elif statement.name in prepared:
                        cursor.execute(statement.execute, statement.arguments(args))
                    else:
                        # Known before it runs: a PREPARE outlives the failure of its transaction.
                        prepared.add(statement.name)
                        cursor.execute(statement.prepare_and_execute, statement.arguments(args))
                except (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.DuplicatePreparedStatement):
                    # The server's session is not the one the pool knows (a pooler that hands each
                    # transaction another, a DISCARD ALL): nothing ran. This store prepares no more.
                    self._prepares = False
                    prepared.clear()
                    cursor.execute(statement.sql, args)
                return list(cursor.fetchall())

        result: list[tuple[Any, ...]] = self._retrying(work)
        return result

    def _write(
        self,
        run_id: str,
        metric_copy: str,
        statements: Iterable[tuple[str, list[tuple[Any, ...]]]],
        params: dict[str, str],
        direct: bool,
    ) -> bool:
        """One transaction: the metrics through COPY (straight into ``metrics`` when ``direct``, else through
        the temporary table), then one string with every other statement and, last, ``_BATCH_STATE``. It is
        committed when the run is active and every param holds the batch's value, and then True; otherwise
        rolled back, and False.

        Raises ``_Duplicate`` when a direct COPY meets a row logged before, ``_Refused`` when the run does
        not exist."""
        import psycopg2.errors

        def work() -> bool:
            with self._connection(autocommit=False) as (connection, _prepared), connection.cursor() as cursor:
                parts = []
                try:
                    if metric_copy and direct:
                        cursor.copy_expert(_METRICS_COPY.format(table="metrics"), io.StringIO(metric_copy))
                    elif metric_copy:
                        # Created in the transaction: behind a transaction-pooling PgBouncer, a
                        # connection's temporary table is only certain within one.
                        cursor.execute(_METRICS_STAGING)
                        cursor.copy_expert(
                            _METRICS_COPY.format(table="mlflow_ext_metrics_in"),
                            io.StringIO(metric_copy),
                        )
                        parts.append(_METRICS_FROM_STAGING.encode())
                    for template, rows in statements:
                        if not rows:
                            continue
                        placeholder = "(" + ",".join(["%s"] * len(rows[0])) + ")"
                        values = b",".join(cursor.mogrify(placeholder, row) for row in rows)
                        parts.append(template.encode().replace(b"{rows}", values))
                    parts.append(cursor.mogrify(_BATCH_STATE, {"run": run_id, "keys": list(params)}))
                    cursor.execute(b";\n".join(parts))
                except psycopg2.errors.UniqueViolation as exc:
                    raise _Duplicate from exc
                except psycopg2.errors.ForeignKeyViolation as exc:  # no such run
                    raise _Refused from exc
                rows = cursor.fetchall()
                stored = {key: value for _stage, key, value in rows}
                if not rows or rows[0][0] != ACTIVE or any(stored.get(k) != v for k, v in params.items()):
                    connection.rollback()
                    return False
                return True

        committed: bool = self._retrying(work)
        return committed
