"""Stage commands of the GoCD pipelines: `register`, `verify-data`, `evaluate`, `deploy`, `smoke-test`.

They also work by hand. Options fall back to the variables the bridge passes (MLFLOW_MODEL_NAME,
MLFLOW_MODEL_VERSION, MLFLOW_MODEL_ALIAS, MLFLOW_MODEL_URI, MLFLOW_TRACKING_URI) and GoCD's GO_* ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mlflow_ext import lineage
from mlflow_ext.commands.options import dry_run_option, emit, output_option, server, tracking_option
from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages import common, evaluate, register, smoke_test, verify_data
from mlflow_ext.stages.deploy import DeployRequest, get_target

DEPLOY_TAG_TARGET = lineage.DEPLOY_TARGET
DEPLOY_TAG_NAME = lineage.DEPLOY_NAME
DEPLOY_TAG_ENDPOINT = lineage.DEPLOY_ENDPOINT


def _blank(value: str | None) -> str | None:
    """GoCD passes declared variables even when empty: an empty value means not given."""
    return value.strip() or None if isinstance(value, str) else value


def _client(tracking_uri: str | None) -> Any:
    tracking_uri = server(_blank(tracking_uri))  # before MLflow loads: a missing server fails at once
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # fluent calls (runs, downloads) use it too
    return common.client(tracking_uri)


def _model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--version", "version", envvar="MLFLOW_MODEL_VERSION", help="Model version (default: from the env)."
    )(func)
    return click.option("--model", envvar="MLFLOW_MODEL_NAME", help="Registered model name.")(func)


def _data_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data",
        envvar="MLFLOW_EXT_TEST_DATA",
        required=True,
        help="Test data: a CSV or Parquet file, or a folder of them (verify-data also takes s3://).",
    )(func)


# --- register ---


@click.command("register")
@click.option(
    "--model", envvar="MLFLOW_MODEL_NAME", required=True, help="Registered model to add a version to."
)
@click.option("--pipeline", envvar="GO_PIPELINE_NAME", help="Build pipeline whose run to register.")
@click.option("--counter", envvar="GO_PIPELINE_COUNTER", help="Its instance counter.")
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    help="Look in this experiment only (repeatable; default: MLFLOW_EXPERIMENT_NAME, else every experiment).",
)
@click.option(
    "--logged-model",
    envvar="MLFLOW_EXT_LOGGED_MODEL",
    help="Name of the logged model when a run has several.",
)
@tracking_option()
@dry_run_option
@output_option
def register_command(
    model: str,
    pipeline: str | None,
    counter: str | None,
    experiments: tuple[str, ...],
    logged_model: str | None,
    tracking_uri: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Register the model this GoCD pipeline instance trained as a new version of MODEL.

    Finds the newest finished run tagged lineage.ci.pipeline/counter = GO_PIPELINE_NAME/COUNTER that
    logged a model. Registering the same instance again returns the same version.
    """
    pipeline, counter = _blank(pipeline), _blank(counter)
    if not pipeline or not counter:
        raise ConfigError(
            "no pipeline instance: pass --pipeline and --counter or run inside GoCD (GO_PIPELINE_*)"
        )
    client = _client(tracking_uri)
    # Not click's envvar: it would split a name with spaces into several.
    experiments = tuple(name for name in experiments if name) or tuple(
        name for name in [common.env("MLFLOW_EXPERIMENT_NAME")] if name
    )
    if dry_run:
        run, models = register.find_build_run(client, pipeline, counter, experiments)
        emit(
            {
                "model": model,
                "run_id": run.info.run_id,
                "logged_models": sorted(m.name for m in models),
                "pipeline": pipeline,
                "counter": counter,
                "changed": True,
                "dry_run": True,
            },
            output,
        )
        return
    result = register.register(
        client, model, pipeline, counter, experiments=experiments, logged_model=_blank(logged_model)
    )
    emit(result.to_dict(), output)


# --- verify-data ---


