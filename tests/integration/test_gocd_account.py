"""The `gocd` account the Ansible role provisions can run the generated pipelines, and nothing less would do.

The account is provisioned exactly as the mlflow_server role does it: its default entry of
`mlflow_server_service_accounts` (with `mlflow_server_gocd_rights` and `mlflow_server_gocd_models`), read from
the role's defaults, turned into the `mlflow-ext tokens ensure-service-account` command line of
tasks/accounts.yml. The server takes its protected aliases, default permission and promotion policy from the
role's defaults too. Then, playing a GoCD agent with the account's token, the iris example's generated build
pipeline trains, registers and evaluates; the version is promoted to staging and to production (through the
server's promotion gates); and the production release pipeline verifies, evaluates, deploys, smoke-tests and
reports. Nothing is refused.

Against it: an account provisioned by the same command without the role's rights is refused with 403 at the
build's first stage, and the gocd account may not move the protected alias of a model outside its list.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_ext.errors import ExitCode
from tests.support import gocd_agent
from tests.support.environ import patched_environ
from tests.support.gocd_agent import CATALOG, REPO, Agent, describe, executed
from tests.support.services import VENV_BIN, Platform, free_ports, running_platform

pytestmark = pytest.mark.integration

ROLE = REPO / "ansible" / "roles" / "mlflow_server"
MODEL = "iris-classifier"
EXAMPLE = "examples/iris-classifier"
BUILD, RELEASE = f"{MODEL}-build", f"{MODEL}-release-production"
DENIED = re.compile(r"403|PERMISSION_DENIED|Permission denied")


def role_defaults() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def resolved(value: Any, defaults: dict[str, Any]) -> Any:
    """A default that is just another role variable ("{{ name }}") takes that variable's default."""
    if isinstance(value, str) and (match := re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", value)):
        return defaults[match.group(1)]
    return value


def role_gocd_account() -> dict[str, Any]:
    """The role's default gocd entry, its variables resolved (the token file is the test's own)."""
    defaults = role_defaults()
    (entry,) = [e for e in defaults["mlflow_server_service_accounts"] if e["username"] == "gocd"]
    return {key: resolved(value, defaults) for key, value in entry.items()}


def provision_argv(account: dict[str, Any], env_file: Path, token_file: Path) -> list[str]:
    """The command line of tasks/accounts.yml for one entry of mlflow_server_service_accounts."""
    return (
        [str(VENV_BIN / "mlflow-ext"), "tokens", "ensure-service-account", "--env-file", str(env_file)]
        + ["--username", account["username"], "--token-name", account["token_name"]]
        + ["--token-file", str(token_file), "--output", "json"]
        + [f"--right={right}" for right in account.get("rights", [])]
        + [f"--promote-model={model}" for model in account.get("promote_models", [])]
    )


def provision(argv: list[str]) -> dict[str, Any]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@dataclass
class World:
    platform: Platform
    workdir: Path
    pipelines: dict[str, Any]
    account: dict[str, Any]
    report: dict[str, Any]
    gocd: Agent  # runs tasks with the gocd account's token
    bare: Agent  # the same, for an account provisioned without rights
    port: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    defaults = role_defaults()
    workdir = tmp_path_factory.mktemp("gocdaccount")
    policy = workdir / "promotion-policy.yaml"
    policy.write_text(yaml.safe_dump(defaults["mlflow_server_promotion_policy"]))
    server_env = {
        "MLFLOW_EXT_PROMOTION_POLICY": str(policy),
        "MLFLOW_EXT_PROTECTED_ALIASES": ",".join(defaults["mlflow_server_protected_aliases"]),
        "MLFLOW_EXT_AUTH_DEFAULT_PERMISSION": defaults["mlflow_server_auth_default_permission"],
    }
    checkout = gocd_agent.make_checkout(workdir / "checkout", [EXAMPLE])
    (port,) = free_ports(1)
    with running_platform(extra_env=server_env) as platform:
        catalog = yaml.safe_load(CATALOG.read_text())
        catalog["tracking_uri"] = platform.tracking_uri
        catalog["models"] = [entry for entry in catalog["models"] if entry["name"] == MODEL]
        catalog["models"][0]["aliases"]["production"]["deploy"] = {"port": port}
        pipelines, _ = gocd_agent.generate(workdir, catalog)

        account = role_gocd_account()
        argv = provision_argv(account, platform.server.env_file, workdir / "gocd_token")
        report = provision(argv)
        assert provision(argv)["changed"] is False  # a second converge changes nothing
        bare = {"username": "gocd-without-rights", "token_name": account["token_name"]}
        provision(provision_argv(bare, platform.server.env_file, workdir / "bare_token"))

        def agent(token_file: str) -> Agent:
            token = (workdir / token_file).read_text().strip()
            env = gocd_agent.agent_env(workdir, {"MLFLOW_TRACKING_TOKEN": token})
            return Agent(checkout, env)

        gocd = agent("gocd_token")
        try:
            with patched_environ(platform.client_env()):  # the test's own client is the admin
                yield World(platform, workdir, pipelines, account, report, gocd, agent("bare_token"), port)
        finally:
            gocd_agent.remove_deployment(gocd.base_env, f"{MODEL}-production")


def promote(world: World, agent: Agent, model: str, version: str, alias: str) -> subprocess.CompletedProcess:
    """`mlflow-ext promote`, as whoever moves the alias after a build (the release follows the move)."""
    try:
        return subprocess.run(
            [str(VENV_BIN / "mlflow-ext"), "promote", model, version, "--to", alias, "--output", "json"],
            env={**agent.base_env, "MLFLOW_TRACKING_URI": world.platform.tracking_uri},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{exc}\nstderr: {exc.stderr!r}\nserver log:\n{world.platform.server.log()[-6000:]}"
        ) from None


def admin_client(world: World):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=world.platform.tracking_uri)


