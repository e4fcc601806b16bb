"""Values -> hub config for what runs inside user servers (section ``kernels``).

Pure: sets ``Spawner.environment`` entries the server extension reads (``AFHUB_KERNEL_*``,
see ``kernel_discovery.py``) and makes sure ``jupyterhub-singleuser`` loads the extension even
where its config file was not installed (editable installs, images that vendor afhub).
"""

from __future__ import annotations

import os

ENABLE_ARG = "--ServerApp.jpserver_extensions=afhub.server_ext=True"


def server_environment(kernels: dict) -> dict[str, str]:
    env = {"AFHUB_KERNELS_ENABLED": "1" if kernels.get("enabled", True) else "0"}
    for key, var in (
        ("roots", "AFHUB_KERNEL_ROOTS"),
        ("conda_envs_dirs", "AFHUB_CONDA_ENVS_DIRS"),
        ("image_prefixes", "AFHUB_IMAGE_PREFIXES"),
    ):
        if kernels.get(key):
            env[var] = os.pathsep.join(kernels[key])
    return env


def build(values: dict, plan) -> None:
    plan.update("Spawner", "environment", server_environment(values.get("kernels", {})))
    args = list(plan.get("Spawner", "args", []))
    if ENABLE_ARG not in args:
        args.append(ENABLE_ARG)
    plan.set("Spawner", "args", args)
