"""Outbound HTTP to the identity provider: one call, :func:`provider_call`, and its uses.

:func:`provider_call` logs ``label, status, method, url`` with the query stripped; bodies and
headers, which is where tokens live, are never logged. Its uses: :func:`post_form` (token
endpoint: refresh, exchange), :func:`get_userinfo`, :func:`post_revocation`. Errors are the
:mod:`.tokens` classes; nothing here holds state.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from .tokens import (
    LoginRequired,
    ProviderUnavailable,
    TokenError,
    TokenRejected,
    classify_failure,
    strip_query,
)

log = logging.getLogger("afhub.tokens")


async def provider_call(
    http_client,
    url: str,
    *,
    method: str = "POST",
    params: dict | None = None,
    headers: dict,
    timeout: float,
    label: str,
    validate_cert: bool = True,
    log_failures: bool = True,
):
    """The one HTTP call to the provider: the response on 2xx, else raise :class:`TokenError`.

    Failures are logged (unless ``log_failures`` is false, for callers that log one line of
    their own) as ``label, status, method, url`` with the query stripped; bodies and headers are
    never logged, which is where tokens live. ``params`` is sent as a form body (POST).
    """
    from tornado.httpclient import HTTPClientError, HTTPRequest

    req = HTTPRequest(
        url,
        method=method,
        headers=headers,
        body=urlencode(params or {}) if method == "POST" else None,
        connect_timeout=timeout,
        request_timeout=timeout,
        validate_cert=validate_cert,
    )
    shown = strip_query(url)

    def failed(err: TokenError, code="") -> TokenError:
        if log_failures:
            log.warning("%s failed: %s %s %s: %s", label, code, method, shown, err.reason)
        return err

    try:
        resp = await http_client.fetch(req, raise_error=False)
    except HTTPClientError as e:  # timeouts (599) are raised even with raise_error=False
        raise failed(ProviderUnavailable(f"{label}: {e}"[:200]), e.code) from None
    except Exception as e:  # connection refused, DNS, TLS...
        err = ProviderUnavailable(f"{label}: {type(e).__name__}: {e}"[:200])
        raise failed(err, type(e).__name__) from None
    if resp.code == 599:
        raise failed(ProviderUnavailable(f"{label}: {resp.error or 'no response'}"[:200]), 599)
    if resp.code >= 300 or resp.code < 200:
        raise failed(classify_failure(resp.code, resp.body, label=label), resp.code)
    return resp


def _json_object(body: bytes, label: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        raise ProviderUnavailable(f"{label}: response is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"{label}: response is not a JSON object")
    return data


async def post_form(
    http_client,
    url: str,
    params: dict,
    *,
    headers: dict,
    timeout: float,
    label: str,
    validate_cert: bool = True,
) -> dict:
    """POST a form to a token endpoint; the parsed JSON on 2xx, else raise :class:`TokenError`."""
    resp = await provider_call(
        http_client,
        url,
        params=params,
        headers=headers,
        timeout=timeout,
        label=label,
        validate_cert=validate_cert,
    )
    data = _json_object(resp.body, label)
    if "access_token" not in data:
        raise ProviderUnavailable(f"{label}: response has no access_token")
    return data


async def get_userinfo(
    http_client,
    url: str,
    *,
    headers: dict,
    timeout: float,
    validate_cert: bool = True,
) -> dict:
    """GET the OIDC userinfo with the access token in ``headers`` (or ``url``'s query).

    401/403 (RFC 6750 ``invalid_token``, ``insufficient_scope``) raise :class:`TokenRejected`;
    anything else that is not a JSON object raises :class:`ProviderUnavailable`. Nothing is
    logged here: the caller logs one line per outcome.
    """
    label = "userinfo"
    try:
        resp = await provider_call(
            http_client,
            url,
            method="GET",
            headers=headers,
            timeout=timeout,
            label=label,
            validate_cert=validate_cert,
            log_failures=False,
        )
    except TokenError as e:
        if e.code in (401, 403):
            err = TokenRejected(f"{label}: HTTP {e.code} (access token refused)")
            err.code = e.code
            raise err from None
        if isinstance(e, LoginRequired):  # a 400 is not a refused token: report, keep session
            err = ProviderUnavailable(str(e))
            err.code = e.code
            raise err from None
        raise
    return _json_object(resp.body, label)


async def post_revocation(http_client, url, params, *, headers, timeout, validate_cert=True):
    """RFC 7009 revocation request; 200 is success (the body is empty by the RFC). The caller
    logs a failure (one line naming the user), so :func:`provider_call` does not."""
    resp = await provider_call(
        http_client,
        url,
        params=params,
        headers=headers,
        timeout=timeout,
        label="revocation",
        validate_cert=validate_cert,
        log_failures=False,
    )
    if resp.code != 200:
        raise classify_failure(resp.code, resp.body, label="revocation")
