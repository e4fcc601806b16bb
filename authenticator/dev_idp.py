"""The embedded demo provider: oidc-provider-mock with refreshed tokens as short-lived as login ones.

``python -m afhub.authenticator.dev_idp <oidc-provider-mock arguments>``.

oidc-provider-mock applies ``-e/--token-max-age`` only to the authorization-code grant; tokens
from the refresh grant get authlib's default of 3600 s. A facility that tests renewal with a
short ``auth.dev.token_lifetime`` needs every access token to live that long, so this sets the
refresh grant's lifetime to the same value and then runs the mock's own command line. Nothing
else of the mock's protocol is changed (no RFC 7009 revocation, no RFC 8693 exchange). Its
pages are afhub's (``dev_idp_templates/``: a local stylesheet instead of a CDN, the name field
labelled as such), and a name that is not a demo user is told so on the sign-in page instead of
signing in as an invented user without the claims the hub needs.

This module is the provider program only: it needs the ``demo`` extra (oidc-provider-mock)
and is left out of the images (images/build.py). Where it listens, the client id the hub uses
with it, the claims of its demo users and the command line that starts it are hub-side
configuration, in ``afhub.hub_config.demo``.

With a ``data`` section, its access tokens are WLCG-profile JWTs for the storage
(:func:`wlcg_tokens`): signed with the facility's key (``--signing-key PATH``, the key that
``afhub up`` gives the storage too, and the one its JWKS and id tokens use), for the storage
audience (``--wlcg-audience``) with the user's ``data.scopes`` (``--wlcg-scope``, repeated).
These options are afhub's; the rest of the command line is the mock's.
"""

from __future__ import annotations

import json
import os
import sys

AFHUB_OPTIONS = ("--signing-key", "--wlcg-audience", "--wlcg-scope")


def split_options(argv: list[str]) -> tuple[dict, list[str]]:
    """afhub's options (``{"--wlcg-scope": [...], ...}``) and the mock's arguments."""
    ours: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in AFHUB_OPTIONS and i + 1 < len(argv):
            ours.setdefault(argv[i], []).append(argv[i + 1])
            i += 2
            continue
        rest.append(argv[i])
        i += 1
    return ours, rest


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


#: Pages of the demo provider that afhub replaces (the mock's load their CSS from a CDN and
#: label the name field "sub"), and the stylesheet they use, served by the provider itself.
PAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dev_idp_templates")
CSS_ROUTE = "/afhub-dev-idp.css"


def refusal_for(sub: str | None, known: bool) -> str | None:
    """Why a name typed on the demo sign-in page cannot sign in, or None when it can."""
    if not (sub or "").strip():
        return "empty"
    return None if known else "unknown"


def afhub_pages(flask_app):
    """The mock's Flask app with afhub's pages and stylesheet, and unknown names refused on
    the sign-in form (the mock would invent a user without the claims the hub needs)."""
    import flask
    import jinja2

    flask_app.jinja_loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(PAGES), flask_app.jinja_loader]
    )

    def stylesheet():
        return flask.send_file(os.path.join(PAGES, "afhub-dev-idp.css"), mimetype="text/css")

    flask_app.add_url_rule(CSS_ROUTE, "afhub_dev_idp_css", stylesheet)

    def refuse_unknown_names():
        req = flask.request
        if req.method != "POST" or req.path != "/oauth2/authorize":
            return None
        if req.form.get("action") == "deny" or "sub" not in req.form:
            return None
        sub = req.form["sub"].strip()
        storage = flask.g.oidc_provider_mock_storage
        if refusal_for(sub, storage.get_user(sub) is not None) is None:
            return None
        config = flask.g.oidc_provider_mock_config
        page = flask.render_template(
            "authorization_form.html",
            unknown_user=sub,
            predefined_users=[u.sub for u in config.user_claims],
            redirect_uri=req.args.get("redirect_uri", ""),
            client_id=req.args.get("client_id", ""),
        )
        return page, 400

    flask_app.before_request(refuse_unknown_names)  # runs after the mock's set_globals
    return flask_app


def facility_key(path: str) -> None:
    """Make the mock sign with the facility's key (a private JWK file) instead of a random
    one, so the storage, which is given the public half, can check its tokens."""
    from authlib import jose
    from oidc_provider_mock import _storage

    with open(path, encoding="utf-8") as f:
        key = jose.RSAKey.import_key(json.load(f))
    init = _storage.Storage.__init__

    def with_facility_key(self):
        init(self)
        self.jwk = key

    _storage.Storage.__init__ = with_facility_key


def wlcg_tokens(audience: str, scopes: list[str]) -> None:
    """Make every access token the mock issues a WLCG-profile JWT (``authenticator/wlcg.py``)
    for ``audience`` with the user's ``scopes``, signed with the provider's key, living as
    long as the mock says (``expires_in``). The mock still stores it for userinfo."""
    import time

    import flask
    from authlib import jose
    from authlib.oauth2.rfc6750.token import BearerTokenGenerator

    from .wlcg import scope_string, wlcg_claims

    generate = BearerTokenGenerator.generate

    def generate_wlcg(
        self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True
    ):
        token = generate(self, grant_type, client, user, scope, expires_in, include_refresh_token)
        if user is None:
            return token
        key = flask.g.oidc_provider_mock_storage.jwk
        claims = wlcg_claims(
            issuer=flask.request.host_url.rstrip("/"),
            subject=user.sub,
            audience=audience,
            scope=scope_string(scopes, user.sub),
            now=time.time(),
            lifetime=int(token.get("expires_in") or 3600),
        )
        header = {"alg": "RS256", "typ": "JWT", "kid": key.as_dict().get("kid")}
        token["access_token"] = jose.jwt.encode(header, claims, key).decode()
        return token

    BearerTokenGenerator.generate = generate_wlcg


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, argv = split_options(argv)
    if ours.get("--signing-key"):
        facility_key(ours["--signing-key"][-1])
    if ours.get("--wlcg-audience"):
        wlcg_tokens(ours["--wlcg-audience"][-1], ours.get("--wlcg-scope", []))
    short_refreshed_tokens(token_lifetime(argv))
    import oidc_provider_mock.__main__ as mock_main

    make_app = mock_main.app
    mock_main.app = lambda **kw: afhub_pages(make_app(**kw))
    mock_main.run.main(args=argv, prog_name="afhub-dev-idp")


if __name__ == "__main__":
    main()
