"""``slurm`` backend translation: a resolved profile -> batchspawner ``SlurmSpawner`` requests.

Pure: the operator's settings (``backend.slurm``) are a :class:`SlurmSettings`; the result is a
:class:`~.batchfields.BatchRequest` whose ``req`` keys are batchspawner's template variables
(``partition, account, qos, reservation, runtime, memory, nprocs, gres, options``) and whose
``cmd`` is the server command (Apptainer for images, see :mod:`.apptainer`). A profile's
or choice's ``batch`` values replace the backend defaults; every value is checked
(:mod:`.batchfields`) before it can reach the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..profiles import OptionsError, Resolved
from .apptainer import ApptainerSettings, profile_command
from .batchfields import (
    DEFAULT_RUNTIME,
    NAME,
    SLURM_KEYS,
    BatchRequest,
    batch_settings,
    mebibytes,
    whole_cpus,
)
from .units import parse_bytes


@dataclass(frozen=True)
class SlurmSettings:
    """The values file's ``backend.slurm`` (defaults as documented there)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    runtime: str = DEFAULT_RUNTIME
    gpu_types: Mapping[str, str] = field(default_factory=dict)
    arch_features: Mapping[str, str] = field(default_factory=dict)
    environment: str | None = None
    apptainer: ApptainerSettings = ApptainerSettings()


def gres(count: int, gpu_type: str | None, gpu_types: Mapping[str, str], field: str) -> str:
    """``--gres`` value: ``gpu:2`` or ``gpu:<slurm type>:2``."""
    if not count:
        return ""
    if not gpu_type:
        return f"gpu:{count}"
    name = gpu_types.get(gpu_type, gpu_type)
    if not NAME.match(name) or "," in name:
        raise OptionsError(field, f"GPU type {gpu_type!r} cannot be requested from Slurm")
    return f"gpu:{name}:{count}"


def slurm_request(
    resolved: Resolved,
    *,
    settings: SlurmSettings = SlurmSettings(),
    singleuser: Sequence[str] = ("jupyterhub-singleuser",),
) -> BatchRequest:
    """batchspawner requests for one start; OptionsError (-> HTTP 400) for unusable values."""
    r = resolved.resources
    chosen = batch_settings(resolved, SLURM_KEYS)
    req: dict[str, str] = {
        "partition": chosen.get("partition", settings.partition),
        "account": chosen.get("account", settings.account),
        "qos": chosen.get("qos", settings.qos),
        "reservation": chosen.get("reservation", ""),
        "runtime": chosen.get("runtime", settings.runtime),
        "nprocs": str(whole_cpus(r.cpu)) if r.cpu is not None else "",
        "memory": f"{mebibytes(parse_bytes(r.memory))}M" if r.memory else "",
        "gres": gres(r.gpu_count, r.gpu_type, settings.gpu_types, "profile"),
    }
    constraints = []
    if resolved.arch and resolved.arch in settings.arch_features:
        constraints.append(settings.arch_features[resolved.arch])
    if "constraint" in chosen:
        constraints.append(chosen["constraint"])
    options = []
    if constraints:
        joined = "&".join(f"({c})" if "|" in c else c for c in constraints)
        options.append(f"--constraint={joined}")
    req["options"] = " ".join(options)
    cmd = profile_command(
        resolved,
        apptainer=settings.apptainer,
        prefix=settings.environment,
        singleuser=singleuser,
    )
    return BatchRequest(req=req, cmd=tuple(cmd), env=resolved.env())
