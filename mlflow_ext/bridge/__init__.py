"""The registry-to-GoCD bridge: MLflow webhooks in, GoCD pipeline runs out, nothing lost or doubled.

One module per concern: ``signature`` (webhook authenticity), ``events`` (payload shapes), ``routing``
(the routing file), ``outbox`` (the durable queue and its schema), ``delivery`` (the worker that triggers
GoCD), ``feedback`` (gocd.* tags on versions), ``reconcile`` (registry aliases against what was delivered),
``receiver`` (the HTTP endpoint), ``webhook`` (registering the webhook in MLflow) and ``service`` (one
process running all of it). docs/bridge.md describes the guarantees and how each is kept.
"""
