"""Signature checks, event parsing, the routing file and the bridge's settings table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_ext import events, routing, settings
from mlflow_ext.bridge import signature, webhook
from mlflow_ext.errors import ConfigError
from mlflow_ext.events import Event

SECRET = "s3cret-s3cret-s3cret"
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-01-02T03:04:05.123456+00:00",
        "data": {"name": "iris", "alias": "champion", "version": "3"},
    }
).encode()


def test_mlflows_own_signature_verifies():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    header = _generate_hmac_signature(SECRET, "d-1", "1700000000", BODY.decode())
    assert header == signature.sign(SECRET, "d-1", "1700000000", BODY)
    assert signature.verify(SECRET, "d-1", "1700000000", header, BODY, 1700000010, 300) == ("d-1", 1700000000)
    # A rotated secret: one of several signatures is enough.
    both = f"{signature.sign('other-secret-xxxxxxxx', 'd-1', '1700000000', BODY)} {header}"
    assert signature.verify(SECRET, "d-1", "1700000000", both, BODY, 1700000010, 300)


@pytest.mark.parametrize(
    ("delivery_id", "timestamp", "header", "body", "now", "status"),
    [
        ("d-1", "1700000000", None, BODY, 1700000000, 401),
        ("d-1", "1700000000", "v1,AAAA", BODY, 1700000000, 401),
        ("d-2", "1700000000", "SIGNED", BODY, 1700000000, 401),  # signed for d-1, sent as d-2
        ("d-1", "1700000000", "SIGNED", BODY + b" ", 1700000000, 401),
        ("d-1", "1700000000", "SIGNED", BODY, 1700000301, 401),  # stale
        ("d-1", "1700000000", "SIGNED", BODY, 1699999699, 401),  # from the future
        ("d 1", "1700000000", "SIGNED", BODY, 1700000000, 400),
        ("d-1", "17e8", "SIGNED", BODY, 1700000000, 400),
    ],
)
def test_forged_replayed_or_stale_deliveries_are_refused(delivery_id, timestamp, header, body, now, status):
    if header == "SIGNED":
        header = signature.sign(SECRET, "d-1", "1700000000", BODY)
    with pytest.raises(signature.SignatureError) as caught:
        signature.verify(SECRET, delivery_id, timestamp, header, body, now, 300)
    assert caught.value.status == status
    assert SECRET not in caught.value.message


def test_events_parse_strictly():
    event = events.parse(BODY)
    assert event == Event(events.ALIAS_CREATED, "iris", "3", alias="champion", sent_us=event.sent_us)
    assert event.sent_us == 1767323045123456
    tag = events.parse(
        json.dumps(
            {
                "entity": "model_version_tag",
                "action": "set",
                "timestamp": "2026-01-02T03:04:05+00:00",
                "data": {"name": "m", "version": "2", "key": "gocd.counter", "value": "4"},
            }
        ).encode()
    )
    assert tag.reserved_tag
    unrouted = {"entity": "prompt", "action": "created", "timestamp": "2026-01-02T03:04:05+00:00", "data": {}}
    assert events.parse(json.dumps(unrouted).encode()) is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"\xff\xfe", 400),
        (b"[1, 2]", 400),
        (b'{"entity": "model_version_alias"}', 422),
        (BODY.replace(b'"3"', b'"three"'), 422),
        (BODY.replace(b'"3"', b'"0"'), 422),
        (BODY.replace(b'"iris"', b'""'), 422),
        (BODY.replace(b'"champion"', b"7"), 422),
        (BODY.replace(b"2026-01-02T03:04:05.123456+00:00", b"yesterday"), 422),
        (BODY.replace(b"+00:00", b""), 422),
    ],
)
def test_malformed_bodies_are_4xx(body, status):
    with pytest.raises(events.EventError) as caught:
        events.parse(body)
    assert caught.value.status == status


ROUTES = """
routes:
  - model: "iris-*"
    alias: champion
    pipeline: iris-release-champion
    variables: {DEPLOY_TARGET: local, PORT: 8080}
  - model: "*"
    event: model_version.created
    pipeline: build-all
  - model: "iris-*"
    event: model_version_tag.set
    tag: "validation.*"
    pipeline: iris-validated
