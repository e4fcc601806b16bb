"""``kubernetes`` backend translation: a resolved profile -> KubeSpawner trait values.

Pure: the operator's base settings (node selector, tolerations, GPU label key, GPU type names)
are arguments, the result is a :class:`KubeConfig` of trait values plus the profile's and
choices' ``kubespawner_override`` mappings, which the spawner applies *last* with KubeSpawner's
own semantics (dict traits are merged recursively, anything else replaced).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..profiles import Resolved
from .units import parse_bytes

K8S_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
ARCH_LABEL = "kubernetes.io/arch"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_LABEL = "nvidia.com/gpu.product"
DEFAULT_GPU_TOLERATIONS = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)


def kube_image(ref: str) -> str:
    """The image a pod runs for a catalogue reference: ``docker://`` (Apptainer's spelling of a
    registry image) dropped, anything else as written."""
    return ref.removeprefix("docker://")


def kube_image_problem(ref: str) -> str | None:
    """Why ``ref`` cannot be a Kubernetes container image, or None: an absolute or relative
    path (an unpacked image on /cvmfs, a .sif file) or another Apptainer source (``oras://``,
    ``library://``) is something only batch backends run through Apptainer."""
    image = kube_image(ref)
    if image.startswith(("/", "./", "../", "~")) or image.endswith(".sif"):
        return f"{ref!r} is a path, which only Apptainer on a batch backend can run"
    if "://" in image:
        return f"{ref!r} is an Apptainer source, not a registry image"
    return None


@dataclass(frozen=True)
class KubeConfig:
    traits: dict[str, Any]
    overrides: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def kube_config(
    resolved: Resolved,
    *,
    node_selector: Mapping[str, str] | None = None,
    tolerations: list[Mapping[str, Any]] | None = None,
    environment: Mapping[str, Any] | None = None,
    extra_resource_limits: Mapping[str, str] | None = None,
    gpu_node_selector_key: str = DEFAULT_GPU_LABEL,
    gpu_tolerations: list[Mapping[str, Any]] | None = None,
    gpu_types: Mapping[str, str] | None = None,
) -> KubeConfig:
    """KubeSpawner settings for one start, built over the configured base values."""
    r = resolved.resources
    traits: dict[str, Any] = {}
    image = resolved.image
    if image is not None:
        traits["image"] = kube_image(image.ref)
    if r.cpu is not None:
        traits["cpu_limit"] = float(r.cpu)
    if r.cpu_guarantee is not None:
        traits["cpu_guarantee"] = float(r.cpu_guarantee)
    if r.memory:
        traits["mem_limit"] = parse_bytes(r.memory)
    if r.memory_guarantee:
        traits["mem_guarantee"] = parse_bytes(r.memory_guarantee)

    selector = dict(node_selector or {})
    if resolved.arch:
        selector[ARCH_LABEL] = K8S_ARCH[resolved.arch]
    limits = dict(extra_resource_limits or {})
    tols = [dict(t) for t in (tolerations or [])]
    if r.gpu_count:
        limits[GPU_RESOURCE] = str(r.gpu_count)
        if r.gpu_type:
            selector[gpu_node_selector_key] = (gpu_types or {}).get(r.gpu_type, r.gpu_type)
        extra = DEFAULT_GPU_TOLERATIONS if gpu_tolerations is None else gpu_tolerations
        tols += [dict(t) for t in extra if dict(t) not in tols]
    traits["node_selector"] = selector
    traits["extra_resource_limits"] = limits
    traits["tolerations"] = tols
    env = dict(environment or {})
    env.update(resolved.env())
    traits["environment"] = env
    return KubeConfig(traits=traits, overrides=tuple(copy.deepcopy(o) for o in resolved.overrides))
