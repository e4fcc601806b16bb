"""RFC 8693 token exchange and RFC 7009 revocation by the broker.

The demo provider (oidc-provider-mock) offers neither, so this test fakes one boundary: a
minimal token endpoint (a real HTTP server on loopback, below) that implements the refresh
grant, the token-exchange grant and revocation, and records what it was sent. Everything on
the broker's side is real: the authenticator, its HTTP client, the broker's merging and the
persisted auth_state (a small in-memory user object standing in for JupyterHub's ``User``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import pytest
from afhub.authenticator.oidc import AfhubOIDCAuthenticator
from afhub.authenticator.tokens import ExchangeFailed, LoginRequired
from auth_helpers import MemoryUser
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

# the fake endpoint (an async fixture) and the tests must share one event loop
pytestmark = pytest.mark.asyncio(loop_scope="session")


class FakeTokenEndpoint(web.RequestHandler):
    """Refresh grant, token exchange (audience ``good`` only) and revocation."""

    def initialize(self, calls):
        self.calls = calls

    async def post(self, what):
        form = {k: v[0] for k, v in parse_qs(self.request.body.decode()).items()}
        self.calls.append((what, form))
        await asyncio.sleep(0.02)
        if what == "revoke":
            return self.finish("")
        grant = form.get("grant_type")
        if grant == "refresh_token":
            n = sum(1 for w, f in self.calls if f.get("grant_type") == "refresh_token")
            return self.finish(
                {
                    "access_token": f"access-{n}",
                    "refresh_token": f"refresh-{n}",
                    "expires_in": 300,
                    "token_type": "Bearer",
                }
            )
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            if form.get("audience") != "good":
                self.set_status(400)
                return self.finish({"error": "invalid_target"})
            return self.finish(
                {
                    "access_token": "exchanged-" + form["subject_token"],
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 120,
                    "scope": form.get("scope"),
                }
            )
        self.set_status(400)
        self.finish({"error": "unsupported_grant_type"})


@pytest.fixture
async def idp():
    calls: list = []
    app = web.Application([(r"/(token|revoke)", FakeTokenEndpoint, {"calls": calls})])
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", calls
    server.stop()


def authenticator(base, **kw):
    return AfhubOIDCAuthenticator(
        client_id="afhub",
        client_secret="s",
        token_url=base + "/token",
        enable_auth_state=True,
        **kw,
    )


def expired_state():
    return {
        "access_token": "a0",
        "refresh_token": "r0",
        "id_token": "i0",
        "expires_at": 1,
        "lifetime": 300,
    }


async def test_exchange_for_audience_after_one_merged_refresh(idp):
    base, calls = idp
    auth = authenticator(
        base, token_exchange=True, token_audience="good", token_scope="storage.read:/"
    )
    user = MemoryUser("alice", expired_state())
    answers = await asyncio.gather(*(auth.token_broker.token_for(user) for _ in range(20)))
    grants = [f["grant_type"] for _, f in calls]
    assert grants == ["refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"]
    exchange = calls[1][1]
    assert exchange["subject_token"] == "access-1" and exchange["audience"] == "good"
    assert exchange["scope"] == "storage.read:/"
    assert {a["access_token"] for a in answers} == {"exchanged-access-1"}
    assert answers[0]["audience"] == "good" and answers[0]["expires_in"] > 100
    assert user.state["refresh_token"] == "refresh-1"  # rotated refresh token persisted
    # a second call reuses the exchanged token while it is fresh
    await auth.token_broker.token_for(user)
    assert len(calls) == 2


async def test_exchange_refused_is_reported_not_login(idp):
    base, calls = idp
    auth = authenticator(base, token_exchange=True, token_audience="other")
    user = MemoryUser("bob", expired_state())
    with pytest.raises(ExchangeFailed, match="invalid_target"):
        await auth.token_broker.token_for(user)
    assert user.state["refresh_token"] == "refresh-1"  # the refresh itself worked


async def test_logout_revokes_both_tokens_and_clears_state(idp):
    base, calls = idp
    auth = authenticator(base, revocation_url=base + "/revoke")
    user = MemoryUser("carol", {**expired_state(), "expires_at": 4e9})
    await auth.token_broker.revoke(user)
    assert [(w, f["token_type_hint"], f["token"]) for w, f in calls] == [
        ("revoke", "refresh_token", "r0"),
        ("revoke", "access_token", "a0"),
    ]
    assert user.state is None
    with pytest.raises(LoginRequired):
        await auth.token_broker.token_for(user)


async def test_delivery_decrypts_auth_state_once_per_change(idp):
    """The broker's hot path: auth_state is decrypted again only when its stored form changes
    (refresh, login, logout), and the cached view never holds the refresh or id token."""
    import time

    base, calls = idp
    auth = authenticator(base)
    fresh = dict(expired_state(), expires_at=time.time() + 3600, lifetime=3600)
    user = MemoryUser("carol", fresh)
    reads = 0
    original = user.get_auth_state

    async def counting_get_auth_state():
        nonlocal reads
        reads += 1
        return await original()

    user.get_auth_state = counting_get_auth_state
    for _ in range(5):
        assert (await auth.token_broker.token_for(user))["access_token"] == "a0"
    assert reads == 1 and calls == []
    (_blob, view) = auth.token_broker._states["carol"]
    assert "refresh_token" not in view and "id_token" not in view
    await user.save_auth_state(dict(fresh, access_token="a1"))  # e.g. a new login
    assert (await auth.token_broker.token_for(user))["access_token"] == "a1"
    assert reads == 2
    await user.save_auth_state(None)  # logout clears it
    with pytest.raises(LoginRequired):
        await auth.token_broker.token_for(user)
