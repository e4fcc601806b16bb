"""Data access, pure parts and one real in-process Dask scheduler:

- ``xrootd_sessions``: login names per token generation and where they go in URLs;
- ``data_access``: the sidebar's "test access" reasons from the client's answer and the
  token's claims;
- ``contract``: what servers, clusters and jobs get (CA, endpoints, XRootD settings);
- ``dask_token_gate``: a real ``distributed`` scheduler admits a worker only once the token
  plugin is registered, and the worker holds the token before its first task.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest
from afhub.server_ext import contract, data_access, xrootd_sessions

N = "t0a1b2c3"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("root://cache:1094//public/f.root", f"root://{N}@cache:1094//public/f.root"),
        ("roots://cache//f", f"roots://{N}@cache//f"),
        ("xroot://h:1//f?x=1", f"xroot://{N}@h:1//f?x=1"),
        ("ROOT://h:1//f", f"ROOT://{N}@h:1//f"),
        ("root://someone@cache:1094//f", "root://someone@cache:1094//f"),  # the caller's name
        ("https://cache:1094/f", "https://cache:1094/f"),
        ("/local/file.root", "/local/file.root"),
        ("file:///x", "file:///x"),
        ("root:///f", "root:///f"),
    ],
)
def test_session_url(url, expected):
    assert xrootd_sessions.session_url(url, N) == expected


def test_session_url_without_a_token_generation_leaves_urls():
    assert xrootd_sessions.session_url("root://h//f", None) == "root://h//f"


def test_login_name_changes_with_every_atomic_renewal(tmp_path):
    path = tmp_path / "bt"
    env = {contract.TOKEN_FILE: str(path)}
    assert xrootd_sessions.login_name(env) is None  # no file yet
    names = []
    for i in range(3):
        tmp = tmp_path / "bt.tmp"
        tmp.write_text(f"token-{i}")
        os.replace(tmp, path)  # as token.write_token_file renews
        names.append(xrootd_sessions.login_name(env))
        assert xrootd_sessions.login_name(env) == names[-1]  # stable between renewals
    assert len(set(names)) == 3
    assert all(len(n) == 8 and n.startswith("t") for n in names)  # fits kXR_login's 8 bytes
    assert xrootd_sessions.login_name({}) is None


def test_sessions_only_where_the_contract_asks():
    assert not xrootd_sessions.enabled({})
    assert xrootd_sessions.install({}) is False
    env = contract.data_environment(origin="root://o:1", margin=120)
    assert xrootd_sessions.enabled(env)


def test_data_environment_carries_paths_and_settings_only():
    env = contract.data_environment(
        origin="root://o:1094/",
        cache="root://c:1094",
        ca_file="/ca/ca.pem",
        samples="/public/samples",
        audience="afhub-storage",
        margin=45,
    )
    assert env == {
        "AFHUB_DATA_ORIGIN": "root://o:1094",
        "AFHUB_DATA_CACHE": "root://c:1094",
        "X509_CERT_FILE": "/ca/ca.pem",
        "AFHUB_DATA_SAMPLES": "/public/samples",
        "AFHUB_DATA_AUDIENCE": "afhub-storage",
        "AFHUB_XROOTD_SESSIONS": "per-token",
        "XRD_DATASERVERTTL": "45",
    }
    assert contract.read_data_environment({**env, "OTHER": "x"}) == env
    assert contract.data_endpoints(env) == {"cache": "root://c:1094", "origin": "root://o:1094"}


@pytest.mark.parametrize("margin, ttl", [(None, 120), (5, 30), (45, 45), (600, 300)])
def test_xrootd_ttl_follows_the_renewal_margin(margin, ttl):
    assert contract.xrootd_ttl(margin) == ttl


# ------------------------------------------------------------------ "test access" reasons


def jwt(**claims) -> str:
    def enc(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


NOW = 1_000_000.0
GOOD = {"exp": NOW + 300, "aud": "afhub-storage", "scope": "storage.read:/public"}
REFUSED = {"ok": False, "errno": 3010, "message": "[ERROR] Server responded with an error: "
           "[3010] Unable to open /p; permission denied"}  # fmt: skip
LOGIN = {"ok": False, "errno": 0, "message": "[FATAL] Auth failed: No protocols left to try"}
DOWN = {"ok": False, "errno": 0, "message": "[FATAL] Connection error: Connection refused"}


@pytest.mark.parametrize(
    "probe, claims, has_token, path, reason",
    [
        ({"ok": True, "bytes": 1024}, GOOD, True, "/public/a.root", "ok"),
        (LOGIN, None, False, "/public/a.root", "no_token"),
        (LOGIN, {**GOOD, "exp": NOW - 1}, True, "/public/a.root", "expired"),
        (REFUSED, {**GOOD, "exp": NOW - 1}, True, "/public/a.root", "expired"),
        (REFUSED, {**GOOD, "aud": "https://elsewhere"}, True, "/public/a.root", "wrong_audience"),
        (REFUSED, {**GOOD, "aud": ["x", "afhub-storage"]}, True, "/user/bob/f", "not_in_scope"),
        (REFUSED, GOOD, True, "/public/a.root", "denied"),
        ({"ok": False, "errno": 3011, "message": "[3011] No such file"}, GOOD, True, "/p", "not_found"),
        (DOWN, GOOD, True, "/public/a.root", "server_down"),
        (None, GOOD, True, "/public/a.root", "server_down"),
        ({"ok": False, "message": "[FATAL] TLS error"}, GOOD, True, "/public/a", "tls"),
        ({"ok": False, "client": False, "message": "No module named XRootD"}, GOOD, True, "/p", "error"),
    ],
)  # fmt: skip
def test_diagnose(probe, claims, has_token, path, reason):
    got, message = data_access.diagnose(
        probe, claims=claims, has_token=has_token, audience="afhub-storage", path=path, now=NOW
    )
    assert got == reason, message
    assert message


@pytest.mark.parametrize(
    "scope, path, covered",
    [
        ("storage.read:/public", "/public/samples/a.root", True),
        ("storage.read:/public", "/public", True),
        ("storage.read:/public", "/publicity/a", False),
        ("storage.read:/user/alice storage.modify:/user/alice", "/user/alice/x", True),
        ("storage.read:/user/alice", "/user/bob/x", False),
        ("storage.create:/user/alice", "/user/alice/x", False),
        ("storage.read:/", "/anything", True),
        (None, "/public/a", False),
    ],
)
def test_read_scope_covers(scope, path, covered):
    assert data_access.read_scope_covers(scope, path) is covered


def test_token_claims_reads_only_what_the_sidebar_shows():
    token = jwt(exp=5, aud="a", scope="s", sub="alice", jti="j")
    assert data_access.token_claims(token) == {"exp": 5, "aud": "a", "scope": "s"}
    assert data_access.token_claims("not a jwt") is None
    assert data_access.token_claims("a.!!!.c") is None
    assert data_access.token_claims(None) is None


@pytest.mark.parametrize(
    "path, ok",
    [
        ("/public/samples/uproot-HZZ.root", True),
        ("/user/alice/x.root", True),
        ("public/a", False),
        ("/a?authz=x", False),
        ("/a b", False),
        ("/a/../etc", False),
        ("/" + "a" * 2000, False),
        (5, False),
    ],
)
def test_test_path_problem(path, ok):
    assert (data_access.test_path_problem(path) is None) is ok


# ------------------------------------------------------------------ the token gate


@pytest.fixture
def environ_restored():
    """The in-process worker's plugin sets variables in this process: put them back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


