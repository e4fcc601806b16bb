"""``htcondor`` backend translation: a resolved profile -> batchspawner ``CondorSpawner`` requests.

Pure: the operator's settings (``backend.htcondor``) are a :class:`CondorSettings`; the result
is a :class:`~.batchfields.BatchRequest` whose ``req`` holds ``nprocs`` (``RequestCpus``),
``memory`` (``RequestMemory``, MiB), ``runtime`` and ``options``: the extra submit-description
lines afhub writes itself, one command per line, built only from checked values:

- ``request_gpus = <n>`` and, with a GPU type, ``require_gpus = DeviceName == "<device>"``;
- ``requirements = (Arch == "X86_64") && (<backend requirements>) && (<profile requirements>)``;
- ``accounting_group`` / ``accounting_group_user``;
- ``allowed_job_duration = <seconds>`` (the wall time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..profiles import OptionsError, Resolved
from .apptainer import ApptainerSettings, profile_command
from .batchfields import (
    DEFAULT_RUNTIME,
    DEVICE_NAME,
    HTCONDOR_KEYS,
    NAME,
    BatchRequest,
    batch_settings,
    check_value,
    mebibytes,
    runtime_seconds,
    whole_cpus,
)
from .units import parse_bytes

# values of the machine ClassAd attribute ``Arch``
CONDOR_ARCH = {"x86_64": "X86_64", "aarch64": "aarch64"}


@dataclass(frozen=True)
class CondorSettings:
    """The values file's ``backend.htcondor`` (defaults as documented there)."""

    requirements: str = ""
    accounting_group: str = ""
    runtime: str = DEFAULT_RUNTIME
    cpu: int = 1
    memory: str = "2Gi"
    gpu_types: Mapping[str, str] = field(default_factory=dict)
    environment: str | None = None
    apptainer: ApptainerSettings = ApptainerSettings()


def condor_request(
    resolved: Resolved,
    *,
    username: str,
    settings: CondorSettings = CondorSettings(),
    singleuser: Sequence[str] = ("jupyterhub-singleuser",),
) -> BatchRequest:
    """batchspawner requests for one start; OptionsError (-> HTTP 400) for unusable values."""
    r = resolved.resources
    chosen = batch_settings(resolved, HTCONDOR_KEYS)
    lines: list[str] = []
    if r.gpu_count:
        lines.append(f"request_gpus = {r.gpu_count}")
        if r.gpu_type:
            device = settings.gpu_types.get(r.gpu_type, r.gpu_type)
            if not DEVICE_NAME.match(device):
                raise OptionsError("profile", f"GPU type {r.gpu_type!r} cannot be requested")
            lines.append(f'require_gpus = DeviceName == "{device}"')
    reqs = []
    if resolved.arch:
        reqs.append(f'Arch == "{CONDOR_ARCH[resolved.arch]}"')
    if settings.requirements:
        reqs.append(check_value("requirements", settings.requirements, "backend.htcondor"))
    if "requirements" in chosen:
        reqs.append(chosen["requirements"])
    if reqs:
        lines.append("requirements = " + " && ".join(f"({x})" for x in reqs))
    group = chosen.get("accounting_group", settings.accounting_group)
    if group:
        if not NAME.match(username):
            raise OptionsError("user", f"{username!r} cannot be an accounting group user")
        lines.append(f"accounting_group = {group}")
        lines.append(f"accounting_group_user = {username}")
    runtime = chosen.get("runtime", settings.runtime)
    if runtime:
        lines.append(f"allowed_job_duration = {runtime_seconds(runtime)}")
    cpu = whole_cpus(r.cpu) if r.cpu is not None else settings.cpu
    memory = mebibytes(parse_bytes(r.memory or settings.memory))
    cmd = profile_command(
        resolved,
        apptainer=settings.apptainer,
        prefix=settings.environment,
        singleuser=singleuser,
    )
    req = {
        "nprocs": str(cpu),
        "memory": str(memory),
        "runtime": runtime,
        "options": "\n".join(lines),
    }
    return BatchRequest(req=req, cmd=tuple(cmd), env=resolved.env())
