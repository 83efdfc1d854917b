"""The UI-features front's pure parts: which routes are refused, the answer, the script and its tag."""

from __future__ import annotations

import json

from mlflow_ext.auth import ui_features

ALL_OFF = ui_features.load({})


def test_every_feature_is_off_by_default_and_telemetry_too():
    assert (
        ui_features.UiFeatures(assistant=False, demo=False, mcp_registry=False, telemetry_disabled=True)
        == ALL_OFF
    )
    assert set(ui_features.refused_routes(ALL_OFF).values()) == set(ui_features.ROUTES)


def test_a_setting_turns_its_routes_on_and_only_those():
    features = ui_features.load({"MLFLOW_EXT_UI_DEMO": "true"})
    refused = ui_features.refused_routes(features)
    assert ui_features.matching_setting(refused, "/ajax-api/3.0/mlflow/demo/generate") is None
    assert (
        ui_features.matching_setting(refused, "/ajax-api/3.0/mlflow/assistant/config")
        == "MLFLOW_EXT_UI_ASSISTANT"
    )


def test_prefixes_match_whole_segments_under_the_static_prefix():
    refused = ui_features.refused_routes(ALL_OFF, "/mlflow/")
    assert (
        ui_features.matching_setting(refused, "/mlflow/api/3.0/mlflow/mcp-servers")
        == "MLFLOW_EXT_UI_MCP_REGISTRY"
    )
    assert ui_features.matching_setting(refused, "/mlflow/api/3.0/mlflow/mcp-servers/x/versions")
    assert ui_features.matching_setting(refused, "/api/3.0/mlflow/mcp-servers") is None
    assert ui_features.matching_setting(refused, "/mlflow/ajax-api/3.0/mlflow/demonstration") is None


def test_the_answer_is_mlflows_error_json_naming_the_setting():
    body = json.loads(ui_features.answer("/ajax-api/3.0/mlflow/demo/generate", "MLFLOW_EXT_UI_DEMO"))
    assert body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "MLFLOW_EXT_UI_DEMO=true" in body["message"]


def test_the_script_follows_the_settings():
    off = ui_features.script(ALL_OFF, telemetry_is_off=True).decode()
    assert "mlflow.telemetry.info.alert.dismissed_v1" in off and "mlflow.home.demo-banner" in off
    on = ui_features.UiFeatures(assistant=True, demo=True, mcp_registry=True, telemetry_disabled=False)
    script = ui_features.script(on, telemetry_is_off=False).decode()
    assert "var storage = {};" in script and "var hidden = [];" in script


def test_telemetry_is_off_by_do_not_track_too():
    on = ui_features.load({"MLFLOW_DISABLE_TELEMETRY": "false"})
    assert not ui_features.telemetry_off(on, {})
    assert ui_features.telemetry_off(on, {"DO_NOT_TRACK": "true"})


def test_the_tag_goes_first_in_the_head():
    html = (
        b'<!doctype html><html><head><script defer="defer" src="static-files/main.js"></script></head></html>'
    )
    injected = ui_features.inject(html, "mlflow-ext/ui-features.js")
    assert injected.index(b"mlflow-ext/ui-features.js") < injected.index(b"static-files/main.js")
    assert ui_features.inject(b"no head", "x.js") == b"no head"


def test_a_sign_out_link_only_with_single_sign_on():
    assert b"var signOut = null;" in ui_features.script(ALL_OFF, True)
    assert b'var signOut = "/auth/logout";' in ui_features.script(ALL_OFF, True, "/auth/logout")
