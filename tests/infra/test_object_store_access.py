"""Only the S3 port, with its keys, reads or changes the bucket: no other SeaweedFS door opens to users.

The ports are not a list kept here: every TCP port and unix socket the running `weed` process listens on is
read from /proc. An unprivileged user (nobody) then tries each of them: HTTP reads, listings, writes and
deletes of a real object and of the bucket, SeaweedFS's master and volume APIs, and a plaintext or TLS gRPC
(HTTP/2) handshake. Every attempt must be refused, and the object must be intact afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets as random_secrets
import subprocess
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.infra.conftest import BUCKET, S3_ENDPOINT
from tests.support.services import s3_client as make_s3_client

pytestmark = pytest.mark.usefixtures("converged")

SEAWEEDFS_USER = "seaweedfs"
S3_PORT = int(S3_ENDPOINT.rsplit(":", 1)[1])

# Runs as nobody, with the system python3 (stdlib only): argv = bucket, key, marker, then JSON lists of
# TCP ports and unix socket paths. Prints one JSON list of attempts.
PROBE = r"""
import http.client, json, socket, ssl, sys

bucket, key, marker = sys.argv[1:4]
ports, unix_paths = json.loads(sys.argv[4]), json.loads(sys.argv[5])
# Reads and listings anywhere; writes and deletes only of the probe's own object (and of a collection that
# does not exist): a door that is open must not destroy the platform's data while it is being found.
objects = [f"/buckets/{bucket}/{key}", f"/{bucket}/{key}", f"/{key}"]
reads = objects + [
    f"/buckets/{bucket}/", "/buckets/", f"/{bucket}/", f"/{bucket}?list-type=2", "/dir/lookup?volumeId=1",
    "/dir/status", "/vol/status", "/1,01637037d6", "/api/files?path=/buckets/" + bucket,
]
requests = [(m, p) for m in ("GET", "HEAD") for p in reads]
requests += [(m, p) for m in ("PUT", "POST") for p in objects + ["/dir/assign", "/submit"]]
requests += [("DELETE", p) for p in objects]
requests += [("GET", f"/col/delete?collection={bucket}-probe-{marker[-8:]}")]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
attempts = []

def http2_answers(sock):
    # A gRPC server answers the HTTP/2 preface with a SETTINGS frame (type 4).
    sock.settimeout(5)
    sock.sendall(PREFACE)
    data = b""
    try:
        while len(data) < 9:
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError):
        return False
    return len(data) >= 9 and data[3] == 4

for port in ports:
    for method, path in requests:
        attempt = {"port": port, "request": f"{method} {path}", "status": None, "leak": False}
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, path, body=b"tampered" if method in ("PUT", "POST") else None)
            response = conn.getresponse()
            body = response.read(1 << 20)
            attempt["status"] = response.status
            attempt["leak"] = marker.encode() in body
        except (OSError, http.client.HTTPException) as exc:
            attempt["error"] = type(exc).__name__
        attempts.append(attempt)
    for tls in (False, True):
        attempt = {"port": port, "request": "gRPC over " + ("TLS" if tls else "plaintext"), "status": None}
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["h2"])
                sock = context.wrap_socket(sock)
            if http2_answers(sock):
                attempt["status"] = 200
            sock.close()
        except (OSError, ssl.SSLError) as exc:
            attempt["error"] = type(exc).__name__
        attempts.append(attempt)
for path in unix_paths:
    attempt = {"port": path, "request": "connect", "status": None}
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(path)
        attempt["status"] = 200
        sock.close()
    except OSError as exc:
        attempt["error"] = type(exc).__name__
    attempts.append(attempt)
print(json.dumps(attempts))
"""


def _weed_pid() -> int:
    uid = pwd.getpwnam(SEAWEEDFS_USER).pw_uid
    pids = [
        int(proc.name)
        for proc in Path("/proc").glob("[0-9]*")
        if _owner(proc) == uid and _comm(proc) == "weed"
    ]
    assert len(pids) == 1, f"expected one weed process of {SEAWEEDFS_USER}, found {pids}"
    return pids[0]


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def _listening_ports(pid: int) -> list[int]:
    """TCP ports (v4 and v6) in state LISTEN whose socket the process holds."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text(encoding="ascii").splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def _unix_listeners(pid: int) -> list[str]:
    """Paths of the unix stream sockets the process listens on."""
    inodes = _socket_inodes(pid)
    paths = []
    for line in Path(f"/proc/{pid}/net/unix").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        # Flags 00010000 = __SO_ACCEPTCON (listening); type 0001 = SOCK_STREAM.
        if len(fields) >= 8 and fields[6] in inodes and fields[3] == "00010000" and fields[7].startswith("/"):
            paths.append(fields[7])
    return sorted(paths)


@pytest.fixture(scope="module")
def weed() -> dict:
    pid = _weed_pid()
    return {"pid": pid, "ports": _listening_ports(pid), "unix": _unix_listeners(pid)}


@pytest.fixture
def stored_object(s3_client):
    """A model-like object in the bucket, removed afterwards."""
    key = f"infra-probe/{random_secrets.token_hex(8)}/model.pkl"
    marker = "marker-" + random_secrets.token_hex(16)
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=marker.encode())
    yield key, marker
    s3_client.delete_object(Bucket=BUCKET, Key=key)


def _probe_as_nobody(key: str, marker: str, ports: list[int], unix_paths: list[str]) -> list[dict]:
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "/usr/bin/python3",
            "-I",
            "-c",
            PROBE,
            BUCKET,
            key,
            marker,
            json.dumps(ports),
            json.dumps(unix_paths),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_s3_port_is_one_of_the_listeners(weed):
    assert S3_PORT in weed["ports"], weed
    # Master, volume, filer, S3 gateway and admin, each with its gRPC port: found without a list of them.
    assert len(weed["ports"]) > 2, weed


def test_no_listener_lets_a_local_user_read_or_change_an_object(weed, stored_object, s3_client):
    key, marker = stored_object
    attempts = _probe_as_nobody(key, marker, weed["ports"], weed["unix"])
    assert len(attempts) >= len(weed["ports"]) * 30
    allowed = [a for a in attempts if a["status"] is not None and a["status"] < 400]
    leaked = [a for a in attempts if a.get("leak")]
    assert not allowed and not leaked, "SeaweedFS answered an unprivileged user:\n" + "\n".join(
        f"  {a['port']} {a['request']} -> {a['status']}" for a in (allowed + leaked)[:40]
    )
    # Without keys the S3 port itself refuses with 403, as S3 does.
    anonymous = [
        a for a in attempts if a["port"] == S3_PORT and a["request"].startswith(("GET", "PUT", "DELETE"))
    ]
    assert anonymous and all(a["status"] == 403 for a in anonymous), anonymous
    # The object is intact, and nothing else appeared next to it.
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == marker.encode()
    prefix = key.rsplit("/", 1)[0] + "/"
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert [o["Key"] for o in listed] == [key]


def test_the_s3_port_serves_the_bucket_with_its_keys_only(secrets, stored_object, s3_client):
    key, marker = stored_object
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == marker.encode()
    wrong = make_s3_client(S3_ENDPOINT, secrets["object_store_access_key"], "not-the-secret-key-0123456789")
    with pytest.raises(ClientError) as refused:
        wrong.get_object(Bucket=BUCKET, Key=key)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
