"""Run tags that satisfy the promotion policy's default requirements (``require: [code, training_data]``,
the built-in policy and the mlflow_server role's): a code commit and a training dataset's fingerprint."""

from __future__ import annotations

POLICY_LINEAGE = {
    "lineage.code.commit": "0123456789abcdef0123456789abcdef01234567",
    "lineage.data.train.fingerprint": "sha256:" + "0" * 64,
    "lineage.data.train.role": "training",
}
