"""Token handoff, pure parts: expiry and merging rules, the delivered model, error
classification, the values section, paths, schedules, the atomic file write, and merging of
concurrent refreshes (real asyncio, no fakes)."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from afhub.authenticator import auth_section, tokens
from afhub.authenticator.singleflight import SingleFlight
from afhub.hub_config import apply
from afhub.hub_config.values import Problem
from afhub.server_ext import token as srv


@pytest.mark.parametrize(
    "state, now, margin, expected",
    [
        ({"expires_at": 1000, "lifetime": 3600}, 800, 120, False),
        ({"expires_at": 1000, "lifetime": 3600}, 880, 120, True),  # inside the margin
        ({"expires_at": 1000, "lifetime": 9}, 996, 120, False),  # short lifetime: margin 3
        ({"expires_at": 1000, "lifetime": 9}, 997, 120, True),
        ({"expires_at": 1000}, 1001, 0, True),  # expired
        ({}, 0, 120, True),  # unknown expiry
    ],
)
def test_needs_refresh(state, now, margin, expected):
    assert tokens.needs_refresh(state, now=now, margin=margin) is expected


STATE = {
    "access_token": "old-access",
    "refresh_token": "old-refresh",
    "id_token": "old-id",
    "scope": ["openid"],
    "oauth_user": {"sub": "alice"},
    "login_required": "stale",
}


@pytest.mark.parametrize(
    "response, refresh, id_token",
    [
        ({"access_token": "new", "expires_in": 60}, "old-refresh", "old-id"),  # kept
        (
            {"access_token": "new", "expires_in": 60, "refresh_token": "rot"},
            "rot",
            "old-id",
        ),  # rotated
        ({"access_token": "new", "expires_in": 60, "id_token": "nid"}, "old-refresh", "nid"),
    ],
)
def test_merge_refreshed_state(response, refresh, id_token):
    merged = tokens.merge_refreshed_state(STATE, response, now=100)
    assert merged["access_token"] == "new"
    assert merged["refresh_token"] == refresh
    assert merged["id_token"] == id_token
    assert (
        merged["expires_at"] == 160 and merged["lifetime"] == 60 and merged["refreshed_at"] == 100
    )
    assert merged["token_response"]["refresh_token"] == refresh
    assert merged["oauth_user"] == {"sub": "alice"}
    assert "login_required" not in merged


def test_delivered_token_carries_no_refresh_or_id_token():
    model = tokens.delivered_token(access_token="at", expires_at=160, now=100, lifetime=60)
    assert model == {
        "access_token": "at",
        "token_type": "Bearer",
        "expires_at": 160,
        "expires_in": 60.0,
        "lifetime": 60,
        "audience": None,
        "scope": None,
        "refresh_error": None,
    }


@pytest.mark.parametrize(
    "code, body, kind, text",
    [
        (
            400,
            b'{"error": "invalid_grant", "error_description": "revoked"}',
            tokens.LoginRequired,
            "refresh: HTTP 400 invalid_grant (revoked)",
        ),
        (
            401,
            b'{"error": "invalid_client"}',
            tokens.LoginRequired,
            "refresh: HTTP 401 invalid_client",
        ),
        (
            400,
            b'{"error": "invalid_request"}',
            tokens.ProviderUnavailable,
            "refresh: HTTP 400 invalid_request",
        ),
        (503, b"<html>down</html>", tokens.ProviderUnavailable, "refresh: HTTP 503"),
        (500, None, tokens.ProviderUnavailable, "refresh: HTTP 500"),
    ],
)
def test_classify_failure(code, body, kind, text):
    err = tokens.classify_failure(code, body, label="refresh")
    assert type(err) is kind and str(err) == text


def test_exchange_params_rfc8693():
    assert tokens.exchange_params(
        "subj", audience="https://wlcg.cern.ch/jwt/v1/any", scope="storage.read:/"
    ) == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "subj",
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "audience": "https://wlcg.cern.ch/jwt/v1/any",
        "scope": "storage.read:/",
    }


async def test_single_flight_merges_concurrent_calls_and_shares_failures():
    flight = SingleFlight()
    calls = 0

    async def work():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    results = await asyncio.gather(*(flight.run("alice", work) for _ in range(50)))
    assert results == [1] * 50 and calls == 1
    assert await flight.run("alice", work) == 2  # a later call runs again
    assert not flight.pending("alice")

    async def fail():
        await asyncio.sleep(0.01)
        raise tokens.ProviderUnavailable("down")

    outcomes = await asyncio.gather(
        *(flight.run("bob", fail) for _ in range(5)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [tokens.ProviderUnavailable] * 5


# ------------------------------------------------------------------ values section

BASE = {"auth": {"provider": "dev"}, "backend": {"type": "local"}}


def _plan(values):
    return apply.build(values, data_dir="/tmp/afhub-test-plan")


def test_tokens_build_defaults():
    plan = _plan(BASE)
    assert plan.get("JupyterHub", "custom_scopes") == {
        "custom:afhub-token": {"description": tokens.TOKEN_SCOPE_DESCRIPTION}
    }
    assert plan.get("Spawner", "server_token_scopes") == [
        "users:activity!user",
        "access:servers!server",
        "custom:afhub-token!user",
    ]
    user_role = [r for r in plan.get("JupyterHub", "load_roles") if r["name"] == "user"]
    assert user_role[0]["scopes"] == ["self", "custom:afhub-token!user"]
    env = plan.get("Spawner", "environment")
    assert env["BEARER_TOKEN_FILE"] == "$XDG_RUNTIME_DIR/bt_u$UID"
    assert env["AFHUB_TOKEN_REFRESH_MARGIN"] == "120"
    assert "BEARER_TOKEN" not in env
    assert plan.get("AfhubOIDCAuthenticator", "token_refresh_margin") == 120.0


def test_tokens_build_exchange_and_disabled():
    plan = _plan(
        {
            **BASE,
            "auth": {"provider": "dev", "upstream_timeout": 3},
            "tokens": {
                "exchange": True,
                "audience": "aud",
                "scope": "storage.read:/",
                "file": "/run/user/$UID/bt_u$UID",
                "refresh_margin": 60,
            },
        }
    )
    A = "AfhubOIDCAuthenticator"
    assert (
        plan.get(A, "token_exchange"),
        plan.get(A, "token_audience"),
        plan.get(A, "token_scope"),
    ) == (True, "aud", "storage.read:/")
    assert plan.get(A, "upstream_timeout") == 3.0
    assert plan.get("Spawner", "environment")["BEARER_TOKEN_FILE"] == "/run/user/$UID/bt_u$UID"
    off = _plan({**BASE, "tokens": {"enabled": False}})
    assert off.get("JupyterHub", "custom_scopes") is None
    assert "BEARER_TOKEN_FILE" not in (off.get("Spawner", "environment") or {})


@pytest.mark.parametrize(
    "tokens, problems",
    [
        (
            {"exchange": True},
            [Problem("tokens.exchange", "needs tokens.audience or tokens.scope to exchange for")],
        ),
        (
            {"exchange_url": "https://idp/x"},
            [Problem("tokens.exchange_url", "only used when tokens.exchange is true")],
        ),
        (
            {"file": "tokens/bt"},
            [
                Problem(
                    "tokens.file",
                    "must be an absolute path (or start with ~ or $VAR), got 'tokens/bt'",
                )
            ],
        ),
        ({"file": "~/.tokens/bt_u$UID", "exchange": True, "audience": "a"}, []),
        (
            {"file": "/run/bt_u{uid}"},
            [
                Problem(
                    "tokens.file",
                    "write $UID for the user id, not braces (KubeSpawner expands {...}), "
                    "got '/run/bt_u{uid}'",
                )
            ],
        ),
    ],
)
def test_tokens_check(tokens, problems):
    assert auth_section.check({**BASE, "tokens": tokens}) == problems


# ------------------------------------------------------------------ server side


@pytest.mark.parametrize(
    "template, environ, expected",
    [
        (
            "$XDG_RUNTIME_DIR/bt_u$UID",
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            "/run/user/1000/bt_u1000",
        ),
        ("$XDG_RUNTIME_DIR/bt_u$UID", {}, "/home/a/.afhub/tokens/bt_u1000"),  # fallback
        ("", {}, "/home/a/.afhub/tokens/bt_u1000"),
        ("~/tok/bt", {}, "/home/a/tok/bt"),
        ("${SCRATCH}/$UID/bt", {"SCRATCH": "/scratch/a"}, "/scratch/a/1000/bt"),
    ],
)
def test_resolve_token_path(template, environ, expected):
    assert srv.resolve_token_path(template, uid=1000, home="/home/a", environ=environ) == expected


@pytest.mark.parametrize(
    "template, message",
    [
        ("$SCRATCH/$UID/bt", "$SCRATCH is not set"),
        ("tokens/$UID/bt", "not an absolute path"),
        ("/tmp/bt_u$UID", "must be a per-user location"),
        ("$SCRATCH/$UID/x", "$SCRATCH is not set"),
        ("/scratch/$UID/../../etc/bt", "'..'"),
    ],
)
def test_resolve_token_path_errors(template, message):
    with pytest.raises(srv.TokenPathError, match=message.replace("$", r"\$")):
        srv.resolve_token_path(template, uid=1, home="/h", environ={})


@pytest.mark.parametrize(
    "expires_in, lifetime, margin, expected",
    [(3600, 3600, 120, 3480.5), (8, 8, 3, 8 - 8 / 3 + 0.5), (0.2, 8, 3, 1.0)],
)
def test_renew_delay(expires_in, lifetime, margin, expected):
    assert srv.renew_delay(
        expires_in=expires_in, lifetime=lifetime, margin=margin
    ) == pytest.approx(expected)


@pytest.mark.parametrize(
    "failures, lifetime, expected",
    [(1, 3600, 1), (3, 3600, 4), (10, 3600, 60), (10, 8, 2), (10, None, 60)],
)
def test_retry_delay(failures, lifetime, expected):
    assert srv.retry_delay(failures, lifetime=lifetime) == expected


def test_status_model_has_no_token():
    st = srv.TokenStatus(
        path="/p", state="refresh_failing", expires_at=110, last_error="token refresh: HTTP 599"
    )
    model = st.model(now=100)
    assert model["valid"] is True and model["expires_in"] == 10
    assert model["message"] == "refresh is failing; the last token is kept while it is valid"
    assert not any("token" == k or k.endswith("_token") for k in model)


def test_write_token_file_is_atomic_and_private(tmp_path):
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)  # ours and not writable by others: used as it is, never chmod-ed
    path = directory / "bt_u1"
    srv.write_token_file(str(path), "first")
    inode = path.stat().st_ino
    srv.write_token_file(str(path), "second\n")
    assert path.read_text() == "second\n"
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert sorted(p.name for p in directory.iterdir()) == ["bt_u1"]
