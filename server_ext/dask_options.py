"""Dask cluster options and per-group limits, from the values file's ``dask`` section.

Pure: values, a user's groups and submitted options in; limits, option fields, validated options
and dask-gateway ``ClusterConfig`` overrides out. The gateway process
(``hub_config/gateway/options.py``) builds its options handler from these functions, and the
dask-gateway chart's gateway runs this very file (``hub_config/dask_chart.py`` ships its source
in ``gateway.extraConfig``), so what either gateway enforces, what the notebook API checks and
what the sidebar form shows come from one definition. No I/O, no dask imports.

Shared by both sides (docs/developers.md, "Layers"): the hub's gateway and the user's notebook
API import it, so it imports the standard library only (which images a user may pick is the
spawner's visibility rule: ``hub_config/gateway/options.py`` ``offered_images``).

Limits: the section's ``max_*`` keys are everyone's; each ``limits`` entry whose
``allowed_groups`` meets the user's groups raises them (the largest value wins).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import WORKER_GPUS

DEFAULTS = {
    "worker_cores": 1,
    "worker_memory": 2,
    "worker_gpus": 0,
    "max_worker_cores": 4,
    "max_worker_memory": 8,
    "max_worker_gpus": 0,
    "max_workers": 10,
    "max_clusters": 2,
    "idle_timeout": 1800,
}
# the refusal of a cluster beyond the user's max_clusters (the gateway process and the chart's
# extraConfig both use it)
MAX_CLUSTERS_MESSAGE = (
    "max_clusters: you have {active} running cluster(s) and may have at most {limit}; "
    "stop one first"
)

# the option naming a user's own environment prefix for the scheduler and workers
ENVIRONMENT = "environment"

LIMIT_KEYS = (
    "max_worker_cores",
    "max_worker_memory",
    "max_worker_gpus",
    "max_workers",
    "max_clusters",
)
MIN_WORKER_CORES = 0.25
MIN_WORKER_MEMORY = 0.25  # GiB
GIB = 2**30


class DaskOptionError(ValueError):
    """A cluster option that cannot be used; ``option`` names it, the message says the range."""

    def __init__(self, option: str, message: str):
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}" if option else message)


@dataclass(frozen=True)
class Limits:
    max_worker_cores: float
    max_worker_memory: float
    max_worker_gpus: int
    max_workers: int
    max_clusters: int

    def model(self) -> dict:
        return {k: getattr(self, k) for k in LIMIT_KEYS}


def setting(dask: Mapping, key: str) -> Any:
    """The ``dask`` section's ``key``, or its default (:data:`DEFAULTS`)."""
    return dask.get(key, DEFAULTS[key])


def limits_for(dask: Mapping, groups: Iterable[str]) -> Limits:
    """The limits of a user in ``groups``: the defaults raised by every matching entry."""
    groups = set(groups)
    out = {k: setting(dask, k) for k in LIMIT_KEYS}
    for entry in dask.get("limits") or []:
        if not groups & set(entry.get("allowed_groups") or ()):
            continue
        for k in LIMIT_KEYS:
            if k in entry:
                out[k] = max(out[k], entry[k])
    return Limits(**out)


