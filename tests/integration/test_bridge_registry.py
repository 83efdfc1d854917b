"""The bridge's registry reads against the real server: the alias listing the reconcile loop walks."""

from __future__ import annotations

import uuid

from mlflow_ext.bridge.registry import MAX_FILTERED_SEARCHES, MlflowRegistry
from tests.support.environ import patched_environ


def _registry_with_models(platform, count: int) -> tuple[MlflowRegistry, list[str], list[int]]:
    prefix = f"reconcile-{uuid.uuid4().hex[:8]}-"
    registry = MlflowRegistry(platform.tracking_uri)
    names = [f"{prefix}{index:03d}" for index in range(count)]
    for index, name in enumerate(names):
        registry.client.create_registered_model(name)
        registry.client.create_model_version(name, f"s3://nowhere/{name}")
        if index % 2 == 0:
            registry.client.set_registered_model_alias(name, "production", "1")
    calls: list[int] = []
    search = registry.client.search_registered_models

    def counted(*args, **kwargs):
        calls.append(1)
        return search(*args, **kwargs)

    registry.client.search_registered_models = counted  # type: ignore[method-assign]
    return registry, names, calls


def test_a_few_route_patterns_are_searched_one_by_one(platform):
    with patched_environ(platform.client_env()):
        registry, names, calls = _registry_with_models(platform, 3)
        found = dict(registry.aliases(names))
    assert {name: found[name] for name in names} == {
        names[0]: {"production": "1"},
        names[1]: {},
        names[2]: {"production": "1"},
    }
    assert len(calls) == 3


def test_a_generated_routing_file_is_one_scan_not_a_search_per_model(platform):
    count = MAX_FILTERED_SEARCHES + 5
    with patched_environ(platform.client_env()):
        registry, names, calls = _registry_with_models(platform, count)
        found = dict(registry.aliases(names))
    assert all(found[name] == ({"production": "1"} if i % 2 == 0 else {}) for i, name in enumerate(names))
    assert len(calls) < count // 2  # pages of every model, not one search per route
