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
which a key has no owner or two, an owner lacks ``check``/``build``, or a module in a component
looks like a section owner (module-level ``KEYS`` and a ``build`` function, whatever the file is
called) without being listed (it would otherwise be skipped without a word).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import os
from functools import lru_cache

import jsonschema

from .schema import file_schema

SECTIONS = (
    "afhub.hub_config.hub_section",  # hub, named_servers, culling
    "afhub.spawner.spawn_section",  # backend, images, profiles, singleuser
    "afhub.authenticator.auth_section",  # auth, tokens
    "afhub.hub_config.kernels_section",  # kernels
    "afhub.hub_config.dask_section",  # dask (the gateway service and the client settings)
    "afhub.hub_config.data",  # data (the storage the token is for)
)

# the component packages searched for section modules that are not listed
COMPONENTS = ("afhub.hub_config", "afhub.spawner", "afhub.authenticator", "afhub.server_ext")


class RegistryError(RuntimeError):
    """The section registry is inconsistent (a developer's mistake, reported at first use)."""


def looks_like_owner(source: str) -> bool:
    """Pure: whether module text ``source`` defines a section owner's ``KEYS`` (assigned at
    module level) and a ``build`` function, read with ``ast`` (nothing is imported)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {"KEYS", "build"} <= names


def owner_modules(packages: tuple[str, ...] = COMPONENTS) -> list[str]:
    """Every module under ``packages`` that looks like a section owner (:func:`looks_like_owner`),
    whatever its file name."""
    found = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
                for filename in filenames:
                    if not filename.endswith(".py"):
                        continue
                    path = os.path.join(dirpath, filename)
                    with open(path, encoding="utf-8") as f:
                        if not looks_like_owner(f.read()):
                            continue
                    rel = os.path.relpath(path[:-3], root).replace(os.sep, ".")
                    found.append(package + "." + rel)
    return sorted(found)


def unlisted_modules(sections: tuple[str, ...]) -> list[str]:
    """Section owner modules under the component packages that ``sections`` does not list."""
    return [m for m in owner_modules() if m not in sections]


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
    out = copy.deepcopy(file_schema())
    for module in owners(sections):
        for key, node in getattr(module, "SCHEMA", {}).items():
            out["properties"][key] = copy.deepcopy(node)
    return out


@lru_cache(maxsize=1)
def validator() -> jsonschema.protocols.Validator:
    """A validator of the composed :func:`schema` (``values.validate`` uses it)."""
    composed = schema()
    return jsonschema.validators.validator_for(composed)(composed, format_checker=None)


def clear_caches() -> None:
    """Forget checked owners, composed schemas and their validator (after changing
    :data:`SECTIONS`, in tests)."""
    owners.cache_clear()
    schema.cache_clear()
    validator.cache_clear()
