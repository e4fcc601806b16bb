"""Values section owner for what runs inside user servers: ``kernels``.

Pure: sets ``Spawner.environment`` entries the server extension reads (``AFHUB_KERNEL_*``,
see ``server_ext/kernel_discovery.py``) and makes sure ``jupyterhub-singleuser`` loads the extension even
where its config file was not installed (editable installs, images that vendor afhub).
"""

from __future__ import annotations

from afhub.hub_config.problems import Problem
from afhub.server_ext import contract

KEYS = ("kernels",)


def check(values: dict) -> list[Problem]:
    return []


def build(values: dict, plan) -> None:
    kernels = values["kernels"]
    env = contract.kernel_environment(
        enabled=kernels["enabled"],
        scan_home=kernels["scan_home"],
        roots=kernels.get("roots"),
        conda_envs_dirs=kernels.get("conda_envs_dirs"),
        image_prefixes=kernels.get("image_prefixes"),
    )
    for name, value in env.items():
        plan.add_env(name, value)
    plan.add_arg(contract.SERVER_EXTENSION_ARG)
