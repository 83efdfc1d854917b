"""The auth audit log: one JSON object per line, never a secret.

Events: ``auth.failure``, ``auth.lockout``, ``auth.locked_out`` (a refused attempt during a lockout),
``token.created``, ``token.revoked``, ``service_account.created``, ``service_account.auth`` (first use
of a service account's credential per worker and cache period), ``grant.changed`` (MLflow's grants,
roles, users and admin flags), ``right.granted`` / ``right.revoked`` (create and promote rights),
``alias.protected_changed``, ``alias.protected_denied`` and ``alias.promotion_refused`` (a failed
promotion gate, mlflow_ext.auth.promotion_gates).

Each line has ``ts`` (UTC, ISO 8601), ``event``, ``actor`` (the authenticated user, if any),
``address`` (client address, if known) and event fields. Several workers append to one file: each
line is written with one ``write`` on a file opened with ``O_APPEND``, so lines never interleave.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from typing import Any


class AuditLog:
    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> None:
        entry = {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **{k: v for k, v in fields.items() if v is not None},
        }
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("utf-8")
        with self._lock:
            if self.destination == "stderr":
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
                return
            fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
