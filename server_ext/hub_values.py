"""Values -> hub config for what runs inside user servers (section ``kernels``).

Pure: sets ``Spawner.environment`` entries the server extension reads (``AFHUB_KERNEL_*``,
see ``kernel_discovery.py``) and makes sure ``jupyterhub-singleuser`` loads the extension even
where its config file was not installed (editable installs, images that vendor afhub).
"""

from __future__ import annotations

from . import contract


def build(values: dict, plan) -> None:
    kernels = values.get("kernels", {})
    env = contract.kernel_environment(
        enabled=kernels.get("enabled", True),
        scan_home=kernels.get("scan_home", True),
        roots=kernels.get("roots"),
        conda_envs_dirs=kernels.get("conda_envs_dirs"),
        image_prefixes=kernels.get("image_prefixes"),
    )
    plan.update("Spawner", "environment", env)
    args = list(plan.get("Spawner", "args", []))
    if contract.SERVER_EXTENSION_ARG not in args:
        args.append(contract.SERVER_EXTENSION_ARG)
    plan.set("Spawner", "args", args)
