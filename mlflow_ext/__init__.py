"""mlflow_ext: the MLflow plugin package of mlflow-platform.

Importing it does no work: MLflow loads its entry points on every `import mlflow`.
"""

__version__ = "0.1.0"
