"""Client settings that MLflow reads from os.environ, applied for the length of a block."""

from mlflow_ext.settings import patched_environ

__all__ = ["patched_environ"]
