"""Revisions of the outbox tables (``mlflow_ext.bridge.outbox``); ``mlflow_ext.migrations`` runs them."""
