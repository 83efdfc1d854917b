"""The bridge's reads and writes on the MLflow registry, through MlflowClient (auth from the environment)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mlflow_ext.bridge.delivery import RegistryUnavailable, VersionMissing

# Beyond this many route patterns (a generated routing file has one per catalog model), one scan of every
# model in pages is cheaper than a search per pattern.
MAX_FILTERED_SEARCHES = 20


def _like_prefilter(pattern: str) -> str | None:
    """A search filter selecting a superset of what the fnmatch pattern matches (None: no filter)."""
    if any(ch in pattern for ch in "[]'\\\""):
        return None
    return "name LIKE '" + pattern.replace("*", "%").replace("?", "_") + "'"


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return func(*args, **kwargs)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise VersionMissing(exc.message) from None
            raise RegistryUnavailable(f"{exc.error_code}: {exc.message}"[:500]) from None
        except Exception as exc:
            raise RegistryUnavailable(f"{type(exc).__name__}: {exc}"[:500]) from None

    def run_id(self, model: str, version: str) -> str:
        found = self._call(self.client.get_model_version, model, version)
        return str(found.run_id or "")

    def set_tags(self, model: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call(self.client.set_model_version_tag, model, version, key, value)

    def aliases(self, patterns: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
        """(model name, {alias: version}) for every model a pattern may match (a superset)."""
        filters = {_like_prefilter(p) for p in patterns}
        if None in filters or len(filters) > MAX_FILTERED_SEARCHES:
            filters = {None}
        seen: set[str] = set()
        for filter_string in sorted(filters, key=str):
            token = None
            while True:
                page = self._call(
                    self.client.search_registered_models,
                    filter_string=filter_string,
                    max_results=500,
                    page_token=token,
                )
                for model in page:
                    if model.name not in seen:
                        seen.add(model.name)
                        yield model.name, {alias: str(v) for alias, v in (model.aliases or {}).items()}
                token = page.token
                if not token:
                    break