async def test_scheduler_admits_workers_only_with_the_token(tmp_path, environ_restored):
    from afhub.server_ext.dask_token import PLUGIN_NAME, BearerTokenPlugin
    from afhub.server_ext.dask_token_gate import install
    from distributed import Client, Scheduler, Worker

    async with Scheduler(dashboard_address=":0", port=0) as s:
        assert install(s, timeout=30)
        assert not install(s, timeout=30)  # once
        worker = Worker(s.address, local_directory=str(tmp_path), nthreads=1)
        joining = asyncio.ensure_future(worker.start())
        await asyncio.sleep(1.0)
        assert not s.workers  # held until the token is there
        async with worker, Client(s.address, asynchronous=True) as c:
            t0 = time.monotonic()
            env = {contract.DATA_CACHE: "root://c:1", contract.CA_FILE: "/nonexistent/ca.pem"}
            await c.register_plugin(BearerTokenPlugin("tok-1", env), name=PLUGIN_NAME)
            await joining
            await c.wait_for_workers(1)
            assert time.monotonic() - t0 < 5

            def first_task():
                path = os.environ["BEARER_TOKEN_FILE"]
                return (
                    open(path).read(),
                    oct(os.stat(path).st_mode & 0o777),
                    os.environ.get("AFHUB_DATA_CACHE"),
                    os.environ.get("X509_CERT_FILE"),
                )

            token, mode, cache, ca = await c.submit(first_task, pure=False)
            assert (token.strip(), mode, cache) == ("tok-1", "0o600", "root://c:1")
            assert ca is None or ca != "/nonexistent/ca.pem"  # a CA path the worker lacks


async def test_gate_gives_up_once_and_lets_workers_join_without_the_token(tmp_path):
    from afhub.server_ext.dask_token_gate import install
    from distributed import Scheduler, Worker

    async with Scheduler(dashboard_address=":0", port=0) as s:
        install(s, timeout=0.5)
        async with Worker(s.address, local_directory=str(tmp_path / "a"), nthreads=1):
            assert len(s.workers) == 1
            t0 = time.monotonic()
            async with Worker(s.address, local_directory=str(tmp_path / "b"), nthreads=1):
                assert len(s.workers) == 2
                assert time.monotonic() - t0 < 0.5  # not held again


def test_no_gate_without_a_wait():
    from afhub.server_ext.dask_token_gate import install, wait_seconds

    assert wait_seconds({}) == 0 and wait_seconds({contract.DASK_TOKEN_WAIT: "x"}) == 0
    assert wait_seconds({contract.DASK_TOKEN_WAIT: "30"}) == 30
    assert install(type("S", (), {"handlers": {"register-worker": None}})(), 0) is False
