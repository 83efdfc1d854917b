"""Settings read on the client side: in training scripts (run tags) and by the stage commands."""

from __future__ import annotations

from mlflow_ext.settings.base import (
    Setting,
    absolute_path,
    boolean,
    choice,
    integer,
    subset,
)

SETTINGS: tuple[Setting, ...] = (
    # --- client: reaching the MLflow server (MLflow's own client reads them too; docs/cli.md) ---
    Setting(
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "CA certificate (PEM) the server's TLS certificate is checked against, e.g. the platform's "
        "self-signed one; default: the system's CAs (or REQUESTS_CA_BUNDLE).",
        "/etc/nginx/tls/mlflow-platform.crt",
        scope="client",
    ),
    Setting(
        "MLFLOW_TRACKING_CLIENT_CERT_PATH",
        "Client certificate (PEM, with its key) for servers that ask for one.",
        "/etc/mlflow/client.pem",
        scope="client",
    ),
    Setting(
        "MLFLOW_TRACKING_INSECURE_TLS",
        "true skips checking the server's TLS certificate (tests only).",
        "false",
        parse=boolean,
        default="false",
        scope="client",
    ),
    Setting(
        "MLFLOW_EXT_FAST_CLIENT",
        "http(s) tracking URIs get MLflow's REST store with a log_metric and log_batch that build their "
        "request bodies straight from the entities (the same JSON as MLflow's protobuf conversion, for a "
        "fraction of the CPU) and send them on a kept-alive connection; "
        "false: MLflow's own store (mlflow_ext.rest_store).",
        "true",
        parse=boolean,
        default="true",
        scope="client",
    ),
    # --- client: lineage tags on every run (mlflow_ext.run_context, docs/run-tags.md) ---
    Setting(
        "MLFLOW_EXT_RUN_TAGS",
        "Groups of lineage.* tags set on every new run: code, ci, env, notebook, host; none turns them off.",
        "code,ci,env,notebook,host",
        parse=subset("code", "ci", "env", "notebook", "host"),
        default="code,ci,env,notebook,host",
        scope="client",
    ),
    Setting(
        "MLFLOW_EXT_RUN_DIFF_MAX_BYTES",
        "Largest uncommitted diff logged as the run artifact lineage/code.diff (cut beyond); 0 logs none.",
        "1048576",
        parse=integer(0),
        default="1048576",
        scope="client",
    ),
    # --- client: the local deploy target of `mlflow-ext deploy` (docs/deploy-targets.md) ---
    Setting(
        "MLFLOW_EXT_DEPLOY_ROOT",
        "Folder of the local deploy target: one folder per deployment (venv, model, record).",
        "/opt/mlflow-deployments",
        parse=absolute_path,
        default="/opt/mlflow-deployments",
        scope="client",
    ),
    Setting(
        "MLFLOW_EXT_DEPLOY_MODE",
        "How the local deploy target runs servers: systemd, a supervised process, or auto (systemd if PID 1)",
        "auto",
        parse=choice("auto", "systemd", "process"),
        default="auto",
        scope="client",
    ),
)
