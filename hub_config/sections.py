"""The values-section registry: which module owns which top-level key of the values file.

:data:`SECTIONS` lists every section owner, explicitly and in build order. Each owner is a
module with

- ``KEYS``: the top-level values keys it owns (e.g. ``("auth", "tokens")``);
- ``check(values) -> list[Problem]``: cross-key problems a JSON Schema cannot express, on
  schema-valid values (defaults filled);
- ``build(values, plan)``: pure; writes its traits into the :class:`~.plan.Plan`;
- optionally ``SCHEMA``: ``{key: JSON Schema}`` for owned keys that are not described in
  ``values.schema.json`` (a new section can carry its schema with it).

``afhub check`` (``values.validate``), ``render``/``configure`` (``apply.build``) and ``docs``
(``docs.render_values_doc``) all go through :func:`owners` and :func:`schema`, so adding a
section means writing its module and listing it here. :func:`owners` refuses a registry in
which a key has no owner or two, an owner lacks ``check``/``build``, or a ``hub_values`` module
exists in a component without being listed (it would otherwise be skipped without a word).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
from functools import lru_cache

SECTIONS = (
    "afhub.hub_config.hub_values",  # hub, named_servers, culling
    "afhub.spawner.hub_values",  # backend, images, profiles, singleuser
    "afhub.authenticator.hub_values",  # auth, tokens
    "afhub.server_ext.hub_values",  # kernels
    "afhub.hub_config.dask",  # dask (the gateway service and the client settings)
    "afhub.hub_config.data",  # data (the storage the token is for)
)

# the component packages searched for section modules that are not listed
COMPONENTS = ("afhub.hub_config", "afhub.spawner", "afhub.authenticator", "afhub.server_ext")
SECTION_MODULE = "hub_values.py"


class RegistryError(RuntimeError):
    """The section registry is inconsistent (a developer's mistake, reported at first use)."""


def unlisted_modules(sections: tuple[str, ...]) -> list[str]:
    """``hub_values`` modules under the component packages that ``sections`` does not list."""
    found = []
    for package in COMPONENTS:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
                if SECTION_MODULE in filenames:
                    rel = os.path.relpath(os.path.join(dirpath, SECTION_MODULE[:-3]), root)
                    found.append(package + "." + rel.replace(os.sep, "."))
    return sorted(m for m in found if m not in sections)


@lru_cache(maxsize=4)
def owners(sections: tuple[str, ...] | None = None) -> tuple:
    """The section owner modules of ``sections`` (default :data:`SECTIONS`), checked."""
    sections = SECTIONS if sections is None else sections
    problems = [
        f"{m} looks like a values section but is not listed in afhub.hub_config.sections.SECTIONS"
        for m in unlisted_modules(sections)
    ]
    modules = []
    owner_of: dict[str, str] = {}
    for name in sections:
        module = importlib.import_module(name)
        modules.append(module)
        for attr in ("KEYS", "check", "build"):
            if not hasattr(module, attr):
                problems.append(f"section module {name} has no {attr}")
        for key in getattr(module, "KEYS", ()):
            if key in owner_of:
                problems.append(f"values key {key!r} is owned by {owner_of[key]} and {name}")
            owner_of.setdefault(key, name)
        for key in getattr(module, "SCHEMA", {}):
            if key not in getattr(module, "KEYS", ()):
                problems.append(f"{name}.SCHEMA describes {key!r}, which is not in its KEYS")
    from .values import file_schema

    described = set(file_schema()["properties"])
    for name, module in zip(sections, modules, strict=True):
        for key in getattr(module, "SCHEMA", {}):
            if key in described:
                problems.append(f"{name}.SCHEMA describes {key!r}, already in values.schema.json")
            described.add(key)
    for key in sorted(described - set(owner_of)):
        problems.append(f"values key {key!r} has no section owner in SECTIONS")
    for key in sorted(set(owner_of) - described):
        problems.append(f"values key {key!r} ({owner_of[key]}) has no schema")
    if problems:
        raise RegistryError("; ".join(problems))
    return tuple(modules)


@lru_cache(maxsize=4)
def schema(sections: tuple[str, ...] | None = None) -> dict:
    """The values JSON Schema: ``values.schema.json`` plus each owner's ``SCHEMA``."""
    from .values import file_schema

    out = copy.deepcopy(file_schema())
    for module in owners(sections):
        for key, node in getattr(module, "SCHEMA", {}).items():
            out["properties"][key] = copy.deepcopy(node)
    return out


def clear_caches() -> None:
    """Forget checked owners and composed schemas (after changing :data:`SECTIONS`, in tests)."""
    owners.cache_clear()
    schema.cache_clear()
    from . import values

    values.clear_caches()
