"""The Plan: JupyterHub configuration to apply, built by the values sections.

A :class:`Plan` is a nested mapping ``Section -> trait -> value`` in which secrets are still
:class:`SecretRef` placeholders (resolved only when ``apply.apply_plan`` sets them on a
traitlets Config, masked by ``render``). Section owners (``hub_config/sections.py``) write to it
with :meth:`Plan.set` (one trait, once) and the additive operations (:meth:`~Plan.add_env`,
:meth:`~Plan.add_arg`, :meth:`~Plan.add_service`, :meth:`~Plan.add_role`, :meth:`~Plan.grant`,
:meth:`~Plan.add_custom_scope`, :meth:`~Plan.add_server_token_scope`). Every operation refuses
to overwrite what another owner wrote (:class:`PlanConflict`), so no builder needs to read
another's output and the order of sections does not change the result.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import secrets

# JupyterHub's own defaults that an additive operation starts from
DEFAULT_ROLES = {"user": {"description": "Standard user privileges", "scopes": ["self"]}}
SERVER_ROLE_SCOPES = ("users:activity!user", "access:servers!server")


class PlanConflict(ValueError):
    """Two section owners wrote the same entry (a programming error, not an operator's)."""


@dataclass(frozen=True)
class SecretRef:
    """A secret not yet read: ``value`` is the values-file form; ``generated`` a data-dir file."""

    path: str
    value: Any = None
    generated: str | None = None
    transform: str = "text"  # "text" | "hex-bytes" | "key-list"

    def describe(self) -> str:
        if self.generated:
            return f"<generated secret in data dir: {self.generated}>"
        return secrets.describe(self.value)


@dataclass
class Plan:
    """Config to apply: ``sections[Section][trait] = value`` (values may be SecretRef).

    ``owner`` names the section owner currently building (set by ``apply.build``); it appears
    in :class:`PlanConflict` messages."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_dir: str = "."
    deployment: str = "standalone"  # "standalone" (afhub up, batch sites) or "z2jh"
    owner: str = "?"
    _owners: dict[tuple, str] = field(default_factory=dict, repr=False)

    # -- reading (for tests, render and callers; builders do not read each other's entries)
    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.sections.get(section, {}).get(key, default)

    # -- writing
    def _claim(self, what: tuple, label: str) -> None:
        if what in self._owners:
            raise PlanConflict(f"{label} is written by both {self._owners[what]} and {self.owner}")
        self._owners[what] = self.owner

    def set(self, section: str, key: str, value: Any) -> None:
        """Set one trait; refuses a trait another owner (or this one) already set."""
        self._claim((section, key), f"{section}.{key}")
        if key in self.sections.get(section, {}):  # built up by additive operations
            del self._owners[(section, key)]
            raise PlanConflict(
                f"{section}.{key} is added to by other owners; {self.owner} cannot set it"
            )
        self.sections.setdefault(section, {})[key] = value

    def _collection(self, section: str, key: str, empty):
        owner = self._owners.get((section, key))
        if owner is not None:  # set() whole, not built up by additive operations
            raise PlanConflict(f"{section}.{key} is set by {owner}; {self.owner} cannot add to it")
        return self.sections.setdefault(section, {}).setdefault(key, empty)

    def add_env(self, name: str, value: str) -> None:
        """One ``Spawner.environment`` variable of every user server."""
        env = self._collection("Spawner", "environment", {})
        self._claim(("Spawner", "environment", name), f"Spawner.environment[{name!r}]")
        env[name] = value

    def add_arg(self, arg: str) -> None:
        """One ``Spawner.args`` argument of every user server."""
        args = self._collection("Spawner", "args", [])
        self._claim(("Spawner", "args", arg), f"Spawner.args {arg!r}")
        args.append(arg)

    def add_service(self, service: dict) -> None:
        """One ``JupyterHub.services`` entry (names are unique)."""
        services = self._collection("JupyterHub", "services", [])
        self._claim(("service", service["name"]), f"service {service['name']!r}")
        services.append(dict(service))

    def add_role(self, role: dict) -> None:
        """One ``JupyterHub.load_roles`` entry (names are unique; :meth:`grant` adds scopes)."""
        roles = self._collection("JupyterHub", "load_roles", [])
        self._claim(("role", role["name"]), f"role {role['name']!r}")
        roles.append({**role, "scopes": list(role.get("scopes") or [])})

    def grant(self, role_name: str, scope: str) -> None:
        """Add ``scope`` to role ``role_name``; a JupyterHub default role (``user``) is created
        with its default scopes first. Refuses a scope granted twice."""
        roles = self._collection("JupyterHub", "load_roles", [])
        self._claim(("grant", role_name, scope), f"scope {scope!r} of role {role_name!r}")
        for role in roles:
            if role["name"] == role_name:
                break
        else:
            if role_name not in DEFAULT_ROLES:
                raise PlanConflict(f"{self.owner} grants {scope!r} to unknown role {role_name!r}")
            base = DEFAULT_ROLES[role_name]
            role = {"name": role_name, "description": base["description"]}
            role["scopes"] = list(base["scopes"])
            roles.append(role)
        role["scopes"].append(scope)

    def add_custom_scope(self, name: str, description: str) -> None:
        """One ``JupyterHub.custom_scopes`` entry."""
        custom = self._collection("JupyterHub", "custom_scopes", {})
        self._claim(("custom_scope", name), f"custom scope {name!r}")
        custom[name] = {"description": description}

    def add_server_token_scope(self, scope: str) -> None:
        """Add ``scope`` to ``Spawner.server_token_scopes``, which starts from the scopes of
        JupyterHub's ``server`` role (what a server token has when nothing is requested)."""
        scopes = self._collection("Spawner", "server_token_scopes", list(SERVER_ROLE_SCOPES))
        self._claim(("server_token_scope", scope), f"server token scope {scope!r}")
        if scope not in scopes:
            scopes.append(scope)
