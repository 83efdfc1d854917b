"""Every database pool behind a request checks a pooled connection before trusting it.

A PostgreSQL restart leaves every pooled connection dead. MLflow's engines (tracking, registry and the
auth store, all made by ``create_sqlalchemy_engine``) ping each connection on checkout
(``pool_pre_ping``), so a dead one is replaced unseen. The per-request statements in plain SQL (the auth
app's generation read, the tracking store's hot paths) have pools of their own without the ping
(``mlflow_ext.db_pools``) and run once more on a fresh connection instead (``ExtStore.generation``,
``PostgresHotPaths._retrying``; tests/integration/test_tracking_store_connections.py drops them all).
"""

from __future__ import annotations

import pytest

from mlflow_ext.auth.store import generation_engine

URL = "postgresql+psycopg2://mlflow@127.0.0.1:1/mlflow"


@pytest.mark.parametrize("poolclass", [None, "QueuePool", "NullPool"])
def test_mlflows_engines_ping_pooled_connections(monkeypatch, poolclass):
    from mlflow.store.db.utils import create_sqlalchemy_engine

    if poolclass:
        monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", poolclass)
    engine = create_sqlalchemy_engine(URL)
    try:
        assert engine.pool._pre_ping is True
    finally:
        engine.dispose()


def test_the_generation_pool_skips_the_ping_and_retries_instead():
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(URL)
    own = generation_engine(engine)
    try:
        assert own is not engine and own.pool._pre_ping is False
        assert own.pool.size() == engine.pool.size() and own.dialect.name == "postgresql"
        assert own.dialect._on_connect_isolation_level == "AUTOCOMMIT"  # one round trip a read
    finally:
        own.dispose()
        engine.dispose()
