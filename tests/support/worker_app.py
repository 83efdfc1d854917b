"""Scripts that build the server's app as a worker does, in a subprocess of their own."""

# Python source: the environment `mlflow-ext server run` prepares for its workers, from the server's env
# file and a runtime directory (``sys.argv[1]`` and ``sys.argv[2]``). A script appends what it builds.
WORKER_PRELUDE = r"""
import os, sys
from mlflow_ext import server, settings
env_file, runtime = sys.argv[1], sys.argv[2]
values = {**settings.read_env_file(env_file), "MLFLOW_EXT_RUNTIME_DIR": runtime}
_, env = server.prepare({**os.environ, **values})
os.environ.update(env)
os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"
"""

# The prelude, then the stores' locations as `mlflow server` hands them to its workers (artifacts served).
WORKER_STORES = (
    WORKER_PRELUDE
    + r"""
import mlflow.server as mlflow_server
os.environ[mlflow_server.BACKEND_STORE_URI_ENV_VAR] = os.environ["MLFLOW_BACKEND_STORE_URI"]
os.environ[mlflow_server.ARTIFACTS_DESTINATION_ENV_VAR] = os.environ["MLFLOW_ARTIFACTS_DESTINATION"]
os.environ[mlflow_server.SERVE_ARTIFACTS_ENV_VAR] = "true"
"""
)
