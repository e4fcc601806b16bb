"""The gateway's options handler: each user's dask-gateway ``Options`` from the shared Dask
option definitions (``server_ext/dask_options.py``): per-group limits, the images the user may
use, the commands or environment prefix the chosen image runs with.

What must not live here: the option definitions themselves (one definition, shared with the
chart and the user side), their dask-gateway field classes (``fields.py``), backends.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping

from afhub.server_ext import dask_options
from afhub.spawner.profiles import Catalogue

from .fields import gateway_options


def offered_images(
    dask: Mapping,
    catalogue: list[Mapping],
    groups: Iterable[str],
    profiles: list[Mapping] | None = None,
) -> list[Mapping]:
    """Catalogue images offered as the ``image`` option to a user in ``groups``: those of
    ``dask.images`` (all when unset) that the spawn page lets the user run with ``profiles``
    (the values file's; none: one profile per image), by the spawner's own visibility rule
    (``Catalogue.visible_images``: ``allowed_groups`` of images, profiles, options, choices)."""
    visible = {img.name for img in Catalogue(catalogue, profiles).visible_images(groups)}
    wanted = dask.get("images")
    return [
        img
        for img in catalogue
        if img.get("name") in visible and (wanted is None or img.get("name") in wanted)
    ]


def user_fields(settings: dict, groups) -> tuple[dask_options.Limits, list[dask_options.Field]]:
    dask = settings["dask"]
    limits = dask_options.limits_for(dask, groups)
    catalogue, profiles = settings.get("images") or [], settings.get("profiles") or []
    images = offered_images(dask, catalogue, groups, profiles)
    return limits, dask_options.option_fields(dask, limits, images)


def image_prefix(settings: dict, name: str | None) -> str:
    for img in settings.get("images") or []:
        if img.get("name") == name and img.get("local_prefix"):
            return img["local_prefix"]
    return settings.get("default_prefix") or sys.prefix


def container_commands(settings: dict, name: str | None, *, gpus: int) -> dict | None:
    """With Slurm for Dask and Apptainer for servers (``settings["apptainer"]``, a batch
    backend's): scheduler and worker commands running ``dask`` inside catalogue image ``name``
    when it has no ``local_prefix``, with the servers' binds and extra arguments (``--nv`` for
    GPU workers). ``None``: no such image; the environment prefix applies."""
    apptainer = settings.get("apptainer")
    if settings.get("backend") != "slurm" or apptainer is None:
        return None
    entry = next((i for i in settings.get("images") or [] if i.get("name") == name), None)
    if entry is None or entry.get("local_prefix") or not entry.get("image"):
        return None
    from afhub.spawner.translations.apptainer import ApptainerSettings, server_command

    app = ApptainerSettings.from_values(apptainer)

    def run(what: str, gpu: bool) -> list[str]:  # apptainer exec ... <image> dask <what>
        return server_command(
            singleuser=[what], wrapper="dask", image=entry["image"], gpu=gpu, apptainer=app
        )

    return {
        "scheduler_cmd": run("scheduler", False),
        "worker_cmd": run("worker", gpus > 0),
        # the job's environment is only what is exported: a PATH that finds apptainer
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "DASK_TEMPORARY_DIRECTORY": "."},
    }


def cluster_options(settings: dict):
    """``c.Backend.cluster_options``: a callable giving each user their own Options."""

    def for_user(user):
        limits, fields = user_fields(settings, user.groups)

        def handler(options, user):
            chosen = {f.name: options[f.name] for f in fields}
            # Slurm jobs of an image without local_prefix run in it with Apptainer (as batch
            # servers do); otherwise local and Slurm jobs run the image's environment prefix
            # (shared with the nodes)
            gpus = chosen.get("worker_gpus") or 0
            container = container_commands(settings, chosen.get("image"), gpus=gpus)
            prefix = None
            if container is None and settings.get("backend", "local") in ("local", "slurm"):
                prefix = image_prefix(settings, chosen.get("image"))
            config = dask_options.cluster_config(
                chosen,
                limits=limits,
                idle_timeout=dask_options.setting(settings["dask"], "idle_timeout"),
                prefix=prefix,
            )
            if container is not None:
                env = {**container.pop("environment"), **config.get("environment", {})}
                config.update(container, environment=env)
            if settings.get("cluster_environment"):
                # the data contract and the token wait (dask_section.cluster_environment)
                env = {**settings["cluster_environment"], **config.get("environment", {})}
                config["environment"] = env
            if settings.get("backend", "local") in ("local", "slurm"):
                # dask-gateway's ClusterConfig counts whole cores (0.5 was a TraitError)
                config["worker_cores"] = max(1, math.ceil(config["worker_cores"]))
            return config

        return gateway_options(fields, handler)

    return for_user