"""


def test_routes_match_by_model_pattern_alias_event_and_tag():
    routes = routing.parse(ROUTES)
    assert routes[0].variables == {"DEPLOY_TARGET": "local", "PORT": "8080"}

    def matched(event):
        return [r.pipeline for r in routes if r.matches(event)]

    assert matched(Event(events.ALIAS_CREATED, "iris-a", "1", alias="champion")) == ["iris-release-champion"]
    assert matched(Event(events.ALIAS_CREATED, "iris-a", "1", alias="challenger")) == []
    assert matched(Event(events.ALIAS_CREATED, "wine", "1", alias="champion")) == []
    assert matched(Event(events.VERSION_CREATED, "wine", "1")) == ["build-all"]
    assert matched(Event(events.TAG_SET, "iris-a", "1", tag_key="validation.ok", tag_value="1")) == [
        "iris-validated"
    ]


def test_the_platforms_own_tags_are_never_routed():
    route = routing.Route(model="*", event=events.TAG_SET, pipeline="p", tag="*")
    for key in ("gocd.counter", "deploy.status", "promotion.by"):
        assert not route.matches(Event(events.TAG_SET, "m", "1", tag_key=key, tag_value="x"))
    assert route.matches(Event(events.TAG_SET, "m", "1", tag_key="team", tag_value="x"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("routes: [{model: a, pipeline: p}]", "exactly one of alias or event"),
        ("routes: [{model: a, alias: x, event: model_version.created, pipeline: p}]", "exactly one"),
        ("routes: [{model: a, alias: x, pipeline: 'bad name'}]", "pipeline"),
        ("routes: [{model: a, event: model_version_tag.set, pipeline: p}]", "tag"),
        ("routes: [{model: a, event: registered_model.created, pipeline: p}]", "event must be"),
        ("routes: [{model: a, alias: x, pipeline: p, variables: {MLFLOW_RUN_ID: x}}]", "set by the bridge"),
        ("routes: [{model: a, alias: x, pipeline: p, stage: y}]", "unknown keys"),
        ("pipelines: []", "one key, routes"),
        ("routes: [", "not valid YAML"),
    ],
)
def test_bad_routing_files_name_the_entry(text, problem):
    with pytest.raises(ConfigError, match=problem):
        routing.parse(text, "routes.yaml")


def test_the_router_reloads_a_changed_file_and_keeps_the_old_routes_on_error(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    router = routing.Router(str(path))
    assert len(router.routes) == 3
    path.write_text("routes: [{model: a, alias: x, pipeline: p}]\n")
    assert [r.pipeline for r in router.routes] == ["p"]
    path.write_text("routes: [{model: a}]\n")
    assert [r.pipeline for r in router.routes] == ["p"]
    assert "routes[0]" in (router.last_error or "")


def test_the_webhook_fingerprint_identifies_the_secret_without_showing_it():
    assert webhook.fingerprint(SECRET) == webhook.fingerprint(SECRET)
    assert webhook.fingerprint(SECRET) != webhook.fingerprint(SECRET + "x")
    assert SECRET not in webhook.description(SECRET)


def test_bridge_settings_fail_naming_the_variable_never_the_value():
    with pytest.raises(ConfigError) as caught:
        settings.load(
            {"MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET": "short", "MLFLOW_EXT_BRIDGE_PORT": "x"}, scope="bridge"
        )
    message = str(caught.value)
    for name in (
        "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET",
        "MLFLOW_EXT_BRIDGE_PORT",
        "MLFLOW_EXT_BRIDGE_DATABASE_URI",
    ):
        assert name in message
    assert "short" not in message.replace("shorter", "")
    only = settings.load({}, scope="bridge", names={"MLFLOW_EXT_BRIDGE_PORT"})
    assert only == {"MLFLOW_EXT_BRIDGE_PORT": 5100}


def test_readme_bridge_table_matches_the_registry():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = "<!-- bridge-settings:begin -->\n", "<!-- bridge-settings:end -->"
    assert begin in text and end in text, "README lost its bridge settings markers"
    assert text.split(begin, 1)[1].split(end, 1)[0] == settings.render_markdown_table("bridge"), (
        "README bridge settings table is stale: regenerate it with `mlflow-ext bridge settings`"
    )
