"""The sidebar's "test access" of a storage endpoint, pure: what to open and what the answer means.

The handler (``data_handlers.py``) opens a small file at an endpoint with the server's current
token in a fresh process (:data:`PROBE`, so the login uses the token now in the file) and
hands the outcome to :func:`diagnose`, which names the reason in the sidebar's terms:

==================  ==========================================================================
reason              when
==================  ==========================================================================
``ok``              the file opened and its first bytes were read
``no_token``        the login failed and this server has no token file
``expired``         the token in the file has expired (login refused, or opens refused once
                    the storage's authorization cache let go of it)
``wrong_audience``  the storage refused the open and the token's ``aud`` is not the audience
                    the facility's storage accepts (``AFHUB_DATA_AUDIENCE``)
``not_in_scope``    refused, and no ``storage.read`` scope of the token covers the path
``denied``          refused for another reason (the storage's own rules)
``not_found``       no such file
``tls``             the TLS handshake failed (CA trust: ``X509_CERT_FILE``/``_DIR``)
``server_down``     nothing answers at the endpoint (refused, unreachable or no answer in time)
``error``           anything else; ``server_message`` says what the client reported
==================  ==========================================================================

Only claims the sidebar may show (``exp``, ``aud``, ``scope``) are read from the token, without
verifying it (the storage does that); nothing here returns, logs or stores the token.
"""

from __future__ import annotations

import base64
import json
import re

# the file "test access" opens when the request names none: the sample the sample notebook
# reads, under ``data.sample_path``
DEFAULT_TEST_FILE = "uproot-HZZ.root"
READ_BYTES = 1024
_PATH = re.compile(r"^/[^\s?#&\x00-\x1f]{0,1023}$")

# run as ``python -c PROBE URL``: one JSON line, the XRootD client's status (never the token)
PROBE = r"""
import json, sys
try:
    from XRootD import client
    from XRootD.client.flags import OpenFlags
except ImportError as e:
    print(json.dumps({"ok": False, "client": False, "message": str(e)}))
    raise SystemExit(0)
f = client.File()
st, _ = f.open(sys.argv[1], OpenFlags.READ, timeout=int(sys.argv[3]))
out = {"ok": st.ok, "errno": st.errno, "code": st.code, "message": st.message.strip()}
if st.ok:
    st, data = f.read(0, int(sys.argv[2]), timeout=int(sys.argv[3]))
    out.update(ok=st.ok, bytes=len(data or b""), message=st.message.strip())
    f.close()
print(json.dumps(out))
"""
# the XRootD client's settings for the probe: give up on a dead endpoint in seconds, not minutes
PROBE_ENVIRONMENT = {
    "XRD_CONNECTIONRETRY": "1",
    "XRD_CONNECTIONWINDOW": "5",
    "XRD_REQUESTTIMEOUT": "10",
    "XRD_STREAMTIMEOUT": "10",
}
PROBE_TIMEOUT = 25  # s for the whole probe process

_DOWN = (
    "connection refused",
    "socket error",
    "unable to connect",
    "no route to host",
    "invalid address",
    "connection timed out",
    "operation expired",
    "socket timeout",
    "stream connect",
)
_TLS = ("tls", "certificate", "ssl")
_AUTH_FAILED = ("auth failed", "no protocols left", "authentication failed")


def test_path_problem(path: object) -> str | None:
    """Why ``path`` cannot be tested (None: it can): an absolute namespace path, no query."""
    if not isinstance(path, str) or not _PATH.match(path) or "/../" in path + "/":
        return "path must be an absolute storage path such as /public/samples/file.root"
    return None


def default_test_path(samples: str | None) -> str | None:
    if not samples:
        return None
    return samples.rstrip("/") + "/" + DEFAULT_TEST_FILE


def token_claims(token: str | None) -> dict | None:
    """``exp``, ``aud`` and ``scope`` of a JWT (unverified), or None when it is not one."""
    if not token:
        return None
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(body, dict):
        return None
    return {k: body.get(k) for k in ("exp", "aud", "scope")}


def audiences(aud) -> list[str]:
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def read_scope_covers(scope: object, path: str) -> bool:
    """Whether a ``storage.read:`` (or ``storage.modify:``) scope of ``scope`` covers ``path``."""
    if not isinstance(scope, str):
        return False
    for item in scope.split():
        kind, _, base = item.partition(":")
        if kind not in ("storage.read", "storage.modify") or not base.startswith("/"):
            continue
        base = base.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return True
    return False


def diagnose(
    probe: dict | None,
    *,
    claims: dict | None,
    has_token: bool,
    audience: str | None,
    path: str,
    now: float,
) -> tuple[str, str]:
    """``(reason, message)`` for a probe's outcome (None: it gave no answer in time)."""
    if probe is None:
        return "server_down", "the endpoint gave no answer in time"
    if probe.get("client") is False:
        return "error", "the XRootD client is not installed in this server's environment"
    if probe.get("ok"):
        return "ok", f"read the first bytes of {path} with your current token"
    text = str(probe.get("message") or "").lower()
    expired = bool(claims and isinstance(claims.get("exp"), (int, float)) and claims["exp"] <= now)
    if any(s in text for s in _AUTH_FAILED):
        if not has_token:
            return "no_token", "the storage refused the login: this server has no token"
        if expired:
            return "expired", "the storage refused the login: your token has expired"
        return "error", "the storage refused the login with your token"
    if probe.get("errno") == 3010 or "[3010]" in text or "permission denied" in text:
        if expired:
            return "expired", "the storage refused the open: your token has expired"
        if claims and audience and audience not in audiences(claims.get("aud")):
            got = ", ".join(audiences(claims.get("aud"))) or "none"
            return (
                "wrong_audience",
                f"the storage refused the open: your token is for {got}, the storage "
                f"accepts {audience}",
            )
        if claims and not read_scope_covers(claims.get("scope"), path):
            return "not_in_scope", f"the storage refused the open: your token does not cover {path}"
        return "denied", f"the storage refused to open {path}"
    if probe.get("errno") == 3011 or "[3011]" in text or "no such file" in text:
        return "not_found", f"{path} does not exist at this endpoint"
    if any(s in text for s in _DOWN):
        return "server_down", "nothing answers at this endpoint"
    if any(s in text for s in _TLS):
        return "tls", "the TLS handshake failed (is the facility's CA trusted?)"
    return "error", "the XRootD client reported an error"
