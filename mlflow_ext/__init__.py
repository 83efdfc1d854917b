"""mlflow_ext: the MLflow plugin package of mlflow-platform.

Importing it does no work: MLflow loads its entry points on every `import mlflow`, so modules import
MLflow, boto3 and the like inside the functions that need them.

Layers, each importing only from the ones below it (tests/contract/test_layers.py keeps it so):

- entry points: ``cli`` and ``commands`` (the `mlflow-ext` CLI), ``server`` (the server entrypoint);
- features, which never import each other: ``auth`` (the server's auth app), ``promotion`` (promote,
  rollback, report), ``bridge`` (registry events to GoCD runs), ``gocd`` (the pipeline generator),
  ``stages`` (the pipelines' stage commands);
- shared pieces: ``lineage``, ``data``, ``run_context``, ``artifacts``, ``artifact_access`` (no
  presigned URLs of a store clients cannot reach), ``policy`` (the promotion
  policy and its gates), ``events`` and ``routing`` (the bridge's contract with the generator),
  ``clients`` (GoCD's and the auth app's REST APIs), ``tracking_store`` (the PostgreSQL tracking store
  the server uses, through MLflow's ``mlflow.tracking_store`` entry point), ``tracking_migrations`` (its
  versioned indexes on MLflow's tables), ``registry_store`` (the PostgreSQL registry store, through
  ``mlflow.model_registry_store``), ``rest_store`` (the clients' store for http(s) tracking URIs,
  through ``mlflow.tracking_store``), ``rest_post`` (its writes on kept-alive connections);
- the foundation: ``settings``, ``errors``, ``pglock``, ``db_pools`` (pools without the ping for the
  per-request statements), ``migrations`` (versioned schemas of our own
  tables), ``mlflow_internals``, ``progress`` (progress of long work on stderr).
"""

from mlflow_ext.data import log_data

__version__ = "0.1.0"

__all__ = ["__version__", "log_data"]
