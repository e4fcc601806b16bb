"""``singleuser.env``: hub-owned variables and inline secrets are refused at ``afhub check``."""

from __future__ import annotations

import pytest
from afhub.hub_config import values
from afhub.spawner.env_rules import env_problem

OWNED = "the hub sets this variable itself"
SECRET = "looks like a secret"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "name, value, problem",
    [
        # fine: ordinary settings, paths to where a secret lives
        ("EXPERIMENT", "atlas", None),
        ("XRD_TIMEOUT", "30", None),
        (
            "X509_CERT_DIR",
            "/etc/grid-security/certificates",
            "the hub sets this variable itself from data.ca_dir",
        ),
        (
            "X509_CERT_FILE",
            "/etc/pki/ca.pem",
            "the hub sets this variable itself from data.ca_file",
        ),
        ("X509_USER_PROXY", "/tmp/x509up_u1000", None),  # a path to where a secret lives
        ("ATLAS_TOKEN_FILE", "/secrets/atlas", None),
        ("VAULT_TOKEN_PATH", "/secrets/vault", None),
        ("TOKENIZERS_PARALLELISM", "false", SECRET),  # cautious: names are all we know
        # hub-owned: the server's hub connection, the data token, the user's identity, profile
        ("JUPYTERHUB_API_URL", "http://evil.example/hub/api", OWNED),
        ("JUPYTERHUB_API_TOKEN", "x", OWNED),
        ("JPY_API_TOKEN", "x", OWNED),
        ("BEARER_TOKEN_FILE", "/tmp/t", OWNED),
        ("BEARER_TOKEN", "x", OWNED),
        ("AFHUB_TOKEN_REFRESH_MARGIN", "1", OWNED),
        ("AFHUB_ANYTHING", "1", OWNED),
        ("HOME", "/home/afhub/bob", OWNED),
        ("USER", "bob", OWNED),
        ("MEM_LIMIT", "1", OWNED),
        ("DASK_GATEWAY__ADDRESS", "http://x", OWNED),
        ("jupyterhub_api_url", "x", OWNED),  # case does not matter
        # inline secrets
        ("S3_SECRET_ACCESS_KEY", "abc", SECRET),
        ("MY_SECRET", "abc", SECRET),
        ("GITHUB_TOKEN", "ghp_x", SECRET),
        ("DB_PASSWORD", "hunter2", SECRET),
        ("RUCIO_PASSWD", "x", SECRET),
        ("SSH_PRIVATE_KEY", "x", SECRET),
        ("OPENAI_API_KEY", "x", SECRET),
        ("AWS_ACCESS_KEY_ID", "x", SECRET),
        ("GRID_CREDENTIALS", "x", SECRET),
        ("HARMLESS_NAME", JWT, "the value looks like a token"),
    ],
)
def test_singleuser_env_rules(name, value, problem):
    got = env_problem(name, value)
    assert (got is None) if problem is None else got.startswith(problem), got


def test_check_names_each_bad_entry():
    env = {"EXPERIMENT": "cms", "JUPYTERHUB_API_URL": "http://x", "DB_PASSWORD": "p"}
    found = {p.path: p.message for p in values.validate({"singleuser": {"env": env}})}
    assert set(found) == {"singleuser.env.JUPYTERHUB_API_URL", "singleuser.env.DB_PASSWORD"}
    secret = found["singleuser.env.DB_PASSWORD"]
    assert "Kubernetes Secret" in secret and "{env: VAR}" in secret
