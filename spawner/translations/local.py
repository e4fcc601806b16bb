"""``local`` backend translation: a resolved profile -> environment prefix and env vars.

Pure: the machine's architecture and the default prefix are arguments. The local backend runs
servers as processes here, so it cannot run other architectures or container images, and it
does not enforce CPU/memory limits or attach GPUs: those are described to the server through
``AFHUB_*`` (and JupyterHub's ``CPU_LIMIT``/``MEM_LIMIT``) variables only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from afhub.server_ext.contract import SESSION

from ..profiles import OptionsError, Resolved
from .units import parse_bytes

MACHINE_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


@dataclass(frozen=True)
class LocalConfig:
    prefix: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cpu_limit: float | None = None
    mem_limit: int | None = None


def local_config(resolved: Resolved, *, default_prefix: str, machine_arch: str) -> LocalConfig:
    """Settings for one local start; raise :class:`OptionsError` for what cannot run here."""
    image = resolved.image
    if image is not None and image.custom:
        raise OptionsError(
            resolved.fields.get("image", "profile"),
            "custom images need a container backend; this facility runs servers as local processes",
        )
    here = MACHINE_ARCH.get(machine_arch, machine_arch)
    if resolved.arch and resolved.arch != here:
        raise OptionsError(
            resolved.fields.get("arch", "profile"),
            f"this facility's machine is {here}; {resolved.arch} needs another backend",
        )
    prefix = (image.local_prefix if image is not None else None) or default_prefix
    r = resolved.resources
    env = resolved.env()
    if not resolved.arch:
        env[SESSION["arch"]] = here
    return LocalConfig(
        prefix=prefix,
        cmd=[os.path.join(prefix, "bin", "jupyterhub-singleuser")],
        env=env,
        cpu_limit=r.cpu,
        mem_limit=parse_bytes(r.memory) if r.memory else None,
    )
