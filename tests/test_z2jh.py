"""Zero to JupyterHub: rendered chart values validate against the chart's own schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from afhub.hub_config import apply, cli, values
from afhub.hub_config.z2jh import (
    CHART_MARKER,
    chart_problems,
    chart_schema,
    chart_values,
    detect_deployment,
)
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent


def test_chart_schemas_ship_in_the_package_with_provenance():
    schema, defaults = chart_schema("z2jh")
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert "hub" in defaults and "singleuser" in defaults
    dask_schema, dask_defaults = chart_schema("dask-gateway")
    assert "gateway" in dask_defaults and dask_schema["type"] == "object"
    source = (REPO / "hub_config" / "schemas" / "SOURCE.md").read_text()
    assert "48ea50e3" in source and "99f3ef0b" in source


def test_chart_schema_catches_a_bad_chart_value(k8s_values):
    out = chart_values(k8s_values)
    assert chart_problems(out) == []
    out["cull"]["timeout"] = "two hours"
    out["hub"]["allowNamedServers"] = "yes"
    paths = [p.path for p in chart_problems(out)]
    assert paths == ["chart:cull.timeout", "chart:hub.allowNamedServers"]


@pytest.fixture
def k8s_values():
    return values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")


def test_kubernetes_example_renders_valid_chart_values(k8s_values):
    out = chart_values(k8s_values)
    assert chart_problems(out) == []
    assert "configure(c, '/etc/afhub/values.yaml'" in out["hub"]["extraConfig"]["afhub"]
    assert out["cull"]["timeout"] == k8s_values["culling"]["timeout"]
    # the client secret is referenced, never copied
    ref = out["hub"]["extraEnv"]["AFHUB_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "afhub-secrets", "key": "AFHUB_OIDC_CLIENT_SECRET"}


def test_inline_secrets_are_not_rendered(k8s_values):
    k8s_values["auth"]["client_secret"] = "inline-s3cret-value"
    assert "inline-s3cret-value" not in yaml.safe_dump(chart_values(k8s_values))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"backend": {"type": "local"}},
            "backend.type: must be kubernetes under Zero to JupyterHub",
        ),
        ({"auth": {"callback_url": None}}, "auth.callback_url: missing required key"),
    ],
)
def test_what_cannot_run_under_z2jh_is_named(k8s_values, change, message):
    for section, kv in change.items():
        for k, v in kv.items():
            if v is None:
                k8s_values[section].pop(k)
            else:
                k8s_values[section][k] = v
    with pytest.raises(values.ValuesError, match=message):
        chart_values(k8s_values)


def test_configure_under_z2jh_leaves_chart_settings_alone(k8s_values, tmp_path):
    c = Config()
    apply.configure(
        c,
        k8s_values,
        data_dir=str(tmp_path),
        deployment="z2jh",
        environ={"AFHUB_OIDC_CLIENT_SECRET": "x"},
    )
    assert c.JupyterHub.spawner_class == "afhub-kubernetes"
    assert c.JupyterHub.authenticator_class == "afhub"
    for chart_owned in ("ip", "port", "hub_ip", "db_url", "cookie_secret_file", "services"):
        assert chart_owned not in c.JupyterHub, chart_owned
    assert "ConfigurableHTTPProxy" not in c


def test_z2jh_cli(capsys):
    assert cli.main(["z2jh", str(REPO / "hub_config" / "examples" / "kubernetes.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["hub"]["extraConfig"]
    assert cli.main(["z2jh", str(REPO / "hub_config" / "examples" / "local.yaml")]) == 2
    assert "backend.type: must be kubernetes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "environ, marker, expected",
    [
        ({"HELM_RELEASE_NAME": "af", "POD_NAMESPACE": "af"}, True, "z2jh"),
        ({"HELM_RELEASE_NAME": "af"}, False, "standalone"),  # a Helm env var alone is not the chart
        ({}, True, "standalone"),
        ({}, False, "standalone"),
    ],
)
def test_detect_deployment(environ, marker, expected):
    assert detect_deployment(environ, exists=lambda p: marker and p == CHART_MARKER) == expected
    assert CHART_MARKER == "/etc/jupyterhub/z2jh.py"


def test_configure_detects_the_chart(k8s_values, tmp_path, monkeypatch):
    """Without deployment=, configure() inside the chart's hub leaves chart-owned settings alone."""
    marker = tmp_path / "z2jh.py"  # the chart mounts its helper at /etc/jupyterhub/z2jh.py
    marker.write_text("")
    monkeypatch.setattr("afhub.hub_config.z2jh.CHART_MARKER", str(marker))
    env = {"HELM_RELEASE_NAME": "af", "AFHUB_OIDC_CLIENT_SECRET": "x"}
    c = Config()
    plan = apply.configure(c, k8s_values, data_dir=str(tmp_path), environ=env)
    assert plan.deployment == "z2jh"
    assert "db_url" not in c.JupyterHub and "ConfigurableHTTPProxy" not in c
    c = Config()
    plan = apply.configure(
        c, k8s_values, data_dir=str(tmp_path), environ={"AFHUB_OIDC_CLIENT_SECRET": "x"}
    )
    assert plan.deployment == "standalone" and c.JupyterHub.db_url.startswith("sqlite:")


