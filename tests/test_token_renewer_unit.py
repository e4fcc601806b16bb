"""What a server's token status says when the broker gives no token (``server_ext/token_renewer.py``
``broker_failure``): the sidebar shows it as the reason the token is stale."""

from __future__ import annotations

import pytest
from afhub.server_ext.token_renewer import broker_failure


@pytest.mark.parametrize(
    "code, body, state, error",
    [
        (401, {"reason": "login_required", "message": "refresh refused, log in again"},
         "login_required", "refresh refused, log in again"),
        (401, {}, "login_required", "login required"),
        (503, {"reason": "unavailable", "message": "token refresh: HTTP 599: Timeout"},
         "refresh_failing", "identity provider unavailable: token refresh: HTTP 599: Timeout"),
        (502, {"reason": "exchange_failed", "message": "token exchange: invalid_target"},
         "refresh_failing", "broker: token exchange: invalid_target"),
        (500, {}, "refresh_failing", "broker: HTTP 500"),
        (503, {"reason": "unavailable", "message": "x" * 400}, "refresh_failing", None),
    ],
)  # fmt: skip
def test_broker_failure(code, body, state, error):
    got_state, got_error = broker_failure(code, body)
    assert got_state == state
    if error is not None:
        assert got_error == error
    assert len(got_error) <= 300
