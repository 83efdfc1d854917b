"""Subcommands of the `mlflow-ext` CLI, one module per concern."""
