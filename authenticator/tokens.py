"""Pure token logic: no I/O, no JupyterHub, no clock of its own (``now`` is passed in).

What lives here: the errors a delivery can end in (each carrying the broker's HTTP answer),
expiry and renewal rules on token responses and auth_state, merging a refresh response into
auth_state, the delivered model, RFC 8693 exchange parameters and the classification of a
provider's error answer. What must not: HTTP calls (``provider.py``), per-hub state
(``broker.py``), handlers (``handlers.py``).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from afhub.server_ext.contract import TOKEN_SCOPE, effective_margin

__all__ = ["TOKEN_SCOPE", "effective_margin"]  # the contract's, used here and re-exported

TOKEN_SCOPE_DESCRIPTION = "Fetch the owner's data-access token from the afhub token broker."
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEFAULT_LIFETIME = 300  # seconds assumed when a provider sends no ``expires_in``
LOGIN_REQUIRED_ERRORS = {"invalid_grant", "invalid_token", "unauthorized_client", "invalid_client"}


class TokenError(Exception):
    """A token that cannot be delivered; ``status`` is the broker's HTTP answer."""

    status = 503
    reason = "unavailable"
    code = 0  # HTTP status of the provider's answer, when there was one


class LoginRequired(TokenError):
    """No usable refresh token (logged out, revoked, never had one): the user must log in."""

    status = 401
    reason = "login_required"


class ProviderUnavailable(TokenError):
    """The provider could not be reached or answered with a server error."""

    status = 503
    reason = "unavailable"


class ExchangeFailed(TokenError):
    """The provider refused the RFC 8693 exchange for the configured audience/scope."""

    status = 502
    reason = "exchange_failed"


class TokenRejected(LoginRequired):
    """The provider's userinfo endpoint refused the access token (HTTP 401/403)."""


def expiry_from_response(token_info: dict, *, now: float) -> tuple[float, int]:
    """``(expires_at, lifetime)`` of a token response; ``DEFAULT_LIFETIME`` if it gives none."""
    try:
        lifetime = int(token_info.get("expires_in"))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    return now + lifetime, lifetime


def needs_refresh(state: dict, *, now: float, margin: float) -> bool:
    """True when the access token in ``state`` expires within the (effective) margin."""
    expires_at = state.get("expires_at")
    if not expires_at:
        return True
    return now >= expires_at - effective_margin(margin, state.get("lifetime"))


def merge_refreshed_state(state: dict, token_info: dict, *, now: float) -> dict:
    """The auth_state after a refresh response: new access token and expiry; a rotated refresh
    token replaces the old one, a response without one keeps it; the id token likewise."""
    expires_at, lifetime = expiry_from_response(token_info, now=now)
    merged = dict(state)
    merged["access_token"] = token_info["access_token"]
    merged["refresh_token"] = token_info.get("refresh_token") or state.get("refresh_token")
    merged["id_token"] = token_info.get("id_token") or state.get("id_token")
    if token_info.get("scope"):
        scope = token_info["scope"]
        merged["scope"] = scope.split(" ") if isinstance(scope, str) else list(scope)
    merged["token_response"] = {
        **token_info,
        "refresh_token": merged["refresh_token"],
        "token_type": token_info.get("token_type", "Bearer"),
    }
    merged["expires_at"] = expires_at
    merged["lifetime"] = lifetime
    merged["refreshed_at"] = now
    merged.pop("login_required", None)
    return merged


def delivered_token(
    *,
    access_token: str,
    expires_at: float,
    now: float,
    lifetime: int | None = None,
    token_type: str = "Bearer",
    audience: str | None = None,
    scope: str | None = None,
    refresh_error: str | None = None,
) -> dict:
    """The broker's answer: the one data-access token and facts about it, nothing else."""
    return {
        "access_token": access_token,
        "token_type": token_type,
        "expires_at": expires_at,
        "expires_in": round(max(0.0, expires_at - now), 3),
        "lifetime": lifetime,
        "audience": audience,
        "scope": scope,
        "refresh_error": refresh_error,
    }


def user_scope(scope: str | None, username: str) -> str | None:
    """A configured scope string for one user: ``{username}`` replaced (``data.scopes``)."""
    return scope.replace("{username}", username) if scope else scope


def exchange_params(subject_token: str, *, audience: str | None, scope: str | None) -> dict:
    """RFC 8693 section 2.1 request parameters for an access token for ``audience``/``scope``."""
    params = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }
    if audience:
        params["audience"] = audience
    if scope:
        params["scope"] = scope
    return params


def classify_failure(code: int, body: bytes | None, *, label: str) -> TokenError:
    """Turn a failed token-endpoint answer into LoginRequired (grant refused) or
    ProviderUnavailable (anything else). The message names the OAuth error, never a token."""
    error = description = ""
    if body:
        try:
            data = json.loads(body)
            error = str(data.get("error", ""))[:60]
            description = str(data.get("error_description", ""))[:160]
        except (ValueError, AttributeError):
            pass
    detail = f"{label}: HTTP {code}" + (f" {error}" if error else "")
    if description:
        detail += f" ({description})"
    if code in (400, 401) and (error in LOGIN_REQUIRED_ERRORS or not error):
        err: TokenError = LoginRequired(detail)
    else:
        err = ProviderUnavailable(detail)
    err.code = code
    return err


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
