"""The hub<->server contract (``afhub.server_ext.contract``), both sides.

Hub side: what the values builders write into ``Spawner.environment``/``args`` is exactly the
contract's encoding of the values file. Server side: the token renewer, kernel discovery and
the session panel (session.py) decode that same environment back into the values the operator wrote, and
the broker URL a server calls is matched by the route the hub serves. Plus: the contract
imports nothing but the standard library, and no other module spells its names again.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from afhub.hub_config import apply, values
from afhub.server_ext import contract
from afhub.server_ext.kernel_discovery import EnvKernelSpecManager
from afhub.server_ext.session import session_model
from afhub.server_ext.token_renewer import TokenRenewer
from afhub.spawner.profiles import Catalogue

PACKAGE = Path(contract.__file__).resolve().parents[1]  # the afhub source tree
COMPONENTS = ("hub_config", "spawner", "authenticator", "server_ext")

VALUES = {
    "auth": {"provider": "dev"},
    "backend": {"type": "local"},
    "tokens": {"file": "/run/user/$UID/bt_u$UID", "refresh_margin": 45},
    "kernels": {
        "enabled": False,
        "roots": ["~/analysis", "/srv/envs"],
        "image_prefixes": ["/opt/micromamba/envs"],
    },
}

SERVER = {
    "JUPYTERHUB_API_TOKEN": "server-api-token",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_USER": "jo doe",
    "HOME": "/home/jo",
}


def _server_env(vals: dict) -> dict[str, str]:
    plan = apply.build(vals, data_dir="/tmp/afhub-test-contract")
    return dict(plan.get("Spawner", "environment"))


# ------------------------------------------------------------------ hub side


def test_hub_writes_the_contracts_encoding_of_the_values_file():
    plan = apply.build(VALUES, data_dir="/tmp/afhub-test-contract")
    env = plan.get("Spawner", "environment")
    assert env == {
        **contract.token_environment(file="/run/user/$UID/bt_u$UID", margin=45),
        **contract.kernel_environment(
            enabled=False,
            roots=["~/analysis", "/srv/envs"],
            image_prefixes=["/opt/micromamba/envs"],
        ),
    }
    assert env[contract.TOKEN_FILE] == "/run/user/$UID/bt_u$UID"
    assert env[contract.TOKEN_REFRESH_MARGIN] == "45"
    assert contract.SERVER_EXTENSION_ARG in plan.get("Spawner", "args")
    assert plan.get("AfhubOIDCAuthenticator", "token_refresh_margin") == 45.0


def test_hub_defaults_are_the_contracts_and_the_schemas():
    env = _server_env({"auth": {"provider": "dev"}})
    assert env[contract.TOKEN_FILE] == contract.DEFAULT_TOKEN_PATH
    assert env[contract.TOKEN_REFRESH_MARGIN] == str(contract.DEFAULT_REFRESH_MARGIN)
    schema = values.schema()["properties"]["tokens"]["properties"]
    assert schema["refresh_margin"]["default"] == contract.DEFAULT_REFRESH_MARGIN
    assert contract.DEFAULT_TOKEN_PATH in schema["file"]["description"]
    assert contract.FALLBACK_TOKEN_PATH in schema["file"]["description"]
    from afhub.authenticator.oidc import AfhubOIDCAuthenticator

    assert AfhubOIDCAuthenticator().token_refresh_margin == contract.DEFAULT_REFRESH_MARGIN


def test_every_afhub_variable_the_hub_writes_is_named_in_the_contract():
    named = set(contract.VARIABLES)
    assert {contract.TOKEN_FILE, contract.KERNEL_ROOTS, contract.SESSION["gpu_count"]} <= named
    full = {**VALUES, "kernels": {**VALUES["kernels"], "conda_envs_dirs": ["/c/envs"]}}
    written = {k for k in _server_env(full) if k.startswith("AFHUB_") or k == "BEARER_TOKEN_FILE"}
    assert written and written <= named


# ------------------------------------------------------------------ server side


def test_renewer_reads_what_the_hub_wrote():
    renewer = TokenRenewer.from_environment({**SERVER, **_server_env(VALUES)})
    assert renewer.margin == 45.0
    assert renewer.status.path == f"/run/user/{os.getuid()}/bt_u{os.getuid()}"
    assert renewer.broker_url == contract.broker_url(SERVER["JUPYTERHUB_API_URL"], "jo doe")


def test_renewer_default_path_and_margin():
    env = {**SERVER, **_server_env({"auth": {"provider": "dev"}}), "XDG_RUNTIME_DIR": "/run/u"}
    renewer = TokenRenewer.from_environment(env)
    assert renewer.margin == contract.DEFAULT_REFRESH_MARGIN
    assert renewer.status.path == f"/run/u/bt_u{os.getuid()}"


def test_no_token_delivery_without_the_hubs_variables():
    assert TokenRenewer.from_environment(dict(SERVER)) is None
    env = _server_env({**VALUES, "tokens": {"enabled": False}})
    assert contract.TOKEN_FILE not in env
    assert TokenRenewer.from_environment({**SERVER, **env}) is None


@pytest.mark.parametrize("user", ["jo", "jo doe", "ünï", "a@b.c"])
def test_the_hubs_broker_route_serves_the_url_a_server_calls(user):
    # JupyterHub mounts API handlers at {base_url}hub + route; the server knows {...}hub/api
    url = contract.broker_url("http://127.0.0.1:8081/x/hub/api/", user)
    path = urlsplit(url).path
    m = re.fullmatch("/x/hub" + contract.BROKER_ROUTE, path)
    assert m is not None
    from urllib.parse import unquote

    assert unquote(m.group(1)) == user
    from afhub.authenticator.handlers import BROKER_ROUTE, TokenBrokerHandler
    from afhub.authenticator.oidc import AfhubOIDCAuthenticator

    assert (BROKER_ROUTE, TokenBrokerHandler) in AfhubOIDCAuthenticator().get_handlers(None)


def test_kernel_discovery_reads_what_the_hub_wrote(monkeypatch):
    for var in (contract.KERNEL_ROOTS, contract.CONDA_ENVS_DIRS, contract.IMAGE_PREFIXES):
        monkeypatch.delenv(var, raising=False)
    for k, v in _server_env(VALUES).items():
        monkeypatch.setenv(k, v)
    ksm = EnvKernelSpecManager()
    assert ksm.enabled is False
    assert ksm.roots == ["~/analysis", "/srv/envs"]
    assert ksm.image_prefixes == ["/opt/micromamba/envs"]
    assert ksm.conda_envs_dirs == []


def test_kernel_discovery_defaults_when_the_values_file_is_silent(monkeypatch):
    for var in (contract.KERNEL_ROOTS, contract.CONDA_ENVS_DIRS, contract.IMAGE_PREFIXES):
        monkeypatch.delenv(var, raising=False)
    for k, v in _server_env({"backend": {"type": "local"}}).items():
        monkeypatch.setenv(k, v)
    ksm = EnvKernelSpecManager()
    assert ksm.enabled is True
    assert ksm.roots == list(contract.DEFAULT_KERNEL_ROOTS)
    assert ksm.image_prefixes == list(contract.DEFAULT_IMAGE_PREFIXES)


@pytest.mark.parametrize(
    "value, expected",
    [("1", True), ("yes", True), ("0", False), ("off", False), ("False", False), ("", False)],
)
def test_read_bool(value, expected):
    assert contract.read_bool({"V": value}, "V", not expected) is expected
    assert contract.read_bool({}, "V", expected) is expected


def test_session_round_trip():
    cat = Catalogue(
        [{"name": "cuda", "image": "reg.example.org/cuda:12", "archs": ["x86_64"], "gpu": True}],
        [
            {
                "display_name": "GPU",
                "slug": "gpu",
                "image": "cuda",
                "resources": {"cpu": 2.5, "memory": "8G", "gpu": {"count": 2, "type": "a100"}},
            }
        ],
    )
    env = cat.resolve([], {"profile": "gpu"}).env()
    assert env[contract.SESSION["image_name"]] == "cuda"  # Dask's image option default
    model = session_model(
        environ=env, machine="x86_64", cpus_available=4, gpu_devices=[], gpu_error=None
    )
    assert {
        "profile": model["profile"],
        "display_name": model["profile_display_name"],
        "image": model["image"],
        "arch": model["arch"],
        "gpus": (model["gpus"]["requested"], model["gpus"]["type"]),
        "cpu": model["cpu"]["requested"],
        "memory": model["memory"]["requested"],
    } == {
        "profile": "gpu",
        "display_name": "GPU",
        "image": "reg.example.org/cuda:12",
        "arch": "x86_64",
        "gpus": (2, "a100"),
        "cpu": "2.5",
        "memory": "8G",
    }


# ------------------------------------------------------------------ the module itself


def test_contract_imports_neither_jupyterhub_nor_jupyter_server():
    code = (
        "import sys, afhub.server_ext.contract\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('jupyterhub', 'jupyter_server', 'tornado', 'traitlets', 'afhub.hub_config'))\n"
        "assert not bad, bad\n"
        "assert not [m for m in sys.modules if m.startswith('afhub.') and m not in "
        "('afhub.server_ext', 'afhub.server_ext.contract')], sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_no_other_module_spells_the_contracts_names():
    names = {
        *contract.VARIABLES,
        contract.DEFAULT_TOKEN_PATH,
        contract.FALLBACK_TOKEN_PATH,
        contract.BROKER_ROUTE,
        contract.SERVER_EXTENSION_ARG,
        contract.TOKEN_SCOPE,
        contract.DASK_ENABLED,
        contract.DASK_GATEWAY_ADDRESS,
        contract.DASK_DEFAULT_IMAGE,
    }
    offenders = {}
    paths = [p for c in COMPONENTS for p in (PACKAGE / c).rglob("*.py")]
    assert len(paths) > 20
    for path in paths:
        rel = path.relative_to(PACKAGE)
        if path == Path(contract.__file__).resolve():
            continue
        found = _string_constants(path) & names
        if found:
            offenders[str(rel)] = sorted(found)
    assert offenders == {}
