"""Group changes at the identity provider take effect without a new login.

Every ``auth.refresh_age`` seconds of a user's hub requests (and before each spawn) the hub
refreshes the token if due, re-reads userinfo and rebuilds the auth model as at login: hub
groups, admin status and ``allowed_groups`` follow the provider; a user who is no longer
allowed must log in again (and is refused there); a provider that is down keeps the session.

Three layers, top to bottom:

- tables of the pure parts: the auth model built from fresh userinfo, and the allowed/refused
  decisions (real oauthenticator ``check_allowed``/``check_blocked_users``, no I/O);
- the refresh hook against one faked boundary, a minimal provider on loopback (below: refresh
  grant and userinfo, with switchable failures), because the demo provider cannot be made to
  answer 503, hang or refuse one token on demand. Everything else is real: the authenticator, its
  HTTP client, the broker's merging and the saved auth_state (a small in-memory user stands in
  for JupyterHub's ``User``);
- a real facility (hub, proxy, demo IdP with ``auth.refresh_age: 2``): alice loses
  ``gpu-users`` at the IdP and cannot start the GPU profile a few seconds later; then loses
  ``physicists`` and is sent to log in again, where she is refused.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import socket
import time
from urllib.parse import parse_qs

import psutil
import pytest
import requests
from afhub.authenticator.oidc import (
    AfhubOIDCAuthenticator,
    NotAllowed,
    _refresh_ahead_of_expiry,
    refreshed_auth_model,
)
from auth_helpers import MemoryUser
from facility import example_values, wait_for
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

# the fake provider (an async fixture) and the tests share one event loop
ASYNC = pytest.mark.asyncio(loop_scope="session")

ALICE = {"sub": "alice", "preferred_username": "alice", "groups": ["physicists", "gpu-users"]}


# ------------------------------------------------------------------ the auth model (pure)


@pytest.mark.parametrize(
    "name, groups, admin_users, admin_groups, expected",
    [
        # groups managed, no admin config: admin unchanged (None)
        ("alice", {"b", "a"}, set(), set(), {"groups": ["a", "b"], "admin": None}),
        # admin_groups decide admin both ways
        ("carol", {"admins"}, set(), {"admins"}, {"groups": ["admins"], "admin": True}),
        ("carol", {"physicists"}, set(), {"admins"}, {"groups": ["physicists"], "admin": False}),
        # admin_users win over groups
        ("root", set(), {"root"}, {"admins"}, {"groups": [], "admin": True}),
        # groups not managed: no groups key, admin unchanged
        ("alice", None, set(), set(), {"admin": None}),
    ],
)
def test_refreshed_auth_model(name, groups, admin_users, admin_groups, expected):
    state = {"access_token": "a", "refresh_token": "r", "oauth_user": {"x": 1}}
    model = refreshed_auth_model(
        name=name, state=state, groups=groups, admin_users=admin_users, admin_groups=admin_groups
    )
    assert model == {"name": name, "auth_state": state, **expected}


def configured(**kw) -> AfhubOIDCAuthenticator:
    kw.setdefault("manage_groups", True)
    kw.setdefault("username_claim", "preferred_username")  # as the hub sets it
    return AfhubOIDCAuthenticator(**kw)


@pytest.mark.parametrize(
    "config, userinfo, expected",
    [
        # allowed through a group; groups come through the login's claim function
        (
            {"allowed_groups": {"physicists"}},
            {"preferred_username": "alice", "groups": ["/physicists", "gpu-users"]},
            {"groups": ["gpu-users", "physicists"], "admin": None},
        ),
        # out of every allowed group: refused
        (
            {"allowed_groups": {"physicists"}},
            {"preferred_username": "alice", "groups": ["visitors"]},
            "not in allowed_groups or allowed_users",
        ),
        # no groups claim at all: refused the same way
        (
            {"allowed_groups": {"physicists"}},
            {"preferred_username": "alice"},
            "not in allowed_groups or allowed_users",
        ),
        # allowed_users still lets her in without the group
        (
            {"allowed_groups": {"physicists"}, "allowed_users": {"alice"}},
            {"preferred_username": "alice", "groups": []},
            {"groups": [], "admin": None},
        ),
        # an admin group both allows and makes admin; leaving it removes both
        (
            {"allowed_groups": {"physicists"}, "admin_groups": {"afhub-admins"}},
            {"preferred_username": "alice", "groups": ["afhub-admins"]},
            {"groups": ["afhub-admins"], "admin": True},
        ),
        (
            {"allowed_groups": {"physicists"}, "admin_groups": {"afhub-admins"}},
            {"preferred_username": "alice", "groups": ["physicists"]},
            {"groups": ["physicists"], "admin": False},
        ),
        (
            {"allowed_groups": {"physicists"}, "admin_groups": {"afhub-admins"}},
            {"preferred_username": "alice", "groups": []},
            "not in allowed_groups or allowed_users",
        ),
        # allow_all: anyone with a username
        ({"allow_all": True}, {"preferred_username": "alice"}, {"groups": [], "admin": None}),
        # blocked_users wins over everything
        (
            {"allow_all": True, "blocked_users": {"alice"}},
            {"preferred_username": "alice"},
            "in blocked_users",
        ),
        # the provider now names the account differently, or not at all
        ({"allow_all": True}, {"preferred_username": "alice2"}, "username 'alice2'"),
        ({"allow_all": True}, {"email": "alice@example.org"}, "did not send the"),
        # groups not managed (allow_all): no groups in the model, nothing to decide from them
        (
            {"allow_all": True, "manage_groups": False},
            {"preferred_username": "alice", "groups": ["x"]},
            {"admin": None},
        ),
    ],
)
@ASYNC
async def test_model_from_userinfo_allows_or_refuses(config, userinfo, expected):
    auth = configured(**config)
    state = {"access_token": "a", "refresh_token": "r", "oauth_user": {"old": True}}
    if isinstance(expected, str):
        with pytest.raises(NotAllowed, match=expected):
            await auth.model_from_userinfo("alice", state, userinfo)
        return
    model = await auth.model_from_userinfo("alice", state, userinfo)
    assert {k: v for k, v in model.items() if k in ("groups", "admin")} == expected
    # the full state comes back, with the userinfo replaced
    assert model["auth_state"] == {
        "access_token": "a",
        "refresh_token": "r",
        "oauth_user": userinfo,
    }


# ------------------------------------------------------------------ the hook, fake provider


class FakeProvider(web.RequestHandler):
    """``POST /token``: refresh grant (``access-N``/``refresh-N``). ``GET /userinfo``: the
    claims in ``p.claims`` for any token not in ``p.refused`` (401), or ``p.status`` /
    a hang of ``p.delay`` seconds when set."""

    def initialize(self, p):
        self.p = p

    async def post(self, what):
        form = {k: v[0] for k, v in parse_qs(self.request.body.decode()).items()}
        self.p.calls.append(("token", form.get("grant_type")))
        await asyncio.sleep(0.02)
        self.p.refreshes += 1
        n = self.p.refreshes
        self.finish(
            {
                "access_token": f"access-{n}",
                "refresh_token": f"refresh-{n}",
                "expires_in": 300,
                "token_type": "Bearer",
            }
        )

    async def get(self, what):
        token = self.request.headers.get("Authorization", "").split(" ", 1)[-1]
        self.p.calls.append(("userinfo", token))
        if self.p.delay:
            await asyncio.sleep(self.p.delay)
        if self.p.status:
            self.set_status(self.p.status)
            return self.finish({"error": "temporarily_unavailable"})
        if token in self.p.refused:
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            return self.finish("")
        self.finish(self.p.claims)


class Provider:
    def __init__(self, base):
        self.base = base
        self.calls: list = []
        self.refreshes = 0
        self.claims = dict(ALICE)
        self.refused: set[str] = set()
        self.status = 0
        self.delay = 0.0

    def count(self, kind):
        return sum(1 for c in self.calls if c[0] == kind)


@pytest.fixture
async def provider():
    p = Provider("")
    app = web.Application([(r"/(token|userinfo)", FakeProvider, {"p": p})])
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    p.base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    yield p
    server.stop()


def hub_authenticator(base, **kw):
    kw.setdefault("allowed_groups", {"physicists"})
    kw.setdefault("admin_groups", {"afhub-admins"})
    return AfhubOIDCAuthenticator(
        client_id="afhub",
        client_secret="s",
        token_url=base + "/token",
        userdata_url=base + "/userinfo",
        username_claim="preferred_username",
        enable_auth_state=True,
        manage_groups=True,
        upstream_timeout=kw.pop("upstream_timeout", 2),
        **kw,
    )


def state(*, expires_in=3600, access="a0", refreshed_at=None):
    now = time.time()
    return {
        "access_token": access,
        "refresh_token": "r0",
        "id_token": "i0",
        "token_response": {"token_type": "Bearer"},
        "expires_at": now + expires_in,
        "lifetime": 3600,
        "refreshed_at": now if refreshed_at is None else refreshed_at,
        "oauth_user": dict(ALICE),
    }


async def hook(auth, user):
    return await _refresh_ahead_of_expiry(auth, user, await user.get_auth_state())


@ASYNC
async def test_fresh_token_rereads_userinfo_and_returns_new_groups(provider):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state())
    provider.claims = {**ALICE, "groups": ["physicists"]}
    model = await hook(auth, user)
    assert model["groups"] == ["physicists"] and model["admin"] is False
    assert model["auth_state"]["oauth_user"]["groups"] == ["physicists"]
    # the full state: refresh and id token are still there, tokens untouched
    assert model["auth_state"]["refresh_token"] == "r0"
    assert model["auth_state"]["id_token"] == "i0"
    assert provider.calls == [("userinfo", "a0")]


@ASYNC
async def test_concurrent_rechecks_make_one_token_refresh_and_one_userinfo_call(provider):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state(expires_in=10))  # within the 120 s margin
    hub_calls = [hook(auth, user) for _ in range(10)]
    broker_calls = [auth.token_broker.token_for(user) for _ in range(10)]
    results = await asyncio.gather(*hub_calls, *broker_calls)
    assert provider.count("token") == 1
    models = results[:10]
    assert {m["auth_state"]["refresh_token"] for m in models} == {"refresh-1"}
    assert {m["auth_state"]["access_token"] for m in models} == {"access-1"}
    assert {t["access_token"] for t in results[10:]} == {"access-1"}
    # the hub's concurrent re-checks shared one userinfo call, with the refreshed token
    assert [c for c in provider.calls if c[0] == "userinfo"] == [("userinfo", "access-1")]
    assert len({id(m) for m in models}) == 10  # each caller gets its own model


@ASYNC
async def test_refresh_token_rotated_during_userinfo_is_kept(provider):
    """A broker refresh that finishes while userinfo is in flight must not be overwritten."""
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state(refreshed_at=0))
    provider.delay = 0.3
    refreshing = asyncio.ensure_future(_forced_after(auth, user, 0.05))
    model = await hook(auth, user)
    await refreshing
    assert provider.count("token") == 1
    assert model["auth_state"]["refresh_token"] == "refresh-1"
    assert model["auth_state"]["access_token"] == "access-1"
    assert user.state["refresh_token"] == "refresh-1"


async def _forced_after(auth, user, delay):
    await asyncio.sleep(delay)
    return await auth.token_broker.token_for(user, force=True)


@ASYNC
async def test_refused_old_token_is_refreshed_then_userinfo_retried(provider):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state(refreshed_at=0))  # not fresh: a forced refresh may run
    provider.refused = {"a0"}
    model = await hook(auth, user)
    assert model["groups"] == ["gpu-users", "physicists"]
    assert model["auth_state"]["access_token"] == "access-1"
    assert model["auth_state"]["refresh_token"] == "refresh-1"
    assert provider.calls == [
        ("userinfo", "a0"),
        ("token", "refresh_token"),
        ("userinfo", "access-1"),
    ]


@ASYNC
async def test_refused_fresh_token_requires_login(provider, caplog):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state(refreshed_at=0))
    provider.refused = {"a0", "access-1"}
    with caplog.at_level(logging.INFO):
        assert await hook(auth, user) is False
    assert provider.count("token") == 1
    assert "login_required" in user.state and user.state["refresh_token"] == "refresh-1"
    # marked: neither the hub nor the broker asks the provider again until a new login
    calls = len(provider.calls)
    assert await hook(auth, user) is False
    with pytest.raises(Exception, match="log in again"):
        await auth.token_broker.token_for(user)
    assert len(provider.calls) == calls
    assert_no_tokens(caplog.text)


@ASYNC
async def test_refused_just_refreshed_token_requires_login_without_another_refresh(provider):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state())  # refreshed_at = now: a forced refresh reuses it
    provider.refused = {"a0"}
    assert await hook(auth, user) is False
    assert provider.calls == [("userinfo", "a0")]  # no refresh, no second userinfo


@ASYNC
async def test_user_no_longer_allowed_must_log_in_again(provider, caplog):
    auth = hub_authenticator(provider.base)
    user = MemoryUser("alice", state())
    provider.claims = {**ALICE, "groups": ["visitors"]}
    with caplog.at_level(logging.INFO):
        assert await hook(auth, user) is False
    assert "no longer allowed" in user.state["login_required"]
    assert "alice must log in again: not in allowed_groups" in caplog.text
    assert await hook(auth, user) is False
    assert provider.count("userinfo") == 1


@pytest.mark.parametrize("failure", ["503", "hang", "refused connection"])
@ASYNC
async def test_provider_down_keeps_session_and_groups_with_one_log_line(provider, caplog, failure):
    auth = hub_authenticator(provider.base, upstream_timeout=0.3)
    if failure == "503":
        provider.status = 503
    elif failure == "hang":
        provider.delay = 1.0
    else:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            auth.userdata_url = f"http://127.0.0.1:{s.getsockname()[1]}/userinfo"
    user = MemoryUser("alice", state())
    before = json.dumps(user.state)
    with caplog.at_level(logging.DEBUG):
        assert await hook(auth, user) is True
    assert json.dumps(user.state) == before and user.saves == 0
    lines = [
        r.getMessage()
        for r in caplog.records
        if "userinfo" in r.getMessage() and r.name != "tornado.access"  # the fake's own log
    ]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Groups of alice not re-checked, login and groups kept: userinfo")
    assert_no_tokens(caplog.text)


def assert_no_tokens(text: str) -> None:
    for token in ("a0", "r0", "i0", "access-1", "refresh-1"):
        assert f" {token}" not in text and f"={token}" not in text and f"'{token}'" not in text


# ------------------------------------------------------------------ a real facility

REFRESH_AGE = 2


@pytest.fixture(scope="module")
def fac(start_facility):
    values = copy.deepcopy(example_values("local"))
    values["auth"]["refresh_age"] = REFRESH_AGE
    values["auth"]["upstream_timeout"] = 2
    values["culling"] = {"enabled": False}
    facility = start_facility(values, name="groups-refresh")
    yield facility
    facility.stop()


def set_idp_groups(fac, username, groups):
    claims = {
        "preferred_username": username,
        "name": username,
        "email": f"{username}@example.org",
        "groups": groups,
    }
    r = requests.put(fac.idp_url.rstrip("/") + f"/users/{username}", json=claims, timeout=10)
    assert r.status_code == 204, r.text


def hub_groups(fac, username) -> list[str]:
    return sorted(fac.admin_api("GET", f"users/{username}").json()["groups"])


@pytest.mark.integration
def test_groups_follow_the_provider_without_login(fac):
    set_idp_groups(fac, "alice", ["physicists", "gpu-users"])
    alice = fac.login("alice")
    assert hub_groups(fac, "alice") == ["gpu-users", "physicists"]

    # the provider is down: her session and groups are kept
    idp = psutil.Process(fac.idp_pid())
    idp.send_signal(signal.SIGSTOP)
    try:
        time.sleep(REFRESH_AGE + 0.5)
        r = alice.api("GET", "user", timeout=30)
        assert r.status_code == 200, r.text
        assert sorted(r.json()["groups"]) == ["gpu-users", "physicists"]
    finally:
        idp.send_signal(signal.SIGCONT)
    assert fac.log_text().count("Groups of alice not re-checked, login and groups kept") == 1

    # gpu-users removed at the provider: gone from the hub after her next request
    set_idp_groups(fac, "alice", ["physicists"])

    def groups_now():
        r = alice.api("GET", "user")
        assert r.status_code == 200, r.text
        return "gpu-users" not in r.json()["groups"]

    wait_for(groups_now, REFRESH_AGE + 8, what="alice's hub groups without gpu-users")
    assert hub_groups(fac, "alice") == ["physicists"]
    r = alice.spawn({"profile": "gpu"})
    assert r.status_code == 400, r.text
    assert alice.server_model() is None  # nothing started

    # physicists removed too: no longer allowed, so her cookie no longer works
    set_idp_groups(fac, "alice", [])
    time.sleep(REFRESH_AGE + 0.5)
    r = alice.api("GET", "user", allow_redirects=False)
    assert r.status_code == 403 or "/hub/login" in r.headers.get("Location", ""), (
        r.status_code,
        r.text[:300],
    )
    r = alice.get("hub/home", allow_redirects=False)
    assert r.status_code in (302, 303) and "login" in r.headers["Location"]
    assert "alice must log in again: not in allowed_groups" in fac.log_text()
    # and the login refuses her
    again = fac.login("alice", expect_ok=False)
    assert again.last_response.status_code == 403
