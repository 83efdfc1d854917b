"""The per-worker memos of MLflow's authorization reads, without a server (MLflow's auth store on SQLite)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flask import Flask
from sqlalchemy import event

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import memo, store
from mlflow_ext.auth.memo import AuthMemo, RunExperiments

# The run resolver mlflow_ext replaces: _run_requirement since MLflow 3.17, _get_permission_from_run_id
# up to 3.16 (the previous minor's tests run in a venv of requirements/server-3.16.lock).
since_3_17 = pytest.mark.skipif(
    not mlflow_internals.applies(mlflow_internals.RUN_REQUIREMENT), reason="MLflow 3.17 and later"
)
up_to_3_16 = pytest.mark.skipif(
    not mlflow_internals.applies(mlflow_internals.RUN_PERMISSION), reason="MLflow 3.16 and earlier"
)


def test_memo_answers_only_requests_of_the_newest_generation():
    m = AuthMemo(max_entries=2)
    m.reset(3)
    m.put("a", 3, 1)
    assert m.get("a", 3) == 1
    assert m.get("a", 2) is memo._MISSING  # an older request never reads newer answers, nor the reverse
    m.put("b", 2, 2)  # a request that started before the worker saw generation 3 read older data
    assert m.get("b", 2) is memo._MISSING and len(m) == 1
    m.put("b", 3, 2)
    m.put("c", 3, 3)
    assert len(m) == 2 and m.get("a", 3) is memo._MISSING  # least recently used goes first
    m.reset(4)
    assert len(m) == 0 and m.get("b", 4) is memo._MISSING


def test_run_experiments_are_bounded():
    runs = RunExperiments(max_entries=2)
    runs.put("r1", "1")
    runs.put("r2", "2")
    assert runs.get("r1") == "1"
    runs.put("r3", "3")
    assert runs.get("r2") is None and runs.get("r1") == "1" and len(runs) == 2


@pytest.fixture
def auth_store(tmp_path):
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    users = SqlAlchemyStore()
    users.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    store.migrate(users.engine)
    yield users
    users.engine.dispose()


@pytest.fixture
def wrapped(auth_store):
    ext = store.ExtStore(auth_store.engine)
    m = AuthMemo()
    kinds = memo.wrap_store(auth_store, m, ext.bump_generation)
    queries: list[str] = []

    def count(conn, cursor, statement, *rest):
        if not statement.startswith("PRAGMA"):
            queries.append(statement)

    event.listen(auth_store.engine, "before_cursor_execute", count)
    return SimpleNamespace(users=auth_store, ext=ext, memo=m, kinds=kinds, queries=queries)


def test_every_public_method_of_mlflows_store_is_a_memoised_read_a_read_or_a_bumping_write(wrapped):
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    public = {
        n for n in dir(SqlAlchemyStore) if not n.startswith("_") and callable(getattr(SqlAlchemyStore, n))
    }
    # MLflow 3.16's store has no list_grants (its validators read get_role_permission_for_resource).
    assert set(wrapped.kinds["memoized"]) == {n for n in memo.MEMOIZED_READS if n in public}
    bumping = set(wrapped.kinds["bumping"])
    reads = {n for n in public if n.startswith(memo.READ_PREFIXES)}
    assert public == reads | bumping | memo.NOT_WRITES
    # What the users, permissions and roles routes (and the after-request hooks of create, delete and
    # rename) call: all of it bumps.
    assert {
        "create_user",
        "update_user",
        "delete_user",
        "grant_user_permission",
        "grant_user_resource_permission",
        "revoke_user_resource_permission",
        "delete_grants_for_resource",
        "rename_grants_for_resource",
        "create_role",
        "update_role",
        "delete_role",
        "add_role_permission",
        "update_role_permission",
        "remove_role_permission",
        "assign_role_to_user",
        "unassign_role_from_user",
        "set_workspace_permission",
        "delete_workspace_permission",
    } <= bumping


@since_3_17  # list_grants
def test_reads_are_memoised_within_a_generation_and_every_write_drops_them(wrapped):
    users, ext, m = wrapped.users, wrapped.ext, wrapped.memo
    users.create_user("alice", "a-long-enough-password-1")
    with Flask(__name__).test_request_context():
        generation = ext.generation()
        m.reset(generation)
        memo.set_request_generation(generation)
        wrapped.queries.clear()
        alice = users.get_user("alice")
        assert users.get_user("alice") == alice and users.has_user("alice")
        assert users.has_user("alice")
        grants = users.list_grants(alice.id, "default", {"experiment"})
        grants.append("mutating a copy")
        assert users.list_grants(alice.id, "default", {"experiment"}) == []
        assert len(wrapped.queries) == 3  # one per distinct read
        assert users.has_user("bob", use_primary=True) is False  # a fresh read when asked for one
        with pytest.raises(Exception, match="not found"):
            users.get_user("bob")  # failures are never remembered
        users.grant_user_permission("alice", "experiment", "7", "EDIT")
        # Committed, then bumped; this worker forgot everything and this request stops memoising.
        assert ext.generation() == generation + 1 and len(m) == 0
        assert memo.request_generation() is None
        wrapped.queries.clear()
        assert users.list_grants(alice.id, "default", {"experiment"}) != []
        assert users.list_grants(alice.id, "default", {"experiment"}) != []
        assert len(wrapped.queries) == 2
    # Outside a request nothing is memoised.
    wrapped.queries.clear()
    users.get_user("alice")
    users.get_user("alice")
    assert len(wrapped.queries) == 2


def test_a_failed_write_still_bumps(wrapped):
    from mlflow.exceptions import MlflowException

    before = wrapped.ext.generation()
    with pytest.raises(MlflowException):
        wrapped.users.delete_user("nobody")
    assert wrapped.ext.generation() == before + 1


def test_rights_bump_the_generation(tmp_path):
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    store.migrate(engine)
    ext = store.ExtStore(engine)
    before = ext.generation()
    assert ext.grant_right("bob", "create_experiment", "*", "admin")
    assert ext.generation() == before + 1
    assert not ext.grant_right("bob", "create_experiment", "*", "admin")
    assert ext.revoke_right("bob", "create_experiment", "*")
    assert ext.generation() == before + 2
    engine.dispose()


@since_3_17
def test_run_requirement_from_the_cache_equals_mlflows(monkeypatch):
    import mlflow.server.auth as auth_module

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="42"))
    calls: list[str] = []

    def get_run(run_id):
        calls.append(run_id)
        if run_id != "r1":
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

            raise MlflowException("no such run", RESOURCE_DOES_NOT_EXIST)
        return run

    monkeypatch.setattr(auth_module, "_get_tracking_store", lambda: SimpleNamespace(get_run=get_run))
    monkeypatch.setattr(auth_module, "_run_requirement", auth_module._run_requirement)
    original = auth_module._run_requirement
    memo.wrap_run_requirement(RunExperiments())
    for action in ("read", "update"):
        assert auth_module._run_requirement("r1", action) == original("r1", action)
    assert calls.count("r1") == 3  # one miss, then the cache (plus the two comparisons)
    assert auth_module._run_requirement("gone", "read") is None
    assert auth_module._run_requirement("gone", "read") is None
    assert calls.count("gone") == 2  # a missing run is never remembered


@up_to_3_16
def test_run_permission_from_the_cache_equals_mlflows(monkeypatch):
    import mlflow.server.auth as auth_module
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.server.auth.permissions import EDIT

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="42"))
    calls: list[str] = []
    asked: list[tuple[str, ...]] = []

    def get_run(run_id):
        calls.append(run_id)
        if run_id != "r1":
            raise MlflowException("no such run", RESOURCE_DOES_NOT_EXIST)
        return run

    def role_permission_for(
        username, resource_type, resource_key, workspace_lookup_id, workspace_fetcher, workspace_label
    ):
        asked.append((username, resource_type, resource_key, workspace_lookup_id, workspace_label))
        return lambda: (
            EDIT if (username, resource_type, resource_key) == ("alice", "experiment", "42") else None
        )

    tracking = SimpleNamespace(get_run=get_run, get_experiment=lambda experiment_id: None)
    monkeypatch.setattr(auth_module, "_get_tracking_store", lambda: tracking)
    monkeypatch.setattr("mlflow.server.handlers._get_tracking_store", lambda: tracking)
    monkeypatch.setattr(auth_module, "authenticate_request", lambda: SimpleNamespace(username="alice"))
    monkeypatch.setattr(auth_module, "_role_permission_for", role_permission_for)
    monkeypatch.setattr(auth_module, "_get_permission_from_run_id", auth_module._get_permission_from_run_id)
    original = auth_module._get_permission_from_run_id
    memo.wrap_run_requirement(RunExperiments())
    app = Flask(__name__)
    with app.test_request_context("/api/2.0/mlflow/runs/get?run_id=r1"):
        for _ in range(2):
            assert auth_module._get_permission_from_run_id() == original() == EDIT
        assert auth_module.validate_can_update_run() and not auth_module.validate_can_manage_run()
    assert calls.count("r1") == 3  # one miss, then the cache (plus the two comparisons)
    assert set(asked) == {("alice", "experiment", "42", "42", "experiment")}
    with app.test_request_context("/api/2.0/mlflow/runs/get?run_id=gone"):
        for _ in range(2):
            with pytest.raises(MlflowException, match="no such run"):
                auth_module._get_permission_from_run_id()
    assert calls.count("gone") == 2  # a missing run is never remembered