def test_render_target_z2jh(capsys):
    k8s = str(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    assert cli.main(["render", "--target", "z2jh", k8s]) == 0
    out = capsys.readouterr().out
    assert "c.JupyterHub.spawner_class = 'afhub-kubernetes'" in out
    assert "c.JupyterHub.db_url" not in out and "idle-culler" not in out
    assert "/srv/jupyterhub" in out
    assert cli.main(["render", k8s]) == 0
    assert "c.JupyterHub.db_url" in capsys.readouterr().out


def test_check_target_z2jh_reports_everything_at_once(tmp_path, capsys):
    """Schema, cross-key and chart-target problems in one run (not one per fix)."""
    k8s = yaml.safe_load((REPO / "hub_config" / "examples" / "kubernetes.yaml").read_text())
    del k8s["auth"]["callback_url"]
    k8s["hub"]["db_url"] = "sqlite:///x"
    k8s["hub"]["port"] = "8000"
    k8s["profiles"][0]["image"] = "coffee"
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump(k8s))
    assert cli.main(["check", str(f)]) == 2
    plain = capsys.readouterr().err
    assert "auth.callback_url" not in plain
    assert cli.main(["check", "--target", "z2jh", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == [
        "auth.callback_url",
        "hub.db_url",
        "hub.port",
        "profiles[0].image",
    ]
    assert "did you mean 'coffea'" in err[3] or "coffea" in err[3]


def test_operator_guide_matches_what_afhub_z2jh_renders():
    """Every hub.extraConfig snippet in docs/operators.md passes deployment="z2jh" (without
    it afhub's single-machine settings would be applied inside the chart), and the guide
    documents the commands and the shipped schemas."""
    guide = (REPO / "docs" / "operators.md").read_text()
    calls = re.findall(r'configure\(\s*c, "/etc/afhub/values.yaml",([^)]*)\)', guide)
    chart_calls = [c for c in calls if "/srv/jupyterhub" in c]
    assert chart_calls, calls
    for call in chart_calls:
        assert 'deployment="z2jh"' in call and "exit_on_error=True" in call, call
    rendered = chart_values(values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml"))
    extra = rendered["hub"]["extraConfig"]["afhub"]
    assert 'deployment="z2jh"' in extra and "exit_on_error=True" in extra
    for needed in (
        "afhub z2jh values.yaml",
        "check --target z2jh",
        "render --target z2jh",
        "offline_access",
        "oauth_callback",
        "token-exchange",
        "hub_config/schemas/",
    ):
        assert needed in guide, needed


def test_a_hub_with_unusable_values_stops_without_a_traceback(tmp_path):
    """Real JupyterHub loading a config that calls configure(..., exit_on_error=True), as the
    chart's extraConfig and afhub up's generated config do: exit 2, one line per problem."""
    bad = tmp_path / "values.yaml"
    bad.write_text("hub:\n  port: x\n  port: 1\nprofiles:\n  - {display_name: A, image: nope}\n")
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text(
        "from afhub.hub_config import configure\n"
        f"configure(c, {str(bad)!r}, data_dir={str(tmp_path / 'd')!r}, exit_on_error=True)\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"afhub: {bad} cannot be used:" in r.stderr
    assert "  hub.port: duplicate key: first at line 2, again at line 3" in r.stderr
    assert "  profiles[0].image: unknown image 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()  # nothing was set up


def test_check_without_target_warns_what_the_chart_needs(tmp_path, capsys):
    """A kubernetes facility checked without --target still hears what `afhub z2jh` would
    refuse (as a warning: the hub may run outside the chart), so `check` saying ok is not
    followed by `afhub z2jh` failing without notice."""
    k8s = yaml.safe_load((REPO / "hub_config" / "examples" / "kubernetes.yaml").read_text())
    del k8s["auth"]["callback_url"]
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump(k8s))
    assert cli.main(["check", str(f)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: auth.callback_url: missing required key under Zero to Jupyter")
    assert "check with --target z2jh" in err
    assert out.strip().endswith("5 profiles; 1 warning)")
    assert cli.main(["z2jh", str(f)]) == 2
    assert "auth.callback_url: missing required key" in capsys.readouterr().err
    local = str(REPO / "hub_config" / "examples" / "local.yaml")
    assert cli.main(["check", local]) == 0
    assert capsys.readouterr().err == ""  # not a kubernetes facility: no chart warnings


@pytest.mark.parametrize(
    "ref, image",
    [
        ("registry.example.org/afhub-hub:0.1.0", {"name": "registry.example.org/afhub-hub", "tag": "0.1.0"}),
        ("registry.example.org:5000/afhub-hub", {"name": "registry.example.org:5000/afhub-hub", "tag": "latest"}),
        ("r.example.org/hub@sha256:abc", {"name": "r.example.org/hub@sha256:abc", "tag": ""}),
    ],
)
def test_z2jh_names_the_hub_image(ref, image, capsys):
    """`afhub z2jh --hub-image` sets the chart's hub.image to the image images/hub/Dockerfile
    builds (afhub installed in the chart's hub image)."""
    example = str(REPO / "hub_config" / "examples" / "kubernetes.yaml")
    assert cli.main(["z2jh", "--hub-image", ref, example]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["hub"]["image"] == image
    assert not chart_problems(out)
