"""``kubespawner_override`` on backends that are not KubeSpawner: what carries over, what not.

Pure. A ``profile_list`` written for KubeSpawner describes hardware through KubeSpawner traits;
the local and batch backends read afhub's backend-neutral :class:`~.profiles.Resources`
instead. :func:`portable` reads the traits with a meaning everywhere and names every other key,
so the spawner can report it once instead of dropping it silently:

- ``cpu_limit``, ``cpu_guarantee``, ``mem_limit``, ``mem_guarantee`` -> resources (memory in
  JupyterHub's units: ``2G`` is 2 GiB, as KubeSpawner reads it);
- ``extra_resource_limits``/``extra_resource_guarantees`` ``nvidia.com/gpu`` -> GPU count;
- ``node_selector`` ``kubernetes.io/arch`` -> arch, ``nvidia.com/gpu.product`` -> GPU type;
- ``environment`` (merged over the configured one; ``None`` removes a name) and
  ``default_url`` -> the same Spawner traits;
- ``image``/``image_spec`` -> the container image, for backends that run images (batch with
  Apptainer); the local backend reports it as not applicable.

Overrides apply in order (profile, then each option's choice), later ones replacing earlier ones,
as in KubeSpawner. Callables must already have been called (the spawner does that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
ARCH_LABEL = "kubernetes.io/arch"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
ARCHS = {"amd64": "x86_64", "arm64": "aarch64", "x86_64": "x86_64", "aarch64": "aarch64"}
SPAWNER_TRAITS = ("environment", "default_url")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class Portable:
    resources: dict[str, Any] = field(default_factory=dict)  # a ``resources`` mapping
    traits: dict[str, Any] = field(default_factory=dict)  # Spawner traits to set
    image: str | None = None
    ignored: tuple[str, ...] = ()  # "node_selector.cloud.google.com/gke-nodepool", "tolerations"


def _bytes(value: Any) -> str:
    """KubeSpawner's byte values (``2G``, ``512M``, an int) as plain bytes for afhub."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    text = str(value).strip()
    if text and text[-1] in _UNITS:
        return str(int(float(text[:-1]) * _UNITS[text[-1]]))
    return str(int(float(text)))


# KubeSpawner trait -> (afhub resources key, conversion)
_RESOURCES = {
    "cpu_limit": ("cpu", float),
    "cpu_guarantee": ("cpu_guarantee", float),
    "mem_limit": ("memory", _bytes),
    "mem_guarantee": ("memory_guarantee", _bytes),
}


def portable(overrides: Iterable[Mapping[str, Any]]) -> Portable:
    resources: dict[str, Any] = {}
    gpu: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    image = None
    ignored: list[str] = []

    def skip(name: str) -> None:
        if name not in ignored:
            ignored.append(name)

    for override in overrides:
        for key, value in override.items():
            if key in _RESOURCES:
                target, convert = _RESOURCES[key]
                if value is None:
                    resources.pop(target, None)
                else:
                    resources[target] = convert(value)
            elif key in ("extra_resource_limits", "extra_resource_guarantees"):
                for name, amount in (value or {}).items():
                    if name == GPU_RESOURCE and amount is not None:
                        gpu["count"] = int(amount)
                    elif name != GPU_RESOURCE:
                        skip(f"{key}.{name}")
            elif key == "node_selector":
                for name, label in (value or {}).items():
                    if name == ARCH_LABEL and label in ARCHS:
                        resources["arch"] = ARCHS[label]
                    elif name == GPU_PRODUCT_LABEL and label:
                        gpu["type"] = str(label)
                    else:
                        skip(f"{key}.{name}")
            elif key in ("image", "image_spec"):
                image = value if isinstance(value, str) else None
            elif key in SPAWNER_TRAITS:
                if key == "environment" and isinstance(value, Mapping):
                    # None stays: it removes the name from the configured environment too
                    traits["environment"] = {**traits.get("environment", {}), **value}
                else:
                    traits[key] = value
            else:
                skip(key)
    if gpu:
        resources["gpu"] = gpu
    return Portable(resources=resources, traits=traits, image=image, ignored=tuple(ignored))