@click.command("verify-data")
@_data_option
@_model_options
@click.option(
    "--dataset", envvar="MLFLOW_EXT_TEST_DATASET", help="Name of the recorded dataset (default: role test)."
)
@tracking_option()
@output_option
def verify_data_command(
    data: str,
    model: str | None,
    version: str | None,
    dataset: str | None,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Check that DATA is the test data the model version recorded: fingerprint, columns, types, rows."""
    client = _client(tracking_uri)
    name = common.model_name(_blank(model))
    found = common.resolve_version(client, name, _blank(version))
    emit(verify_data.verify(client, found, data, dataset=_blank(dataset)).to_dict(), output)


# --- evaluate ---


@click.command("evaluate")
@_data_option
@click.option(
    "--target", envvar="MLFLOW_EXT_TARGET_COLUMN", required=True, help="Column holding the true answer."
)
@_model_options
@click.option("--alias", envvar="MLFLOW_MODEL_ALIAS", help="Alias being released (checks promotion.alias).")
@click.option(
    "--baseline",
    envvar="MLFLOW_EXT_EVALUATE_BASELINE",
    help="Version to compare with, or none (default: the candidate's promotion.from_version).",
)
@click.option(
    "--task",
    envvar="MLFLOW_EXT_EVALUATE_TASK",
    type=click.Choice(["auto", "classification", "regression"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--max-drop",
    envvar="MLFLOW_EXT_EVALUATE_MAX_DROP",
    type=float,
    help="Fail when the primary metric (accuracy, RMSE) is worse than the baseline's by more than this.",
)
@click.option(
    "--experiment", envvar="MLFLOW_EXT_EVALUATE_EXPERIMENT", help="Experiment of the evaluation run."
)
@tracking_option()
@output_option
def evaluate_command(
    data: str,
    target: str,
    model: str | None,
    version: str | None,
    alias: str | None,
    baseline: str | None,
    task: str,
    max_drop: float | None,
    experiment: str | None,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Evaluate the candidate version on DATA, next to the version it replaces; log an evaluation run.

    Candidate: --version / MLFLOW_MODEL_VERSION, or in a build pipeline the version it registered.
    """
    client = _client(tracking_uri)
    name = common.model_name(_blank(model))
    found = common.resolve_version(client, name, _blank(version))
    result = evaluate.evaluate(
        client,
        found,
        data,
        target,
        alias=_blank(alias),
        baseline=_blank(baseline),
        task=task,
        max_drop=max_drop,
        experiment=_blank(experiment),
    )
    if output == "json":
        emit(result.to_dict(), output)
    else:
        click.echo(evaluate.render_report(result), nl=False)
        click.echo(f"evaluation run: {result.run_id}")


# --- deploy ---


def _target(name: str, root: str | None, mode: str | None, options: tuple[str, ...]) -> Any:

    config: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        config[key.strip()] = value
    if _blank(root):
        config["root"] = str(root)
    if _blank(mode):
        config["mode"] = str(mode)
    return get_target(name, config)


def _target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--option",
        "-o",
        "options",
        multiple=True,
        envvar="MLFLOW_EXT_DEPLOY_OPTIONS",
        metavar="KEY=VALUE",
        help="Target-specific setting, repeatable; the env var holds them space-separated (local: python, "
        "constraints, timeout, unit_dir, user, workers).",
    )(func)
    func = click.option(
        "--mode",
        type=click.Choice(["auto", "systemd", "process"]),
        help="local: systemd unit or supervised process (default $MLFLOW_EXT_DEPLOY_MODE or auto).",
    )(func)
    func = click.option(
        "--root",
        help="local: folder of the deployments (default $MLFLOW_EXT_DEPLOY_ROOT or /opt/mlflow-deployments).",
    )(func)
    func = click.option(
        "--name", envvar="MLFLOW_EXT_DEPLOY_NAME", help="Deployment name (default <model>-<alias>)."
    )(func)
    return click.option(
        "--target",
        "target_name",
        envvar=["MLFLOW_EXT_DEPLOY_TARGET", "DEPLOY_TARGET"],
        default="local",
        show_default=True,
        help="Deploy target (built in: local, sagemaker; more through entry points).",
    )(func)


def _deployment_name(name: str | None, model: str | None, alias: str | None, version: str | None) -> str:
    if _blank(name):
        return common.check_name(str(name))
    return common.deployment_name(
        common.model_name(_blank(model)), common.alias(_blank(alias)), common.version_option(_blank(version))
    )


