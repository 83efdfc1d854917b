#!/usr/bin/python3
"""Back up and check the backups of mlflow-platform; installed by the backup role.

Standard library only; the work is done by pgbackrest (PostgreSQL), rclone (the artifact bucket) and age
(the secrets archive). The configuration is the JSON file the role renders (--config).

  mlflow-platform-backup postgres --type full|diff   pgBackRest backup of the whole cluster
  mlflow-platform-backup artifacts                   checksummed, incremental mirror of the bucket
  mlflow-platform-backup secrets                     secrets and TLS material, encrypted with age
  mlflow-platform-backup all                         the three (postgres: full if none yet, else diff)
  mlflow-platform-backup verify [--set S] [--secrets-archive A] --identity FILE
                                                     what a restore needs is there and sound; changes nothing
  mlflow-platform-backup restore-secrets --archive A --identity FILE    restore steps, after verify
  mlflow-platform-backup restore-artifacts

Every backup run records its outcome in the Prometheus text file named by metrics_file
(mlflow_backup_last_run_success{kind}, mlflow_backup_last_success_timestamp_seconds{kind},
mlflow_backup_last_run_timestamp_seconds{kind}). A failure exits 1 with a message naming the location.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("postgres", "artifacts", "secrets")
SECRETS_PREFIX = "secrets-"
SECRETS_SUFFIX = ".tar.age"
# Subdirectory of the artifact mirror that keeps what a sync deleted or overwrote, one directory per run.
DELETED_DIR = "deleted"
CURRENT_DIR = "current"


# rclone 1.60 fails every S3 remote when AWS_CA_BUNDLE is set; the backup endpoint's own CA (s3_ca_file) is
# passed with --ca-cert instead.
RCLONE_ENV = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class BackupError(Exception):
    """A step failed; the message names the location and what went wrong."""


def run(argv: list[str], what: str, location: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        # rclone names each object it failed on in an "ERROR : <object>: ..." line; show those first.
        detail = [line for line in lines if "ERROR : " in line][:5] + lines[-1:]
        raise BackupError(f"{what} at {location} failed (exit {proc.returncode}): " + " | ".join(detail))
    return proc


class Backup:
    def __init__(self, config: dict) -> None:
        self.c = config
        self._ca_bundle: str | None = None

    # --- helpers -----------------------------------------------------------------------------------------
    def pgbackrest(self, *args: str, what: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "runuser",
            "-u",
            self.c["postgres_user"],
            "--",
            "pgbackrest",
            f"--stanza={self.c['stanza']}",
            *args,
        ]
        return run(argv, what, self.c["postgres_location"])

    def rclone(self, *args: str, what: str, location: str) -> subprocess.CompletedProcess[str]:
        # Two passes at most: an object the store cannot serve fails the run within minutes, named.
        retries = ["--retries", "2", "--low-level-retries", "3"]
        return run([*self.rclone_base(), *retries, *args], what, location, env=RCLONE_ENV)

    def rclone_base(self) -> list[str]:
        argv = ["rclone", "--config", self.c["rclone_config"]]
        if self.c.get("s3_ca_file"):
            argv += ["--ca-cert", self.ca_bundle(self.c["s3_ca_file"])]
        return argv

    def ca_bundle(self, ca_file: str) -> str:
        """rclone's --ca-cert replaces the system's CAs: give it both, for a source on a public endpoint."""
        if self._ca_bundle is None:
            fd, path = tempfile.mkstemp(prefix="mlflow-backup-ca-", suffix=".pem")
            atexit.register(os.unlink, path)
            with os.fdopen(fd, "wb") as bundle:
                for name in (SYSTEM_CA_BUNDLE, ca_file):
                    with contextlib.suppress(FileNotFoundError):
                        bundle.write(Path(name).read_bytes().rstrip(b"\n") + b"\n")
            self._ca_bundle = path
        return self._ca_bundle

    def pg_info(self) -> dict:
        out = self.pgbackrest("--output=json", "info", what="reading the pgBackRest repository").stdout
        stanzas = json.loads(out)
        stanza = stanzas[0] if stanzas else {}
        if stanza.get("status", {}).get("code", 1) not in (0, 2):
            message = stanza.get("status", {}).get("message", "no stanza")
            raise BackupError(
                f"pgBackRest stanza {self.c['stanza']} at {self.c['postgres_location']}: {message}"
            )
        return stanza

    # --- backups -------------------------------------------------------------------------------------------
    def postgres(self, kind: str) -> str:
        self.pgbackrest(f"--type={kind}", "backup", what=f"PostgreSQL {kind} backup")
        backups = self.pg_info().get("backup", [])
        return f"PostgreSQL {kind} backup {backups[-1]['label']} in {self.c['postgres_location']}"

    def postgres_auto(self) -> str:
        try:
            has_full = any(b["type"] == "full" for b in self.pg_info().get("backup", []))
        except BackupError:
            has_full = False
        return self.postgres("diff" if has_full else "full")

    def artifacts(self) -> str:
        location = self.c["artifacts_location"]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.c["artifacts_target"]
        self.rclone(
            "sync",
            "--checksum",
            "--fast-list",
            "--create-empty-src-dirs",
            "--backup-dir",
            f"{target}/{DELETED_DIR}/{stamp}",
            self.c["artifacts_source"],
            f"{target}/{CURRENT_DIR}",
            what="mirroring the artifact bucket",
            location=location,
        )
        self.rclone(
            "check",
            "--checksum",
            "--one-way",
            self.c["artifacts_source"],
            f"{target}/{CURRENT_DIR}",
            what="checking the artifact mirror",
            location=location,
        )
        self.prune_deleted(target, location)
        return f"artifact bucket mirrored to {location}/{CURRENT_DIR}"

    def prune_deleted(self, target: str, location: str) -> None:
        """Drop the directories of deleted or overwritten objects older than artifacts_deleted_keep_days."""
        self.rclone("mkdir", f"{target}/{DELETED_DIR}", what="creating deleted/", location=location)
        listing = self.rclone(
            "lsf", "--dirs-only", f"{target}/{DELETED_DIR}", what="listing", location=location
        )
        cutoff = time.strftime(
            "%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 86400 * self.c["artifacts_deleted_keep_days"])
        )
        for name in listing.stdout.split():
            if name.rstrip("/") < cutoff:
                self.rclone("purge", f"{target}/{DELETED_DIR}/{name}", what="pruning", location=location)

    def secrets(self) -> str:
        location = self.c["secrets_location"]
        paths = [p for p in self.c["secrets_paths"] if os.path.exists(p)]
        if not paths:
            raise BackupError("none of secrets_paths exists: nothing to archive")
        name = f"{SECRETS_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}{SECRETS_SUFFIX}"
        with tempfile.TemporaryDirectory(prefix="mlflow-backup-") as tmp:
            archive = Path(tmp) / name
            # The archive exists in the clear only as a pipe: tar streams into age, which writes ciphertext.
            tar = subprocess.Popen(
                ["tar", "--create", "--absolute-names", "--", *paths], stdout=subprocess.PIPE
            )
            age = subprocess.run(
                [
                    "age",
                    "--encrypt",
                    "--recipients-file",
                    self.c["age_recipients_file"],
                    "--output",
                    str(archive),
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
            if tar.stdout:
                tar.stdout.close()
            if tar.wait() != 0 or age.returncode != 0:
                raise BackupError(f"encrypting the secrets archive failed: {age.stderr.strip()}")
            self.rclone(
                "copyto",
                str(archive),
                f"{self.c['secrets_target']}/{name}",
                what="storing",
                location=location,
            )
        for old in self.secrets_archives()[: -self.c["secrets_keep"]]:
            self.rclone("deletefile", f"{self.c['secrets_target']}/{old}", what="pruning", location=location)
        return f"secrets archive {name} stored in {location}"

    def secrets_archives(self) -> list[str]:
        listing = self.rclone(
            "lsf",
            "--files-only",
            self.c["secrets_target"],
            what="listing the secrets archives",
            location=self.c["secrets_location"],
        )
        return sorted(
            n for n in listing.stdout.split() if n.startswith(SECRETS_PREFIX) and n.endswith(SECRETS_SUFFIX)
        )

    # --- checks before a restore ----------------------------------------------------------------------------
    def verify(self, backup_set: str, secrets_archive: str, identity: str) -> dict:
        """Raise BackupError naming the first thing a restore would miss; return what the restore will use."""
        stanza = self.pg_info()
        labels = [b["label"] for b in stanza.get("backup", [])]
        if not labels:
            raise BackupError(f"no PostgreSQL backup in {self.c['postgres_location']}")
        if backup_set != "latest" and backup_set not in labels:
            raise BackupError(
                f"PostgreSQL backup set {backup_set} not found in {self.c['postgres_location']} "
                f"(available: {', '.join(labels)})"
            )
        chosen = labels[-1] if backup_set == "latest" else backup_set
        report = self.pgbackrest(
            f"--set={chosen}", "--output=text", "verify", what=f"verifying PostgreSQL backup {chosen}"
        ).stdout
        # pgBackRest 2.45 exits 0 when it finds damaged files: its report says "status: error", then what.
        if damaged := re.search(r"^status: error[ \t]*$(.*)", report, re.M | re.S):
            found = " | ".join([line.strip() for line in damaged[1].splitlines() if line.strip()][:6])
            where = self.c["postgres_location"]
            raise BackupError(f"PostgreSQL backup {chosen} in {where} is damaged: pgbackrest verify: {found}")
        location = self.c["artifacts_location"]
        listing = self.rclone(
            "lsf",
            "--max-depth",
            "1",
            self.c["artifacts_target"],
            what="reading the artifact mirror",
            location=location,
        )
        if f"{CURRENT_DIR}/" not in listing.stdout.split():
            raise BackupError(f"artifact mirror not found: {location} has no {CURRENT_DIR}/")
        archives = self.secrets_archives()
        if not archives:
            raise BackupError(f"no secrets archive in {self.c['secrets_location']}")
        name = archives[-1] if secrets_archive == "latest" else secrets_archive
        if name not in archives:
            raise BackupError(f"secrets archive {name} not found in {self.c['secrets_location']}")
        if not os.path.isfile(identity):
            raise BackupError(
                f"age identity file {identity} not found: the secrets archive cannot be decrypted"
            )
        listed = self.untar_secrets(name, identity, ["--list"])
        if listed.returncode != 0 or not listed.stdout.strip():
            raise BackupError(
                f"secrets archive {name} in {self.c['secrets_location']} does not decrypt with {identity} "
                "or is not a complete archive"
            )
        return {"postgres_set": chosen, "secrets_archive": name}

    def untar_secrets(
        self, name: str, identity: str, tar_args: list[str]
    ) -> subprocess.CompletedProcess[str]:
        """tar with ``tar_args`` on the secrets archive ``name``, fetched and decrypted in a pipe (never on
        disk in the clear); its return code is non-zero when any step of the pipe failed."""
        cat = subprocess.Popen(
            [*self.rclone_base(), "cat", f"{self.c['secrets_target']}/{name}"],
            stdout=subprocess.PIPE,
            env=RCLONE_ENV,
        )
        age = subprocess.Popen(
            ["age", "--decrypt", "--identity", identity], stdin=cat.stdout, stdout=subprocess.PIPE
        )
        if cat.stdout:
            cat.stdout.close()
        tar = subprocess.run(
            ["tar", *tar_args, "--absolute-names"],
            stdin=age.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if age.stdout:
            age.stdout.close()
        if age.wait() != 0 or cat.wait() != 0:
            tar.returncode = tar.returncode or 1
        return tar

    # --- restore steps (after verify) ---------------------------------------------------------------------
    def restore_secrets(self, name: str, identity: str) -> str:
        """Extract the archive over / (absolute paths, owners and modes kept); decrypted in a pipe only."""
        tar = self.untar_secrets(name, identity, ["--extract", "--same-owner", "--same-permissions"])
        if tar.returncode != 0:
            raise BackupError(
                f"restoring secrets archive {name} from {self.c['secrets_location']} failed: {tar.stderr}"
            )
        return f"secrets restored from {name}"

    def restore_artifacts(self) -> str:
        """Make the bucket what the mirror holds (newer objects go), checked by checksum."""
        mirror, location = f"{self.c['artifacts_target']}/{CURRENT_DIR}", self.c["artifacts_location"]
        self.rclone(
            "sync",
            "--checksum",
            "--fast-list",
            mirror,
            self.c["artifacts_source"],
            what="restoring the bucket",
            location=location,
        )
        self.rclone(
            "check",
            "--checksum",
            mirror,
            self.c["artifacts_source"],
            what="checking the restored bucket",
            location=location,
        )
        return f"artifact bucket restored from {location}/{CURRENT_DIR}"


# --- metrics -----------------------------------------------------------------------------------------------
METRIC_HELP = {
    "mlflow_backup_last_run_success": "1 if the last backup run of this kind succeeded, 0 if it failed.",
    "mlflow_backup_last_run_timestamp_seconds": "Unix time the last backup run of this kind ended.",
    "mlflow_backup_last_success_timestamp_seconds": "Unix time the last successful run of this kind ended.",
}
SAMPLE = re.compile(r'^(\w+)\{kind="(\w+)"\} (\S+)$')


def record(metrics_file: str, kind: str, success: bool) -> None:
    """Update this kind's samples in the metrics file, keeping the others' (atomic, under a lock)."""
    path = Path(metrics_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        values: dict[tuple[str, str], str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                if m := SAMPLE.match(line):
                    values[(m[1], m[2])] = m[3]
        now = f"{time.time():.0f}"
        values[("mlflow_backup_last_run_success", kind)] = "1" if success else "0"
        values[("mlflow_backup_last_run_timestamp_seconds", kind)] = now
        if success:
            values[("mlflow_backup_last_success_timestamp_seconds", kind)] = now
        lines = []
        for metric, help_text in METRIC_HELP.items():
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f'{metric}{{kind="{k}"}} {values[(metric, k)]}' for k in KINDS if (metric, k) in values]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-platform-backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="/etc/mlflow-platform/backup/backup.json")
    sub = parser.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("postgres", help="pgBackRest backup of the whole cluster")
    pg.add_argument("--type", choices=("full", "diff", "incr"), required=True)
    sub.add_parser("artifacts", help="mirror the artifact bucket")
    sub.add_parser("secrets", help="encrypted archive of the secrets and TLS material")
    sub.add_parser("all", help="postgres (full if none yet, else diff), artifacts, secrets")
    check = sub.add_parser("verify", help="check that a restore has everything it needs; changes nothing")
    check.add_argument("--set", default="latest", help="pgBackRest backup label, or latest")
    check.add_argument("--secrets-archive", default="latest", help="archive file name, or latest")
    check.add_argument("--identity", required=True, help="age identity (private key) file")
    secrets = sub.add_parser("restore-secrets", help="extract a secrets archive over / (after verify)")
    secrets.add_argument("--archive", required=True, help="archive file name, as verify printed it")
    secrets.add_argument("--identity", required=True, help="age identity (private key) file")
    sub.add_parser("restore-artifacts", help="make the bucket what the mirror holds (after verify)")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    backup = Backup(config)

    if args.command == "verify":
        try:
            print(json.dumps(backup.verify(args.set, args.secrets_archive, args.identity)))
        except BackupError as exc:
            print(f"restore check failed: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command in ("restore-secrets", "restore-artifacts"):
        try:
            if args.command == "restore-secrets":
                print(backup.restore_secrets(args.archive, args.identity))
            else:
                print(backup.restore_artifacts())
        except BackupError as exc:
            print(f"restore failed: {exc}", file=sys.stderr)
            return 1
        return 0

    steps = {
        "postgres": lambda: (
            backup.postgres(args.type) if args.command == "postgres" else backup.postgres_auto()
        ),
        "artifacts": backup.artifacts,
        "secrets": backup.secrets,
    }
    failed = []
    for kind in KINDS if args.command == "all" else (args.command,):
        try:
            print(f"{kind}: ok: {steps[kind]()}", flush=True)
            record(config["metrics_file"], kind, True)
        except (BackupError, OSError, json.JSONDecodeError) as exc:
            print(f"{kind}: FAILED: {exc}", file=sys.stderr, flush=True)
            record(config["metrics_file"], kind, False)
            failed.append(kind)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