def test_the_role_gives_gocd_the_rights_the_pipelines_need(world):
    defaults = role_defaults()
    assert world.account["rights"] == defaults["mlflow_server_gocd_rights"]
    assert world.account["promote_models"] == defaults["mlflow_server_gocd_models"]
    assert world.report["user_created"] and world.report["token_created"]
    assert sorted(world.report["rights_granted"]) == sorted(
        [
            *defaults["mlflow_server_gocd_rights"],
            *(f"promote on {m}" for m in defaults["mlflow_server_gocd_models"]),
        ]
    )
    # The role's models are the example catalog's: every generated pipeline can promote its model.
    catalog = yaml.safe_load(CATALOG.read_text())
    assert set(defaults["mlflow_server_gocd_models"]) == {entry["name"] for entry in catalog["models"]}
    # The catalog's production aliases are the ones the server protects by default.
    protected = {alias.lower() for alias in defaults["mlflow_server_protected_aliases"]}
    for entry in catalog["models"]:
        production = {alias for alias, spec in entry["aliases"].items() if (spec or {}).get("production")}
        assert production and production <= protected, entry["name"]


def test_without_the_rights_the_train_stage_is_refused(world):
    runs = world.bare.run(BUILD, world.pipelines[BUILD], counter=1)
    assert executed(runs) == [("train", "entry point", 1)], describe(runs)
    assert DENIED.search(runs[0].stderr), runs[0].stderr[-2000:]


@pytest.fixture(scope="module")
def built(world: World) -> list:
    return world.gocd.run(BUILD, world.pipelines[BUILD], counter=1)


def test_gocd_runs_the_build_pipeline(world, built):
    assert executed(built) == [
        ("train", "entry point", 0),
        ("register", "register", 0),
        ("evaluate", "evaluate", 0),
    ], describe(built)
    version = admin_client(world).get_model_version(MODEL, "1")
    assert version.user_id == "gocd"
    assert version.tags["build.pipeline"] == BUILD and version.tags["evaluation.status"] == "passed"


@pytest.fixture(scope="module")
def promoted(world: World, built: list) -> dict[str, Any]:
    answers = {}
    for alias in ("staging", "production"):
        result = promote(world, world.gocd, MODEL, "1", alias)
        assert result.returncode == 0, result.stderr
        answers[alias] = json.loads(result.stdout)
        assert answers[alias]["changed"] is True
    return answers


def test_gocd_promotes_through_the_gates(world, promoted):
    client = admin_client(world)
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["promotion.by"] == "gocd" and tags["promotion.alias"] == "production"
    # The server's policy (the role's mlflow_server_promotion_policy) was checked, and its gates passed.
    answer = promoted["production"]
    assert answer["policy_origin"]["origin"] == "server"
    assert answer["gates"] and {gate["status"] for gate in answer["gates"]} == {"passed"}


def test_gocd_runs_the_production_release_pipeline(world, promoted):
    version = admin_client(world).get_model_version(MODEL, "1")
    variables = {  # what the bridge schedules the release with
        "MLFLOW_MODEL_NAME": MODEL,
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "production",
        "MLFLOW_RUN_ID": version.run_id,
        "MLFLOW_MODEL_URI": f"models:/{MODEL}/1",
        "MLFLOW_TRACKING_URI": world.platform.tracking_uri,
    }
    runs = world.gocd.run(RELEASE, world.pipelines[RELEASE], counter=1, scheduled=variables)
    assert executed(runs) == [
        ("verify-data", "verify-data", 0),
        ("evaluate", "evaluate", 0),
        ("deploy", "deploy", 0),
        ("smoke-test", "smoke-test", 0),
        ("report", "report", 0),
    ], describe(runs)
    tags = admin_client(world).get_model_version(MODEL, "1").tags
    assert tags["deploy.status"] == "deployed" and tags["deploy.alias"] == "production"
    assert tags["deploy.endpoint"] == f"http://127.0.0.1:{world.port}"


def test_gocd_may_not_move_production_of_a_model_outside_its_list(world, built):
    """Managing a model is not enough: its protected alias needs the promote right on it, which the role
    grants on the catalog's models only."""
    client = admin_client(world)
    version = client.get_model_version(MODEL, "1")
    other = "not-in-the-catalog"
    client.create_registered_model(other)
    model_id = version.model_id or version.source.removeprefix("models:/")  # the logged model's id
    client.create_model_version(other, version.source, run_id=version.run_id, model_id=model_id)
    admin = subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "grant", "permission", "gocd", "registered_model", other, "MANAGE"],
        env={**world.gocd.base_env, **world.platform.client_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert admin.returncode == 0, admin.stderr
    assert promote(world, world.gocd, other, "1", "staging").returncode == 0
    refused = promote(world, world.gocd, other, "1", "production")
    assert refused.returncode == ExitCode.DENIED, refused.stderr
    assert "promote right" in refused.stderr, refused.stderr
    assert client.get_registered_model(other).aliases == {"staging": "1"}
