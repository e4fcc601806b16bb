"""The backend protocol: what an afhub spawner class implements, and what the mixin does for it.

A backend is one class ``<Name>ProfileSpawner(ProfileSpawnerMixin, <a JupyterHub spawner>)``
(the mixin first). It implements :class:`ProfileBackend`:

- ``afhub_translate(resolved) -> config``: pure (a function in ``translations/<name>.py``):
  the backend's settings for one resolved profile, or :class:`~.profiles.OptionsError` naming
  the field when this backend cannot run it. Changes nothing on the spawner.
- ``afhub_apply_backend(config)``: sets traits for this start with ``self.afhub_set(name,
  value)`` (restored before the next start) and the server's extra environment with
  ``self.afhub_set_env(env)``. Nothing else.
- ``afhub_before_start(resolved)`` (optional, async): checks that need I/O right before the
  base spawner starts (the local backend: the environment has ``jupyterhub-singleuser``).

The mixin, not the backend, runs the lifecycle of every start:

1. ``apply_user_options`` (form, ``/hub/spawn`` URL, REST): resolve against the profiles the
   user may see -> ``afhub_translate`` -> restore the configured traits -> ``afhub_apply_backend``;
2. ``start``: resolve now if the operator replaced ``apply_user_options`` -> ``afhub_before_start``
   -> the base spawner's ``start`` -> remember the running profile and the last choice.

What a start leaves on the spawner is one :class:`SpawnerState` (``spawner.afhub_state``).
Adding a backend touches: ``translations/<name>.py`` (+ tests), ``spawner/<name>.py`` (this
protocol), ``spawner/spawn_section.py`` (``SPAWNER_CLASSES``, ``backend.<name>`` settings), the
values schema (``backend.type`` enum, ``backend.<name>``) and the ``jupyterhub.spawners`` entry
point in ``pyproject.toml`` (see docs/developers.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .profiles import Catalogue, OptionsError, Resolved


@runtime_checkable
class ProfileBackend(Protocol):
    """The methods a backend spawner class provides (see the module docstring)."""

    def afhub_translate(self, resolved: Resolved) -> Any: ...

    def afhub_apply_backend(self, config: Any) -> None: ...

    async def afhub_before_start(self, resolved: Resolved) -> None: ...


@dataclass
class SpawnerState:
    """Everything afhub keeps on one spawner, between and during starts."""

    # kept in the spawner's state (survives stops and hub restarts)
    last_choice: dict | None = None  # the last successfully started user_options
    running: dict | None = None  # the running profile's display summary
    server_token_id: int | None = None  # id of the API token of the running server (broker)
    # this start
    resolved: Resolved | None = None
    env: dict[str, str] = field(default_factory=dict)  # the server's extra environment
    baseline: dict[str, Any] = field(default_factory=dict)  # configured values of changed traits
    # the last rejected submission, shown once on the page
    failed: tuple[dict, OptionsError] | None = None
    # cached catalogue of a list/dict profile source
    catalogue_key: Any = None
    catalogue: Catalogue | None = None
