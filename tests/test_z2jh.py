"""Zero to JupyterHub: rendered chart values validate against the chart's own schema."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from afhub.hub_config import apply, cli, values
from afhub.hub_config.z2jh import chart_values
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO.parent / "shared" / "schemas"


def merged_over_defaults(generated: dict) -> dict:
    def merge(base, extra):
        out = copy.deepcopy(base)
        for k, v in extra.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(yaml.safe_load((SCHEMAS / "z2jh-values.yaml").read_text()), generated)


@pytest.fixture(scope="module")
def z2jh_schema():
    if not SCHEMAS.exists():
        pytest.fail(f"chart schemas not found beside the repository at {SCHEMAS}")
    return yaml.safe_load((SCHEMAS / "z2jh-values.schema.yaml").read_text())


@pytest.fixture
def k8s_values():
    return values.load_file(REPO / "hub_config" / "examples" / "kubernetes.yaml")


def test_kubernetes_example_renders_valid_chart_values(k8s_values, z2jh_schema):
    out = chart_values(k8s_values)
    jsonschema.Draft7Validator(z2jh_schema).validate(merged_over_defaults(out))
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
