"""Revisions of mlflow-ext-auth's tables (``mlflow_ext.auth.store``); ``mlflow_ext.migrations`` runs them."""
