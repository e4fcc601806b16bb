"""The gateway's authenticator: JupyterHub auth, groups fetched when a token cannot read them.

What must not live here: limits or options (``options.py``, ``clusters.py``).
"""

from __future__ import annotations

from urllib.parse import quote

from dask_gateway_server.auth import JupyterHubAuthenticator


class AfhubGatewayAuthenticator(JupyterHubAuthenticator):
    """JupyterHub auth; groups looked up with the gateway's token when the user's token
    cannot read them (a server's API token only carries the scopes it was issued)."""

    async def authenticate(self, request):
        user = await super().authenticate(request)
        if not user.groups and ":" not in user.name:
            url = f"{self.jupyterhub_api_url}/users/{quote(user.name, safe='')}"
            headers = {"Authorization": f"token {self.jupyterhub_api_token}"}
            async with self.session.get(url, headers=headers, ssl=self.ssl_context) as resp:
                if resp.status == 200:
                    user.groups = set((await resp.json()).get("groups") or [])
        return user
