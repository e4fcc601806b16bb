"""The embedded demo provider: oidc-provider-mock with refreshed tokens as short-lived as login ones.

``python -m afhub.authenticator.dev_idp <oidc-provider-mock arguments>``.

oidc-provider-mock applies ``-e/--token-max-age`` only to the authorization-code grant; tokens
from the refresh grant get authlib's default of 3600 s. A facility that tests renewal with a
short ``auth.dev.token_lifetime`` needs every access token to live that long, so this sets the
refresh grant's lifetime to the same value and then runs the mock's own command line. Nothing
else of the mock is changed (no RFC 7009 revocation, no RFC 8693 exchange).
"""

from __future__ import annotations

import sys


def token_lifetime(argv: list[str], default: int = 3600) -> int:
    """The ``-e``/``--token-max-age`` value of a mock command line."""
    for i, arg in enumerate(argv):
        if arg in ("-e", "--token-max-age") and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--token-max-age="):
            return int(arg.split("=", 1)[1])
    return default


def short_refreshed_tokens(lifetime: int) -> None:
    """Make authlib give refresh-grant access tokens ``lifetime`` seconds, as login ones."""
    from authlib.oauth2.rfc6750.token import BearerTokenGenerator

    BearerTokenGenerator.GRANT_TYPES_EXPIRES_IN = {
        **BearerTokenGenerator.GRANT_TYPES_EXPIRES_IN,
        "refresh_token": lifetime,
    }


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    short_refreshed_tokens(token_lifetime(argv))
    from oidc_provider_mock.__main__ import run

    run.main(args=argv, prog_name="afhub-dev-idp")


if __name__ == "__main__":
    main()
