"""Token handoff end to end: real ``afhub up`` (hub, proxy, demo OIDC provider), real user
servers with the afhub server extension, tokens living 8 s.

Order matters inside this module (one facility, shared state): login mapping, renewal over
three lifetimes, broker authorisation, 50 merged calls, provider stopped and resumed, refresh
token revoked, logout; the secret scan runs last over everything the run produced.

The demo provider (oidc-provider-mock) gives refresh-grant tokens authlib's default lifetime
(3600 s) unless started through ``afhub.authenticator.dev_idp``; ``_short_refresh_lifetime``
applies the same setting to the provider process of this facility (see ``dev_idp.py``).
"""

from __future__ import annotations

import concurrent.futures
import re
import signal
import stat
import time
from pathlib import Path

import psutil
import pytest
import requests
from facility import wait_for

pytestmark = pytest.mark.integration

LIFETIME = 8
MARGIN = 3
USERS = [
    {"name": "alice", "groups": ["physicists", "gpu-users"]},
    {"name": "bob", "groups": ["physicists"]},
    {"name": "carol", "groups": ["afhub-admins"]},
    {"name": "eve", "groups": ["visitors"]},
]
SEEN_TOKENS: set[str] = set()  # every IdP token string this module saw, for the secret scan
SEEN_ENVIRONS: list[str] = []  # environments of user servers, for the secret scan
SEEN_PAGES: list[str] = []  # pages and API answers fetched by users, for the secret scan


def _values() -> dict:
    return {
        "hub": {"ip": "127.0.0.1"},
        "auth": {
            "provider": "dev",
            "allowed_groups": ["physicists", "afhub-admins"],
            "admin_groups": ["afhub-admins"],
            "admin_auth_state": True,  # explicit grant: the secret scan collects every token
            "upstream_timeout": 2,
            "dev": {"port": 0, "token_lifetime": LIFETIME, "users": USERS},
        },
        "tokens": {"refresh_margin": MARGIN},
        "backend": {"type": "local"},
        "culling": {"enabled": False},
    }


@pytest.fixture(scope="module")
def fac(start_facility):
    facility = start_facility(_values(), name="tokens")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    hs = fac.login("alice")
    r = hs.spawn()
    assert r.status_code in (201, 202), r.text
    hs.wait_ready()
    assert hs.get("user/alice/lab").status_code == 200  # server cookie for its REST API
    return hs


def status(hs) -> dict:
    r = hs.server_api("GET", "afhub/api/token")
    assert r.status_code == 200, r.text
    SEEN_PAGES.append(r.text)
    return r.json()


def server_process(fac, username: str) -> psutil.Process:
    """The user's server process of this facility (other facilities may run on this machine)."""
    home = str(fac.home(username))
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("jupyterhub-singleuser" in c for c in p.info["cmdline"] or []):
                env = p.environ()
                if env.get("JUPYTERHUB_USER") == username and env.get("HOME") == home:
                    return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no server process for {username}")


def broker(fac, user: str, token: str | None, method: str = "GET") -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    r = requests.request(
        method, fac.url + f"hub/api/afhub/users/{user}/token", headers=headers, timeout=30
    )
    if r.status_code == 200:
        SEEN_TOKENS.add(r.json()["access_token"])
    return r


def remember_auth_state(fac, user: str) -> None:
    state = fac.admin_api("GET", f"users/{user}").json().get("auth_state") or {}
    for key in ("access_token", "refresh_token", "id_token"):
        if state.get(key):
            SEEN_TOKENS.add(state[key])


def idp_count(fac, needle: str) -> int:
    return fac.log_text().count(needle)


TOKEN_POSTS = '"POST /oauth2/token HTTP/1.1"'
AUTHORIZE = "/oauth2/authorize?"
BOB_REFRESHED = "Refreshed data-access token for bob\n"


# ------------------------------------------------------------------ login and groups


@pytest.mark.parametrize(
    "user, allowed, admin, groups",
    [
        ("alice", True, False, ["gpu-users", "physicists"]),
        ("bob", True, False, ["physicists"]),
        ("carol", True, True, ["afhub-admins"]),
        ("eve", False, None, None),
    ],
)
def test_login_maps_groups_from_the_claim(fac, user, allowed, admin, groups):
    hs = fac.login(user, expect_ok=allowed)
    SEEN_PAGES.append(hs.last_response.text)
    if not allowed:
        assert hs.last_response.status_code == 403
        return
    model = fac.admin_api("GET", f"users/{user}").json()
    assert model["admin"] is admin
    assert sorted(model["groups"]) == groups
    state = model["auth_state"]
    assert state["expires_at"] > time.time()
    assert state["refresh_token"]
    remember_auth_state(fac, user)


