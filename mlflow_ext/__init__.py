"""mlflow_ext: the MLflow plugin package of mlflow-platform.

Importing it does no work: MLflow loads its entry points on every `import mlflow`.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports it on first use
    from mlflow_ext.data import log_data

__all__ = ["__version__", "log_data"]


def __getattr__(name: str) -> object:
    # `mlflow_ext.log_data` without importing mlflow_ext.data (and boto3, pyarrow, mlflow) up front.
    if name == "log_data":
        from mlflow_ext.data import log_data

        return log_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
