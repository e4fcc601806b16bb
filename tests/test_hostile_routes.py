"""Hostile input on the live surfaces, property-based: a real facility (``afhub up`` with the
Dask gateway), bob logged in with his server running.

- every route of the server extension (``afhub/api/...`` including the Dask routes, and the
  dashboard relay ``afhub/dask/clusters/...``) with any method, path segment and body;
- the hub's token broker route (``hub/api/afhub/users/<name>/token``) with any name, path
  and credential.

Never a 5xx; never a cluster outside bob's limits; a token only to bob's own server for bob;
no token or secret in any response or in the facility's log. Each surface runs the profile's
count of examples (2,000; ``--hypothesis-profile thorough``: 20,000), each a real request; a
surface stops sending after ``BUDGET`` seconds (a slow machine), and prints how many it sent.
An example costs ~10-30 ms, so the whole module takes about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import psutil
import pytest
from facility import example_values, wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

BUDGET = 60.0  # seconds per surface at most
LIVE = settings(
    max_examples=settings.default.max_examples,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
)
MAX_WORKERS, MAX_CLUSTERS = 8, 2


@pytest.fixture(scope="module")
def fac(start_facility):
    values = example_values("local")
    values["culling"] = {"enabled": False}
    facility = start_facility(values, name="hostile")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def bob(fac):
    hs = fac.login_with_server("bob")
    hs.server_api("GET", "afhub/api/token")  # the OAuth handshake with the server
    return hs


def server_env(fac, user: str) -> dict:
    home = str(fac.home(user))
    for p in psutil.process_iter():
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("JUPYTERHUB_USER") == user and env.get("HOME") == home:
            return env
    raise AssertionError(f"no server process of {user}")


@pytest.fixture(scope="module")
def secrets_of(fac, bob):
    """Every secret that must never show: bob's server API token, his data token, the hub's
    cookie secret and crypt key."""
    env = server_env(fac, "bob")
    # the server's environment holds BEARER_TOKEN_FILE as a template ($XDG_RUNTIME_DIR/...);
    # the server resolves it, and its token status names the file
    token_file = bob.server_api("GET", "afhub/api/token").json()["path"]
    wait_for(lambda: open(token_file).read().strip(), 60, what="bob's data token")
    found = {
        "server api token": env["JUPYTERHUB_API_TOKEN"],
        "data token": open(token_file).read().strip(),
        "crypt key": (fac.data_dir / "crypt_key").read_text().strip(),
        "cookie secret": (fac.data_dir / "jupyterhub_cookie_secret").read_bytes().hex(),
    }
    return {k: v for k, v in found.items() if v}


def assert_no_secret(text: str, secrets: dict, where: str) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name} in {where}"


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.ran = 0

    def spent(self) -> bool:
        if time.monotonic() > self.end:
            return True
        self.ran += 1
        return False


SEGMENTS = st.sampled_from(
    ["token", "dask", "clusters", "options", "scale", "adapt", "session", "environments",
     "kernel", "data", "test", "settings", "", "..", "%2e%2e", "x" * 300, "é", "a b", "%00",
     "../../hub/api", "status", "0123456789ab"]
) | st.text(max_size=12).map(lambda s: s.replace("/", "").replace("?", "").replace("#", ""))  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "options",
                    "workers",
                    "minimum",
                    "maximum",
                    "adapt",
                    "worker_cores",
                    "worker_memory",
                    "image",
                    "worker_gpus",
                ]
            )
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)
BODIES = JSON.map(json.dumps) | st.binary(max_size=64).map(lambda b: b.decode("latin-1"))


def bobs_clusters(hs) -> list[dict]:
    r = hs.server_api("GET", "afhub/api/dask/clusters")
    assert r.status_code == 200, r.text
    return r.json()["clusters"]


def test_server_extension_routes(fac, bob, secrets_of):
    budget = Budget(BUDGET)
    envs = bob.server_api("GET", "afhub/api/environments").json()
    env_ids = [e["id"] for e in envs.get("environments", [])] or ["0123456789ab"]

    @LIVE
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
        base=st.sampled_from(
            [
                "afhub/api/",
                "afhub/api/dask/",
                "afhub/api/dask/clusters/",
                "afhub/dask/clusters/",
                "afhub/api/environments/",
            ]
        ),
        segments=st.lists(SEGMENTS | st.sampled_from(env_ids), max_size=3),
        body=BODIES | st.none(),
    )
    @example(method="GET", base="afhub/api/environments/", segments=["%80"], body=None)
    @example(method="DELETE", base="afhub/api/dask/clusters/", segments=["a%E0%A4%A"], body=None)
    def one(method, base, segments, body):
        if budget.spent():
            return
        path = base + "/".join(segments)
        kw = {"data": body.encode("utf-8", "surrogatepass")} if body is not None else {}
        if method in ("GET", "HEAD", "DELETE"):
            kw = {}
        r = bob.server_api(method, path, timeout=240, **kw)
        assert r.status_code < 500, (method, path, body, r.status_code, r.text[:500])
        assert_no_secret(r.text, secrets_of, f"{method} {path}")
        assert_no_secret(json.dumps(dict(r.headers)), secrets_of, f"headers of {method} {path}")

    try:
        one()
        clusters = bobs_clusters(bob)
        assert len(clusters) <= MAX_CLUSTERS
        for c in clusters:
            assert c.get("requested", 0) <= MAX_WORKERS, c
            options = c.get("options") or {}
            assert options.get("worker_cores", 1) <= 2 and options.get("worker_memory", 1) <= 4
            assert options.get("image", "analysis") == "analysis"  # analysis-gpu is gpu-users'
    finally:
        for c in bobs_clusters(bob):
            bob.server_api("DELETE", f"afhub/api/dask/clusters/{c['name']}")
        wait_for(lambda: not bobs_clusters(bob), 120, what="bob's clusters stopped")
    assert_no_secret(fac.log_text(), secrets_of, "the facility's log")
    print(f"server extension routes: {budget.ran} examples in {BUDGET:.0f} s at most")


def test_token_broker_route(fac, bob, secrets_of):
    budget = Budget(BUDGET)
    server_token = secrets_of["server api token"]
    names = st.sampled_from(["bob", "alice", "carol", "", "..", "bob/../alice", "BOB", "b%6fb"])

    @LIVE
    @given(
        name=names | st.text(max_size=10).map(lambda s: s.replace("/", "").replace("?", "")),
        tail=st.sampled_from(
            ["", "/", "/x", "?audience=other", "?scope=storage.modify:/", "?refresh=1", "//"]
        ),
        credential=st.sampled_from(["server", "none", "garbage", "cookie"]),
        method=st.sampled_from(["GET", "POST", "DELETE"]),
    )
    # malformed percent-encoding: configurable-http-proxy alone answered 500 (proxy_guard.mjs)
    @example(name="%80", tail="", credential="server", method="GET")
    @example(name="bob%", tail="", credential="cookie", method="POST")
    def one(name, tail, credential, method):
        if budget.spent():
            return
        url = fac.url + f"hub/api/afhub/users/{name}/token{tail}"
        headers = {}
        if credential == "server":
            headers["Authorization"] = f"token {server_token}"
        elif credential == "garbage":
            headers["Authorization"] = "token " + "x" * 32
        session = bob.session if credential == "cookie" else None
        send = session.request if session else __import__("requests").request
        r = send(method, url, headers=headers, timeout=60, allow_redirects=False)
        assert r.status_code < 500, (method, url, credential, r.status_code, r.text[:300])
        body = r.text
        granted = r.status_code == 200
        if granted:  # GET the token, POST a forced refresh: bob's own server only
            # the route's name is a path segment: "b%6fb" is bob
            assert (unquote(name), credential) == ("bob", "server"), url
            assert method != "DELETE", url
        secrets = dict(secrets_of)
        if granted:
            secrets.pop("data token")  # bob's own server asked for bob's token
        assert_no_secret(body, secrets, f"{method} {url}")

    one()
    assert_no_secret(fac.log_text(), secrets_of, "the facility's log")
    print(f"token broker route: {budget.ran} examples in {BUDGET:.0f} s at most")
