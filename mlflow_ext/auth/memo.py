"""Per-worker memos of what MLflow's authorization reads on every request of a non-admin.

A non-admin's tracking call costs MLflow's validators several database round trips: the user
(``store.get_user``, read by ``sender_is_admin`` and again by the grant resolution), the user's grants
(``store.list_grants``) and, for every run-scoped route, the whole run (``tracking_store.get_run``, with
its metrics, params, tags, inputs and outputs) only to learn the run's experiment. Two memos make that
cheap without ever serving a decision made on data older than the last change:

- ``AuthMemo`` remembers the answers of MLflow's auth-store reads (``MEMOIZED_READS``) per worker, bounded
  (least recently used first out). Each answer is tagged with the generation counter the request read
  before it read anything else (``authn``), and is served only to requests of that same generation, which
  must also be the newest this worker has seen. Every change of users, grants, roles, rights or tokens
  bumps the counter *after* it committed and before it is acknowledged: a write through MLflow's auth
  store is wrapped here (``wrap_store``: every public method that is not a known read bumps), our own
  tables bump in the same transaction (``store.ExtStore``). So a request that starts after a change was
  acknowledged reads a newer generation and finds the memo empty, on every worker of every replica.
  A worker that made the change stops using the memo for the rest of that request too.
- ``RunExperiments`` remembers run id -> experiment id, which never changes (MLflow has no way to move a
  run), so it needs no generation. MLflow's run resolver (``_run_requirement``; up to MLflow 3.16
  ``_get_permission_from_run_id``) is replaced by one that asks it first and falls back to MLflow's own
  on a miss. Runs that do not exist are never remembered.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from flask import g, has_request_context

from mlflow_ext import mlflow_internals

# The reads MLflow's validators make on (nearly) every request of a non-admin. Their answers are
# immutable values (a User entity, a bool, a list of RoleGrantRow named tuples, copied on the way out).
MEMOIZED_READS = ("get_user", "has_user", "list_grants", "is_workspace_admin")
# Public store methods with these prefixes only read; every other public method is treated as a write
# and bumps the generation (a method MLflow adds later is a write until someone decides otherwise).
READ_PREFIXES = ("get_", "list_", "has_", "is_", "user_has_", "authenticate_")
NOT_WRITES = frozenset({"init_db"})
MEMO_MAX_ENTRIES = 10_000
RUN_EXPERIMENTS_MAX_ENTRIES = 100_000
_GENERATION = "_mlflow_ext_generation"
_MISSING = object()


def set_request_generation(generation: int | None) -> None:
    """The generation the current request read first (``None``: the request must not use the memo)."""
    setattr(g, _GENERATION, generation)


def request_generation() -> int | None:
    if not has_request_context():
        return None
    value = g.get(_GENERATION)
    return value if isinstance(value, int) else None


class AuthMemo:
    def __init__(self, max_entries: int = MEMO_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.generation = -1  # the newest generation this worker has seen
        self._entries: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def reset(self, generation: int) -> None:
        """The worker saw ``generation``: forget everything remembered under an older one."""
        with self._lock:
            if generation != self.generation:
                self._entries.clear()
                self.generation = generation

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key: Hashable, generation: int) -> Any:
        with self._lock:
            if generation != self.generation:
                return _MISSING
            entry = self._entries.get(key)
            if entry is None or entry[0] != generation:
                return _MISSING
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, generation: int, value: Any) -> None:
        with self._lock:
            # A request that started before the worker saw a newer generation may have read older data.
            if generation != self.generation:
                return
            self._entries[key] = (generation, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def is_write(name: str) -> bool:
    return not name.startswith("_") and name not in NOT_WRITES and not name.startswith(READ_PREFIXES)


def _memoized(name: str, read: Callable[..., Any], memo: AuthMemo) -> Callable[..., Any]:
    @functools.wraps(read)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        generation = request_generation()
        if generation is None or kwargs:  # outside a request, or e.g. has_user(use_primary=True)
            return read(*args, **kwargs)
        try:
            key = (name, *(frozenset(a) if isinstance(a, set | frozenset) else a for a in args))
            hash(key)
        except TypeError:
            return read(*args)
        hit = memo.get(key, generation)
        if hit is not _MISSING:
            return _copy(hit)
        value = read(*args)  # exceptions (e.g. an unknown user) are never remembered
        memo.put(key, generation, _copy(value))
        return value

    return wrapper


def _bumping(write: Callable[..., Any], memo: AuthMemo, bump: Callable[[], None]) -> Callable[..., Any]:
    @functools.wraps(write)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return write(*args, **kwargs)
        finally:
            # After the write committed (or failed: it costs one update to be sure), before the request
            # that made it is answered. This worker forgets at once and stops memoising this request.
            bump()
            memo.clear()
            if has_request_context():
                set_request_generation(None)

    return wrapper


def wrap_store(store: Any, memo: AuthMemo, bump: Callable[[], None]) -> dict[str, list[str]]:
    """Wrap MLflow's auth store instance in place; returns the method names per kind (for tests)."""
    kinds: dict[str, list[str]] = {"memoized": [], "bumping": []}
    for name in sorted(dir(type(store))):
        method = getattr(store, name, None)
        if not callable(method) or name.startswith("_"):
            continue
        method = getattr(method, "__wrapped__", method)  # an app created twice in one process
        if name in MEMOIZED_READS:
            setattr(store, name, _memoized(name, method, memo))
            kinds["memoized"].append(name)
        elif is_write(name):
            setattr(store, name, _bumping(method, memo, bump))
            kinds["bumping"].append(name)
    return kinds


class RunExperiments:
    """Bounded LRU of run id -> experiment id (immutable, so never invalidated)."""

    def __init__(self, max_entries: int = RUN_EXPERIMENTS_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> str | None:
        with self._lock:
            experiment_id = self._entries.get(run_id)
            if experiment_id is not None:
                self._entries.move_to_end(run_id)
            return experiment_id

    def put(self, run_id: str, experiment_id: str) -> None:
        with self._lock:
            self._entries[run_id] = experiment_id
            self._entries.move_to_end(run_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def wrap_run_requirement(runs: RunExperiments) -> None:
    """Make MLflow's run-scoped validators ask ``runs`` for a run's experiment before reading the run
    (``_run_requirement`` since MLflow 3.17, ``_get_permission_from_run_id`` before: mlflow_internals)."""
    mlflow_internals.remember_run_experiments(runs.get, runs.put)
