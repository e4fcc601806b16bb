"""Test stand-ins for the authenticator's unit tests (no hub process).

``MemoryUser`` stands in for ``jupyterhub.user.User`` at one boundary: a name, hub groups and
an auth_state that is saved in memory (JSON round-tripped, as the database would).
"""

from __future__ import annotations

import json


class Group:
    def __init__(self, name):
        self.name = name


class MemoryUser:
    def __init__(self, name, state, groups=("physicists", "gpu-users")):
        self.name, self.state, self.saves = name, state, 0
        self.groups = [Group(g) for g in groups]

    async def get_auth_state(self):
        return json.loads(json.dumps(self.state)) if self.state is not None else None

    async def save_auth_state(self, state):
        self.state, self.saves = state, self.saves + 1

    @property
    def encrypted_auth_state(self):
        """Like the database column: changes whenever the state is saved (not encrypted here)."""
        return None if self.state is None else json.dumps(self.state, sort_keys=True).encode()