# ------------------------------------------------------------------ renewal in the server


def test_token_file_renewed_over_three_lifetimes_without_login(fac, alice):
    proc = server_process(fac, "alice")
    env = proc.environ()
    SEEN_ENVIRONS.append("\n".join(f"{k}={v}" for k, v in env.items()))
    assert "BEARER_TOKEN" not in env
    first = wait_for(
        lambda: status(alice)["state"] == "ok" and status(alice), 30, what="first token"
    )
    path = Path(first["path"])
    assert env["BEARER_TOKEN_FILE"] == "$XDG_RUNTIME_DIR/bt_u$UID"  # the template; resolved here:
    assert path == fac.home("alice") / ".afhub" / "tokens" / f"bt_u{fac.uid('alice')}"
    assert path.stat().st_uid == fac.uid("alice")
    logins = idp_count(fac, AUTHORIZE)

    tokens = []
    deadline = time.monotonic() + 3 * LIFETIME + 2
    while time.monotonic() < deadline:
        text = path.read_text().strip()
        SEEN_TOKENS.add(text)
        if not tokens or tokens[-1] != text:
            tokens.append(text)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        time.sleep(0.5)
    assert len(tokens) >= 4, f"only {len(tokens)} distinct tokens over {3 * LIFETIME}s"
    assert idp_count(fac, AUTHORIZE) == logins, "renewal must not need a new login"
    st = status(alice)
    assert st["state"] == "ok" and st["valid"] and st["last_error"] is None
    assert st["renewals"] >= 4
    assert "access_token" not in st and tokens[-1] not in str(st)
    # no leftover temp files from the atomic writes
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_refresh_action_renews_now(fac, alice):
    # forced refreshes closer than a quarter lifetime to the last one are merged into it
    wait_for(
        lambda: time.time() - status(alice)["last_refresh"] > LIFETIME / 4 + 0.3,
        LIFETIME,
        interval=0.2,
        what="a token old enough to force a refresh",
    )
    asked = time.time()
    r = alice.server_api("POST", "afhub/api/token")
    assert r.status_code == 200, r.text
    SEEN_PAGES.append(r.text)
    assert r.json()["state"] == "ok"
    assert r.json()["last_refresh"] >= asked


# ------------------------------------------------------------------ broker authorisation


def test_broker_answers_only_the_users_own_server(fac, alice):
    own = server_process(fac, "alice").environ()["JUPYTERHUB_API_TOKEN"]
    r = broker(fac, "alice", own)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_at",
        "expires_in",
        "lifetime",
        "audience",
        "scope",
        "refresh_error",
    }
    assert body["expires_in"] > 0
    # another user's name with alice's server token
    assert broker(fac, "bob", own).status_code == 403
    # alice's own plain API token (inherits all her scopes, including the custom one)
    plain = alice.api("POST", "users/alice/tokens", json={"note": "plain"}).json()["token"]
    r = broker(fac, "alice", plain)
    assert r.status_code == 403 and "own servers" in r.json()["message"]
    assert broker(fac, "alice", None).status_code == 403
    assert r.headers.get("Cache-Control") is None or "no-store" in r.headers["Cache-Control"]


def test_fifty_concurrent_calls_with_expired_token_make_one_refresh(fac):
    bob = fac.login("bob")
    assert bob.spawn().status_code in (201, 202)
    bob.wait_ready()
    proc = server_process(fac, "bob")
    token = proc.environ()["JUPYTERHUB_API_TOKEN"]
    wait_for(lambda: broker(fac, "bob", token).status_code == 200, 20, what="bob's first token")
    proc.send_signal(signal.SIGSTOP)  # freeze bob's renewer so the hub's token expires
    try:
        time.sleep(LIFETIME + 1)
        state = fac.admin_api("GET", "users/bob").json()["auth_state"]
        assert state["expires_at"] < time.time(), "token should have expired"
        # the provider's log counts every refresh (alice's server renews meanwhile): count
        # the hub's own line for bob's refreshes, and check the provider saw at least one
        posts, refreshes = idp_count(fac, TOKEN_POSTS), idp_count(fac, BOB_REFRESHED)
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: broker(fac, "bob", token), range(50)))
        time.sleep(0.5)  # let the provider's access log line land
        assert [a.status_code for a in answers] == [200] * 50
        assert len({a.json()["access_token"] for a in answers}) == 1
        assert idp_count(fac, BOB_REFRESHED) - refreshes == 1, "exactly one refresh for bob"
        assert idp_count(fac, TOKEN_POSTS) - posts >= 1
        state = fac.admin_api("GET", "users/bob").json()["auth_state"]
        assert state["access_token"] == answers[0].json()["access_token"]  # persisted
        remember_auth_state(fac, "bob")
    finally:
        proc.send_signal(signal.SIGCONT)
    bob.stop_server()


