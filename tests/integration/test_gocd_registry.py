"""`mlflow-ext gocd generate --from-registry` against the real platform: the catalog comes from model tags."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "import sys; from mlflow_ext.cli import run; sys.argv[0] = 'mlflow-ext'; run()"]


def _env(platform) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_EXT_GOCD_"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", **platform.client_env()}


def _client(platform):
    from mlflow import MlflowClient

    os.environ.update({k: v for k, v in platform.client_env().items() if k != "MLFLOW_TRACKING_URI"})
    return MlflowClient(tracking_uri=platform.tracking_uri)


def test_generate_from_registry_tags(platform, tmp_path: Path) -> None:
    client = _client(platform)
    team = f"team-{uuid.uuid4().hex[:6]}"
    tagged = f"gocd-registry {uuid.uuid4().hex[:6]}"
    client.create_registered_model(
        tagged,
        tags={
            "gocd.team": team,
            "gocd.repository": "https://git.example.com/ml/models.git",
            "gocd.entry_point": "python train.py",
            "gocd.test_data": "data/test.csv",
            "gocd.target": "species",
            "gocd.aliases": "staging,champion",
            "gocd.production_aliases": "champion",
            "gocd.deploy.target": "local",
            "gocd.deploy.port": "5301",
        },
    )
    client.create_registered_model(f"untagged-{uuid.uuid4().hex[:6]}")
    out, routes = tmp_path / "out", tmp_path / "routes.yaml"
    subprocess.run(
        [*CLI, "gocd", "generate", "--from-registry", "--out", str(out), "--routes", str(routes)],
        env=_env(platform),
        check=True,
        capture_output=True,
        text=True,
    )
    gocd_name = tagged.replace(" ", "_")
    document = yaml.safe_load((out / f"{gocd_name}.gocd.yaml").read_text())
    assert sorted(document["pipelines"]) == [
        f"{gocd_name}-build",
        f"{gocd_name}-release-champion",
        f"{gocd_name}-release-staging",
    ]
    assert document["pipelines"][f"{gocd_name}-build"]["group"] == team
    mine = [r for r in yaml.safe_load(routes.read_text())["routes"] if r["model"] == tagged]
    assert [r["pipeline"] for r in mine] == [f"{gocd_name}-release-champion", f"{gocd_name}-release-staging"]


def test_a_catalog_entry_missing_from_the_registry_is_an_error(platform, tmp_path: Path) -> None:
    missing = f"never-registered-{uuid.uuid4().hex[:6]}"
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": missing,
                        "team": "ds",
                        "repository": "https://git.example.com/ml/models.git",
                        "entry_point": "python train.py",
                        "test_data": "data/test.csv",
                        "target": "y",
                        "deploy": {"target": "local"},
                        "aliases": ["staging"],
                    }
                ]
            }
        )
    )
    out = tmp_path / "out"
    answer = subprocess.run(
        [*CLI, "gocd", "generate", "--from-registry", "--catalog", str(catalog), "--out", str(out)],
        env=_env(platform),
        capture_output=True,
        text=True,
    )
    assert answer.returncode == 6, answer.stderr
    assert f"model '{missing}' is not in the registry" in answer.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.yaml"]