@dataclass(frozen=True)
class Field:
    """One cluster option as the gateway, the notebook API and the sidebar form see it."""

    name: str
    label: str
    type: str  # "float" | "int" | "select" | "path" (a directory; "" for none)
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label)
    unit: str = ""

    def model(self) -> dict:
        out = {"name": self.name, "label": self.label, "type": self.type, "default": self.default}
        if self.type == "select":
            out["choices"] = [{"value": v, "label": lab} for v, lab in self.choices]
        elif self.type != "path":
            out["min"], out["max"] = self.min, self.max
        if self.unit:
            out["unit"] = self.unit
        return out

    def range_text(self) -> str:
        if self.type == "path":
            return "an absolute path, or '' for none"
        if self.type == "select":
            return "one of " + ", ".join(repr(v) for v, _ in self.choices)
        unit = f" {self.unit}" if self.unit else ""
        return f"between {_num(self.min)} and {_num(self.max)}{unit}"

    def check(self, value: Any) -> Any:
        """``value`` converted to this field's type; :class:`DaskOptionError` if not allowed."""
        if self.type == "select":
            if not isinstance(value, str) or value not in {v for v, _ in self.choices}:
                raise DaskOptionError(
                    self.name, f"{value!r} is not available to you; choose {self.range_text()}"
                )
            return value
        if self.type == "path":
            return check_path(self.name, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DaskOptionError(self.name, f"must be a number {self.range_text()}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise DaskOptionError(self.name, f"must be a finite number, got {value!r}")
        if self.type == "int" and int(value) != value:
            raise DaskOptionError(
                self.name, f"must be a whole number {self.range_text()}, got {value!r}"
            )
        if value < self.min or value > self.max:
            raise DaskOptionError(
                self.name, f"must be {self.range_text()} for you, got {_num(value)}"
            )
        return int(value) if self.type == "int" else float(value)


MAX_PATH = 1024


def check_path(option: str, value: Any) -> str:
    """A ``path`` option's value: ``""`` (none) or a normalized absolute path (no ``.``/``..``
    components, no doubled or trailing slash, no control characters)."""
    if not isinstance(value, str):
        raise DaskOptionError(option, f"must be a path (a string), got {value!r}")
    if value == "":
        return value
    if len(value) > MAX_PATH or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise DaskOptionError(option, "must be a path of printable characters (at most 1024)")
    if not value.startswith("/") or os.path.normpath(value) != value or value.startswith("//"):
        raise DaskOptionError(
            option, f"must be an absolute path without '.', '..' or doubled slashes, got {value!r}"
        )
    return value


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def option_fields(
    dask: Mapping,
    limits: Limits,
    images: list[Mapping] | None = None,
    default_image: str | None = None,
) -> list[Field]:
    """The options a user with ``limits`` is offered. ``images``: catalogue entries this user
    may use (already filtered by groups and ``dask.images``); the first is the default unless
    ``default_image`` names one of them."""
    cores = min(setting(dask, "worker_cores"), limits.max_worker_cores)
    memory = min(setting(dask, "worker_memory"), limits.max_worker_memory)
    fields = [
        Field(
            "worker_cores",
            "Worker cores",
            "float",
            cores,
            min(MIN_WORKER_CORES, limits.max_worker_cores),
            limits.max_worker_cores,
        ),
        Field(
            "worker_memory",
            "Worker memory",
            "float",
            memory,
            min(MIN_WORKER_MEMORY, limits.max_worker_memory),
            limits.max_worker_memory,
            unit="GiB",
        ),
    ]
    if limits.max_worker_gpus > 0:
        fields.append(
            Field(
                "worker_gpus",
                "GPUs per worker",
                "int",
                min(setting(dask, "worker_gpus"), limits.max_worker_gpus),
                0,
                limits.max_worker_gpus,
            )
        )
    # a kernel's own environment (a venv or conda prefix of the user's) instead of the image;
    # new_cluster() fills it in from a kernel running in one (server_ext/dask_client.py)
    fields.append(Field(ENVIRONMENT, "Your own environment", "path", ""))
    if images:
        choices = tuple((img["name"], img.get("display_name") or img["name"]) for img in images)
        names = [c[0] for c in choices]
        default = default_image if default_image in names else names[0]
        fields.append(Field("image", "Image / environment", "select", default, choices=choices))
    return fields


def path_inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it, by whole components (``/home/al`` is not in
    ``/home/a``); both absolute and normalized."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def own_environment(prefix: str, home: str | None) -> str | None:
    """The ``environment`` option's default for a kernel running in ``prefix``: the prefix
    when it lies inside the user's ``home`` (a venv or conda environment of theirs), else
    ``None`` (the image's or the server environment: the ``image`` option applies)."""
    if not home or not prefix:
        return None
    prefix, home = os.path.normpath(prefix), os.path.normpath(home)
    return prefix if prefix != home and path_inside(prefix, home) else None


def environment_refusal(backend: str, path: str) -> str | None:
    """Why clusters on ``backend`` cannot run in the user's own environment ``path`` (``None``:
    they can, or none was asked for). Local and Slurm workers share the home with the servers;
    Kubernetes pods do not."""
    if not path or backend in ("local", "slurm"):
        return None
    return (
        f"{ENVIRONMENT}: workers cannot run in your own environment {path} on this facility: "
        f"its Dask workers are {backend} pods, which do not share your home with your server. "
        f"Pass {ENVIRONMENT}='' to use a catalogue image (image=...) with the packages you need."
    )


def check_options(fields: list[Field], requested: Mapping | None) -> dict:
    """Every option filled in (defaults) and checked; unknown names are refused."""
    requested = dict(requested or {})
    by_name = {f.name: f for f in fields}
    unknown = sorted(k for k in requested if k not in by_name)
    if unknown:
        known = ", ".join(by_name)
        raise DaskOptionError(unknown[0], f"unknown option; the options are {known}")
    return {
        f.name: f.check(requested[f.name]) if f.name in requested else f.default for f in fields
    }


def check_workers(n: Any, limits: Limits, option: str = "workers") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DaskOptionError(option, f"must be a whole number >= 0, got {n!r}")
    if n > limits.max_workers:
        raise DaskOptionError(
            option, f"must be between 0 and {limits.max_workers} (max_workers for you), got {n}"
        )
    return n


@dataclass(frozen=True)
class LocalCommands:
    """How the local backend runs a cluster in an environment prefix."""

    scheduler_cmd: list[str]
    worker_cmd: list[str]
    environment: dict[str, str] = field(default_factory=dict)


def local_commands(prefix: str, *, interpreter: bool = False) -> LocalCommands:
    """``dask scheduler`` / ``dask worker`` of the environment at ``prefix`` (distributed has no
    ``dask-scheduler`` command any more). ``interpreter``: run them as ``<prefix>/bin/python -m
    dask`` (a user's own environment, whose ``dask`` may come from a ``.pth`` or a base
    environment and have no script in ``bin``)."""
    if interpreter:
        dask = [os.path.join(prefix, "bin", "python"), "-m", "dask"]
    else:
        dask = [os.path.join(prefix, "bin", "dask")]
    return LocalCommands(
        scheduler_cmd=[*dask, "scheduler"],
        worker_cmd=[*dask, "worker"],
        environment={
            "PATH": os.path.join(prefix, "bin") + ":/usr/local/bin:/usr/bin:/bin",
            # scratch space (and the worker's token file) inside the cluster's private
            # working directory, not a /tmp/dask-scratch-space shared by every user
            "DASK_TEMPORARY_DIRECTORY": ".",
        },
    )


def kube_memory(gib: float) -> str:
    """A size in GiB as Kubernetes memory in MiB: ``4`` -> ``"4096M"``."""
    return f"{int(gib * 1024)}M"


def kube_cluster_config(
    chosen: Mapping, *, limits: Limits, idle_timeout: float, image: str | None = None
) -> dict:
    """dask-gateway ``KubeClusterConfig`` overrides for validated options ``chosen`` (the
    dask-gateway chart's gateway, ``hub_config/dask_chart.py``): requests equal limits;
    ``image`` is the container image reference of the chosen catalogue image."""
    cores, memory = chosen["worker_cores"], kube_memory(chosen["worker_memory"])
    out: dict[str, Any] = {
        "worker_cores": cores,
        "worker_cores_limit": cores,
        "worker_memory": memory,
        "worker_memory_limit": memory,
        "worker_threads": max(1, int(cores)),
        "cluster_max_workers": limits.max_workers,
        "idle_timeout": float(idle_timeout),
    }
    if image:
        out["image"] = image
    gpus = chosen.get("worker_gpus") or 0
    if gpus:
        out["worker_extra_container_config"] = {"resources": {"limits": {"nvidia.com/gpu": gpus}}}
    return out


def cluster_config(
    chosen: Mapping, *, limits: Limits, idle_timeout: float, prefix: str | None
) -> dict:
    """dask-gateway ``ClusterConfig`` overrides for validated options ``chosen``."""
    cores = chosen["worker_cores"]
    out: dict[str, Any] = {
        "worker_cores": cores,
        "worker_threads": max(1, int(cores)),
        "worker_memory": int(chosen["worker_memory"] * GIB),
        "cluster_max_workers": limits.max_workers,
        "idle_timeout": float(idle_timeout),
    }
    if prefix:
        cmds = local_commands(prefix)
        out["scheduler_cmd"] = cmds.scheduler_cmd
        out["worker_cmd"] = cmds.worker_cmd
        out["environment"] = dict(cmds.environment)
    gpus = chosen.get("worker_gpus") or 0
    if gpus:
        out.setdefault("environment", {})[WORKER_GPUS] = str(gpus)
    return out
