"""``mlflow-ext-auth``: MLflow's basic-auth app, made fit for a shared platform.

The app is MLflow's own ``mlflow.server.auth`` (its users, grants, roles, validators and REST API), with:

- ``authn``: the ``authorization_function`` MLflow calls on every request. It accepts Basic credentials
  and ``Authorization: Bearer`` access tokens, caches verified credentials, and enforces lockout.
- ``policy``: stricter validators wrapped around MLflow's (create rights, admin-only user listing,
  protected aliases) and the audit of grant changes.
- ``routes``: REST endpoints for tokens, platform rights and service accounts.
- ``store``: the tables this adds to the auth database; ``cache``, ``lockout``, ``audit``, ``tokens``.

Nothing here does work at import time: ``app.create_app`` reads the configuration when it is called.
See docs/auth.md.
"""
