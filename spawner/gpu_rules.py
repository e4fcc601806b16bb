"""*Pure* GPU-type rules shared by the spawner's profiles and the Dask gateway's GPU workers.

A GPU type (a profile's ``resources.gpu.type``, ``dask.slurm.gpu_workers.type``) is a key of the
backend's ``gpu_types`` map when the map is set; it is translated by that map (Slurm GRES type,
HTCondor device name, Kubernetes node label value) and never guessed: ``A100`` against
``{a100: ...}`` is a problem naming the key, not a job Slurm refuses later.

What must not live here: the translations themselves (``translations/slurm.py`` ``gres``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from afhub.hub_config.problems import Problem

from .profile_keys import _entries


def backend_gpu_types(values: dict) -> Mapping[str, str]:
    """``backend.<type>.gpu_types`` of the values' backend ({} when unset)."""
    backend = values.get("backend") or {}
    return (backend.get(backend.get("type", "local")) or {}).get("gpu_types") or {}


def type_problem(gpu_type: str, gpu_types: Mapping[str, str], map_key: str) -> str | None:
    """Why ``gpu_type`` cannot be used with ``gpu_types`` (the map at ``map_key``), or None."""
    if not gpu_types or gpu_type in gpu_types:
        return None
    same_case = [k for k in gpu_types if k.lower() == str(gpu_type).lower()]
    hint = f" (did you mean {same_case[0]!r}? types are case-sensitive)" if same_case else ""
    known = ", ".join(sorted(gpu_types))
    return f"GPU type {gpu_type!r} is not a key of {map_key}{hint}; types: {known}"


def profile_gpu_types(profiles: Any) -> Iterator[tuple[str, str]]:
    """``(key path, type)`` of every ``resources.gpu.type`` in profiles, options and choices."""
    for _kind, where, entry in _entries(profiles):
        res = entry.get("resources")
        gpu = res.get("gpu") if isinstance(res, Mapping) else None
        if isinstance(gpu, Mapping) and isinstance(gpu.get("type"), str) and gpu["type"]:
            yield f"{where}.resources.gpu.type", gpu["type"]


def gpu_type_problems(values: dict) -> list[Problem]:
    """Profiles' GPU types that match no ``backend.<type>.gpu_types`` key."""
    kind = (values.get("backend") or {}).get("type", "local")
    types = backend_gpu_types(values)
    out = []
    for path, gpu_type in profile_gpu_types(values.get("profiles")):
        message = type_problem(gpu_type, types, f"backend.{kind}.gpu_types")
        if message:
            out.append(Problem(path, message))
    return out
