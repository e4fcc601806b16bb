"""JupyterLab's news question is off by default (values ``singleuser.lab_news``).

Pure rules as a table, then a real ``jupyter server`` with JupyterLab and the afhub extension
enabled by its shipped config file: JupyterLab's own settings API reports the default its
front end reads (``fetchNews``; ``"none"`` is what makes JupyterLab ask). The Chromium check of
the first load (no question on screen) is in test_first_load_browser.py.
"""

from __future__ import annotations

import pytest
from afhub.hub_config import apply
from afhub.server_ext.lab_settings import NEWS_PLUGIN, add_defaults, lab_defaults
from facility import example_values
from kernels_helpers import JupyterServer


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, {NEWS_PLUGIN: {"fetchNews": "false"}}),
        ({"AFHUB_LAB_NEWS": "0"}, {NEWS_PLUGIN: {"fetchNews": "false"}}),
        ({"AFHUB_LAB_NEWS": "1"}, {}),
    ],
)
def test_lab_defaults(environ, expected):
    assert lab_defaults(environ) == expected


def test_an_operators_own_overrides_win():
    overrides = {NEWS_PLUGIN: {"fetchNews": "true"}, "other": {"x": 1}}
    add_defaults(overrides, {NEWS_PLUGIN: {"fetchNews": "false", "checkForUpdates": False}})
    assert overrides == {
        NEWS_PLUGIN: {"fetchNews": "true", "checkForUpdates": False},
        "other": {"x": 1},
    }


@pytest.mark.parametrize("lab_news, env", [(False, {}), (True, {"AFHUB_LAB_NEWS": "1"})])
def test_values_key_reaches_the_server_environment(lab_news, env):
    values = example_values("local")
    values.setdefault("singleuser", {})["lab_news"] = lab_news
    plan = apply.build(values, data_dir="/tmp/afhub-test-unused")
    environment = plan.sections["Spawner"]["environment"]
    got = {k: v for k, v in environment.items() if k == "AFHUB_LAB_NEWS"}
    assert got == env


@pytest.mark.parametrize("environ, shown", [({}, "false"), ({"AFHUB_LAB_NEWS": "1"}, "none")])
def test_jupyterlab_settings_api_reports_the_default(tmp_path, environ, shown):
    server = JupyterServer(tmp_path, env=environ).start()
    try:
        r = server.get(f"lab/api/settings/{NEWS_PLUGIN}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["schema"]["properties"]["fetchNews"]["default"] == shown
        assert "fetchNews" not in (body.get("settings") or {})  # nothing in the user's settings
        assert not (tmp_path / ".jupyter" / "lab" / "user-settings").exists()
    finally:
        server.stop()
