"""What a Kubernetes user pod is given: paths and descriptions, never a secret.

No Kubernetes API server can run here, so the one fake boundary is the cluster: the pod comes
from KubeSpawner's real ``get_pod_manifest()`` on a ``KubeProfileSpawner(_mock=True)`` whose
KUBECONFIG points at https://127.0.0.1:1 (never contacted), with the whole kubernetes example
applied through ``configure()`` exactly as the hub applies it (tokens delivery on).
"""

from __future__ import annotations

import json
import secrets

import kubernetes_validate
import pytest
from afhub.hub_config import apply
from afhub.hub_config.values import load_file
from test_kubernetes_profiles import ALL_GROUPS, EXAMPLE, kube_config_file  # noqa: F401
from traitlets.config import Config

CLIENT_SECRET = "client-" + secrets.token_hex(16)
SERVER_API_TOKEN = "server-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def hub_config(tmp_path_factory):
    c = Config()
    plan = apply.configure(
        c,
        load_file(str(EXAMPLE)),
        data_dir=str(tmp_path_factory.mktemp("hubdata")),
        environ={"AFHUB_OIDC_CLIENT_SECRET": CLIENT_SECRET},
        deployment="z2jh",
    )
    return c, plan


@pytest.mark.parametrize("profile", ["cpu", "arm", "gpu-t4", "gpu-a100", "custom"])
async def test_pod_carries_no_secret(kube_config_file, hub_config, profile):  # noqa: F811
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from kubernetes_asyncio.client import ApiClient

    c, _ = hub_config
    sp = KubeProfileSpawner(config=c, _mock=True)
    sp.api_token = SERVER_API_TOKEN  # what the hub gives every server to talk back to it
    sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(ALL_GROUPS, {"profile": profile}))
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await sp.get_pod_manifest())
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    text = json.dumps(pod)
    assert CLIENT_SECRET not in text
    crypt_keys = c.CryptKeeper.get("keys") or []
    assert all(str(k) not in text for k in crypt_keys)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    # WLCG discovery: a path only, never the token itself
    assert env["BEARER_TOKEN_FILE"] == "$XDG_RUNTIME_DIR/bt_u$UID"
    assert "BEARER_TOKEN" not in env
    assert env["AFHUB_PROFILE"] == profile
    # JupyterHub hands each server its own hub API token; it is the only credential
    # in the pod, and it is the server's own, not the user's login or data token
    assert [k for k, v in env.items() if v == SERVER_API_TOKEN] == [
        k for k in env if k in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
    ]