# ------------------------------------------------------------------ failure behaviour


def test_provider_stopped_then_resumed(fac, alice):
    wait_for(lambda: status(alice)["state"] == "ok", 20, what="healthy start")
    idp = psutil.Process(fac.idp_pid())
    idp.send_signal(signal.SIGSTOP)
    try:
        failing = wait_for(
            lambda: (s := status(alice))["state"] == "refresh_failing" and s,
            3 * LIFETIME,
            what="refresh_failing",
        )
        assert "token refresh" in failing["last_error"]
        wait_for(lambda: not status(alice)["valid"], 2 * LIFETIME, what="expiry while down")
        # the server keeps running and answering
        assert alice.get("user/alice/api/status").status_code == 200
        assert server_process(fac, "alice").is_running()
    finally:
        idp.send_signal(signal.SIGCONT)
    recovered = wait_for(
        lambda: (s := status(alice))["state"] == "ok" and s["valid"] and s, 30, what="recovery"
    )
    assert recovered["last_error"] is None
    SEEN_TOKENS.add(Path(recovered["path"]).read_text().strip())


def test_revoked_refresh_token_asks_for_login_then_recovers(fac, alice):
    r = requests.post(fac.idp_url.rstrip("/") + "/users/alice/revoke-tokens", timeout=10)
    assert r.status_code == 204
    st = wait_for(
        lambda: (s := status(alice))["state"] == "login_required" and s,
        3 * LIFETIME,
        what="login_required",
    )
    assert "log in" in st["message"] and "invalid_grant" in st["last_error"]
    # a fresh login (it lands on the running server); the server picks the new tokens up itself
    r = fac.login("alice").last_response
    assert "/user/alice/" in r.url, r.url
    remember_auth_state(fac, "alice")
    wait_for(lambda: status(alice)["state"] == "ok", 3 * LIFETIME, what="recovery after login")


def test_logout_clears_auth_state_and_broker_answers_401(fac, alice):
    token = server_process(fac, "alice").environ()["JUPYTERHUB_API_TOKEN"]
    assert broker(fac, "alice", token).status_code == 200
    remember_auth_state(fac, "alice")
    r = alice.get("hub/logout")
    assert r.status_code == 200
    assert fac.admin_api("GET", "users/alice").json()["auth_state"] is None
    r = broker(fac, "alice", token)
    assert r.status_code == 401 and r.json()["reason"] == "login_required"
    assert server_process(fac, "alice").is_running()


def test_metrics_on_hub(fac):
    text = fac.login("carol").get("hub/metrics").text
    refreshes = re.search(r"^afhub_token_refresh_total (\S+)$", text, re.M)
    assert refreshes and float(refreshes.group(1)) >= 4
    assert re.search(
        r'^afhub_token_refresh_failures_total\{reason="unavailable"\} [1-9]', text, re.M
    )
    assert re.search(
        r'^afhub_token_refresh_failures_total\{reason="login_required"\} [1-9]', text, re.M
    )
    assert re.search(
        r'^afhub_token_broker_request_duration_seconds_count\{status="200"\} [1-9]', text, re.M
    )
    assert re.search(
        r'^afhub_token_broker_request_duration_seconds_count\{status="403"\} [1-9]', text, re.M
    )


# ------------------------------------------------------------------ secret scan (last)


def test_no_token_in_logs_argv_environments_or_pages(fac):
    """Every access, refresh and id token seen above is absent from the hub/proxy/IdP/server
    logs, every process command line, user server environments and the pages users got."""
    tokens = {t for t in SEEN_TOKENS if t and len(t) >= 20}
    assert len(tokens) >= 8, f"the scan needs tokens to look for, got {len(tokens)}"
    carol = fac.login("carol")
    for page in ("hub/home", "hub/token", "hub/admin", "hub/spawn"):
        SEEN_PAGES.append(carol.get(page).text)
    haystacks = {"facility log": fac.log_text()}
    for p in psutil.process_iter(["pid", "cmdline"]):
        haystacks[f"cmdline of {p.info['pid']}"] = " ".join(p.info["cmdline"] or [])
    for i, env in enumerate(SEEN_ENVIRONS):
        haystacks[f"server environment {i}"] = env
    for i, page in enumerate(SEEN_PAGES):
        haystacks[f"page {i}"] = page
    leaks = [
        f"{where}: token ...{t[-6:]}"
        for where, text in haystacks.items()
        for t in tokens
        if t in text
    ]
    assert not leaks, leaks
