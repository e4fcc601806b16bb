"""The authenticator's own steps: groups from a configurable claim, expiry recorded at login,
and the refresh hook's decisions before any provider is contacted."""

from __future__ import annotations

import time

import pytest
from afhub.authenticator.oidc import AfhubOIDCAuthenticator, _refresh_ahead_of_expiry


@pytest.mark.parametrize(
    "claim, userinfo, groups",
    [
        ("groups", {"groups": ["cms", "/atlas/af"]}, ["cms", "atlas/af"]),  # leading / stripped
        ("wlcg.groups", {"wlcg.groups": ["/cms"]}, ["cms"]),  # literal dotted claim first
        ("realm_access.roles", {"realm_access": {"roles": ["physicists"]}}, ["physicists"]),
        ("isMemberOf", {"isMemberOf": "CO:members"}, ["CO:members"]),  # a single string
        ("groups", {}, []),
    ],
)
def test_groups_from_claim(claim, userinfo, groups):
    auth = AfhubOIDCAuthenticator(groups_claim=claim, manage_groups=True)
    assert auth.auth_state_groups_key({"oauth_user": userinfo}) == groups


def test_auth_state_records_expiry():
    auth = AfhubOIDCAuthenticator()
    before = time.time()
    state = auth.build_auth_state_dict(
        {"access_token": "a", "refresh_token": "r", "expires_in": 600, "token_type": "Bearer"}, {}
    )
    assert before + 600 <= state["expires_at"] <= time.time() + 600
    assert state["lifetime"] == 600 and state["refresh_token"] == "r"


class User:
    name = "alice"


@pytest.mark.parametrize(
    "state, expected",
    [
        (None, None),  # no auth_state: oauthenticator asks for a login
        ({"access_token": "a", "login_required": "revoked"}, False),
        ({"access_token": "a", "expires_at": time.time() + 3600, "lifetime": 3600}, True),
    ],
)
async def test_refresh_hook_without_provider(state, expected):
    auth = AfhubOIDCAuthenticator(token_refresh_margin=120)
    assert await _refresh_ahead_of_expiry(auth, User(), state) is expected


def test_broker_route_is_registered():
    routes = dict(AfhubOIDCAuthenticator().get_handlers(None))
    assert r"/api/afhub/users/([^/]+)/token" in routes
    assert routes["/logout"].__name__ == "AfhubLogoutHandler"
