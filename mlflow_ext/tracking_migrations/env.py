"""Alembic's entry: every schema runs the same way (``mlflow_ext.migrations.run_env``)."""

from alembic import context

from mlflow_ext.migrations import run_env

run_env(context)
