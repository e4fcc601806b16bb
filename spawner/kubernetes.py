"""The ``kubernetes`` backend: KubeSpawner with afhub profiles, a drop-in for KubeSpawner.

It serves afhub's ``profiles`` or, when those are empty, KubeSpawner's own ``profile_list``
(see :mod:`.mixin`). KubeSpawner's ``profile_list`` machinery itself is not used: afhub resolves
``user_options`` (:mod:`.profiles`), translates the result (:mod:`.translations.kubernetes`) and sets
KubeSpawner's traits, then applies ``kubespawner_override`` mappings last with KubeSpawner's
semantics (dict traits merged recursively, ``None`` removes a key, callables called with the
spawner). For a ``profile_list`` without afhub keys the pod equals stock KubeSpawner's apart from
afhub's ``AFHUB_*`` environment variables (tests/test_profile_list_dropin.py).
"""

from __future__ import annotations

import copy
import inspect

from kubespawner import KubeSpawner
from kubespawner.utils import recursive_update
from traitlets import Dict, List, Unicode

from .mixin import ProfileSpawnerMixin, misconfigured
from .profiles import Resolved
from .translations.kubernetes import DEFAULT_GPU_LABEL, KubeConfig, kube_config


class KubeProfileSpawner(ProfileSpawnerMixin, KubeSpawner):
    """KubeSpawner whose pods follow the profile a user resolved on the spawn page."""

    afhub_kubespawner_overrides = True  # applied last, with KubeSpawner's semantics

    gpu_node_selector_key = Unicode(
        DEFAULT_GPU_LABEL,
        config=True,
        help="Node label holding the GPU product, used to pin a profile's GPU type. Default ``nvidia.com/gpu.product``.",
    )

    gpu_tolerations = List(
        Dict(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Tolerations added to pods that request GPUs. Default ``None``: tolerate ``nvidia.com/gpu`` (NoSchedule).",
    )

    gpu_types = Dict(
        config=True,
        help="GPU type names of profiles -> node label values, e.g. ``{'a100': 'NVIDIA-A100-SXM4-80GB'}``. Default ``{}`` (names are used as they are).",
    )

    def afhub_translate(self, resolved: Resolved) -> KubeConfig:
        return kube_config(
            resolved,
            node_selector=self.afhub_base("node_selector"),
            tolerations=self.afhub_base("tolerations"),
            environment=self.afhub_base("environment"),
            extra_resource_limits=self.afhub_base("extra_resource_limits"),
            gpu_node_selector_key=self.gpu_node_selector_key,
            gpu_tolerations=self.gpu_tolerations,
            gpu_types=self.gpu_types,
        )

    def afhub_apply_backend(self, config: KubeConfig) -> None:
        for name, value in config.traits.items():
            self.afhub_set(name, value)
        for override in config.overrides:
            for name, value in override.items():
                if callable(value):
                    value = value(self)
                    if inspect.isawaitable(value):
                        if hasattr(value, "close"):
                            value.close()
                        raise misconfigured(
                            self.log,
                            f"kubespawner_override.{name}: the callable returned an awaitable; "
                            "KubeSpawner calls override callables synchronously",
                        )
                current = getattr(self, name)
                if isinstance(value, dict) and isinstance(current, dict):
                    merged = copy.deepcopy(current)
                    recursive_update(merged, value)
                    value = merged
                self.afhub_set(name, value)

    async def load_user_options(self):
        """Done in ``apply_user_options`` (or the mixin's ``start``) already; KubeSpawner's
        profile_list machinery stays unused."""
        await self.afhub_ensure_resolved()
