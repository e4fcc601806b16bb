"""afhub.authenticator: OIDC login with groups and the data-access token broker."""