@click.command("deploy")
@_target_options
@_model_options
@click.option("--alias", envvar="MLFLOW_MODEL_ALIAS", help="Alias being deployed (names the deployment).")
@click.option(
    "--port",
    envvar=["MLFLOW_EXT_DEPLOY_PORT", "DEPLOY_PORT"],
    type=click.IntRange(1, 65535),
    help="Port to serve on.",
)
@click.option(
    "--force",
    is_flag=True,
    envvar="MLFLOW_EXT_DEPLOY_FORCE",
    help="Redeploy even when this version already serves.",
)
@click.option("--stop", "action", flag_value="stop", help="Stop the deployment --name (keep its files).")
@click.option(
    "--remove", "action", flag_value="remove", help="Stop the deployment --name and delete its files."
)
@tracking_option()
@dry_run_option
@output_option
def deploy_command(
    target_name: str,
    name: str | None,
    root: str | None,
    mode: str | None,
    options: tuple[str, ...],
    model: str | None,
    version: str | None,
    alias: str | None,
    port: int | None,
    force: bool,
    action: str | None,
    tracking_uri: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Serve a registered model version on a deploy target, under the name <model>-<alias>."""
    target = _target(target_name, root, mode, options)
    deployment_name = _deployment_name(name, model, alias, version)
    if action:
        if dry_run:
            found = target.get(deployment_name)
            emit(
                {"name": deployment_name, "action": action, "changed": found is not None, "dry_run": True},
                output,
            )
            return
        result = target.stop(deployment_name) if action == "stop" else target.remove(deployment_name)
        emit(result.to_dict(), output)
        return
    client = _client(tracking_uri)
    model_name = common.model_name(_blank(model))
    found = common.resolve_version(client, model_name, _blank(version))
    request = DeployRequest(
        deployment_name, model_name, str(found.version), common.alias(_blank(alias)), port
    )
    if dry_run:
        current = target.get(deployment_name)
        emit(
            {
                "name": deployment_name,
                "target": target.name,
                "model_uri": request.model_uri,
                "port": port,
                "current_version": current.version if current else None,
                "changed": current is None
                or current.version != request.version
                or current.status != "running",
                "dry_run": True,
            },
            output,
        )
        return
    deployment = target.deploy(request, force=force)
    if deployment.changed:
        tags = {DEPLOY_TAG_TARGET: target.name, DEPLOY_TAG_NAME: deployment.name}
        if deployment.endpoint:
            tags[DEPLOY_TAG_ENDPOINT] = deployment.endpoint
        try:
            for key, value in tags.items():
                client.set_model_version_tag(model_name, request.version, key, value)
        except Exception as exc:
            raise StageFailed(
                f"deployed {deployment.name}, but cannot tag version {request.version}: "
                f"{common.mlflow_message(exc)}"
            ) from None
    emit(deployment.to_dict(), output)


# --- smoke-test ---


@click.command("smoke-test")
@_data_option
@_target_options
@click.option("--model", envvar="MLFLOW_MODEL_NAME", help="Registered model (names the deployment).")
@click.option("--alias", envvar="MLFLOW_MODEL_ALIAS", help="Alias deployed (names the deployment).")
@click.option(
    "--version",
    "version",
    envvar="MLFLOW_MODEL_VERSION",
    help="Version the deployment must serve (default: any).",
)
@click.option(
    "--rows",
    envvar="MLFLOW_EXT_SMOKE_ROWS",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Rows to send (0: all).",
)
@click.option(
    "--exclude",
    "exclude",
    envvar="MLFLOW_EXT_TARGET_COLUMN",
    help="Column not to send when the model has no signature.",
)
@click.option(
    "--compare/--no-compare",
    envvar="MLFLOW_EXT_SMOKE_COMPARE",
    default=True,
    show_default=True,
    help="Also check the answers against the registered version's own predictions, made here.",
)
@tracking_option()
@output_option
def smoke_test_command(
    data: str,
    target_name: str,
    name: str | None,
    root: str | None,
    mode: str | None,
    options: tuple[str, ...],
    model: str | None,
    alias: str | None,
    version: str | None,
    rows: int,
    exclude: str | None,
    compare: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Send rows of DATA to the deployment's /invocations and check the answers."""
    target = _target(target_name, root, mode, options)
    deployment_name = _deployment_name(name, model, alias, version)
    _client(tracking_uri)  # the signature, and with --compare the model, come from the registry
    result = smoke_test.smoke_test(
        target,
        deployment_name,
        data,
        rows=rows,
        target_column=_blank(exclude),
        expected_version=common.version_option(_blank(version)),
        compare=compare,
    )
    emit(result.to_dict(), output)
