"""WLCG-profile access tokens, pure: the scopes a user's token carries and the claims of one.

What lives here: expanding the ``data.scopes`` templates for a user (:func:`expand_scopes`),
the claim set of a WLCG-profile access token (:func:`wlcg_claims`, as the demo provider issues
and the storage's scitokens plugin checks). No I/O, no clock (``now`` is passed in), no keys.
"""

from __future__ import annotations

import uuid

WLCG_VERSION = "1.0"
# scitokens-cpp allows no clock skew: tokens are dated this many seconds into the past
BACKDATE = 30
DEFAULT_SCOPES = (
    "storage.read:/public",
    "storage.read:/user/{username}",
    "storage.modify:/user/{username}",
)


def expand_scopes(templates, username: str) -> list[str]:
    """``templates`` with ``{username}`` replaced, in order, without duplicates."""
    out: list[str] = []
    for template in templates:
        scope = template.replace("{username}", username)
        if scope not in out:
            out.append(scope)
    return out


def scope_string(templates, username: str) -> str:
    """The space-separated ``scope`` claim/parameter for ``username``."""
    return " ".join(expand_scopes(templates, username))


def wlcg_claims(
    *,
    issuer: str,
    subject: str,
    audience: str,
    scope: str,
    now: float,
    lifetime: int,
    jti: str | None = None,
) -> dict:
    """The claims of a WLCG-profile access token valid for ``lifetime`` s from ``now``."""
    issued = int(now) - BACKDATE
    return {
        "wlcg.ver": WLCG_VERSION,
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "scope": scope,
        "iat": issued,
        "nbf": issued,
        "exp": int(now) + int(lifetime),
        "jti": jti or str(uuid.uuid4()),
    }
