"""Values that may reach a batch script, and the checks they pass first.

Pure. batchspawner formats its ``req_*`` values into the operator's script template, so every
value afhub hands it is checked here against a pattern that allows no newline, no ``#``, no
quote and no shell metacharacter (the Slurm ``constraint`` also allows ``&|`` and brackets,
which only ever land in an ``#SBATCH`` comment line; the HTCondor ``requirements`` is a one-line
ClassAd expression). A value that fails raises :class:`~afhub.spawner.profiles.OptionsError`
naming the ``user_options`` field it came from, which the hub turns into a 400 before anything
is submitted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..profiles import OptionsError, Resolved

NAME = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
ACCOUNT = re.compile(r"^[A-Za-z0-9_.:@+-]+$")
RUNTIME = re.compile(r"^(?:([0-9]+)-)?([0-9]{1,2}):([0-9]{2}):([0-9]{2})$")
CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,:&|*\[\]()-]+$")
# a ClassAd expression on one line: no control characters, no submit-language macros
CLASSAD = re.compile(r"^[^\x00-\x1f\x7f$]+$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9 _.:()/+-]+$")

PATTERNS: dict[str, tuple[re.Pattern, str]] = {
    "partition": (NAME, "letters, digits and ._- (comma-separated)"),
    "qos": (NAME, "letters, digits and ._-"),
    "reservation": (NAME, "letters, digits and ._-"),
    "accounting_group": (NAME, "letters, digits and ._-"),
    "account": (ACCOUNT, "letters, digits and ._:@+-"),
    "runtime": (RUNTIME, "a wall time [D-]HH:MM:SS"),
    "constraint": (CONSTRAINT, "node features with & | , [ ] ( ) *"),
    "requirements": (CLASSAD, "a one-line ClassAd expression without $"),
}
SLURM_KEYS = ("partition", "account", "qos", "reservation", "constraint", "runtime")
HTCONDOR_KEYS = ("runtime", "requirements", "accounting_group")
#: Wall time of a server job when neither the operator (``backend.<slurm|htcondor>.runtime``)
#: nor the profile gives one: the one definition, used by the settings below and the spawners'
#: ``req_runtime`` trait.
DEFAULT_RUNTIME = "08:00:00"


def check_value(key: str, value: object, field: str) -> str:
    """``value`` if it fits ``key``'s pattern; OptionsError naming ``field`` otherwise."""
    pattern, what = PATTERNS[key]
    if not isinstance(value, str) or not pattern.match(value) or value != value.strip():
        raise OptionsError(field, f"{key} {value!r} is not allowed here (expected {what})")
    if key == "runtime":
        runtime_seconds(value, field)
    return value


def runtime_seconds(text: str, field: str = "runtime") -> int:
    """``"1-02:03:04"`` -> 93784; minutes and seconds below 60."""
    m = RUNTIME.match(text)
    if not m:
        raise ValueError(f"not a wall time: {text!r}")
    days, h, mnt, s = (int(g) if g else 0 for g in m.groups())
    if mnt > 59 or s > 59:
        raise OptionsError(field, f"run time {text!r}: minutes and seconds must be below 60")
    return ((days * 24 + h) * 60 + mnt) * 60 + s


def mebibytes(n_bytes: int) -> int:
    """Bytes rounded up to whole MiB (Slurm ``--mem`` and HTCondor ``request_memory`` units)."""
    return max(1, math.ceil(n_bytes / 2**20))


def whole_cpus(cpu: float) -> int:
    return max(1, math.ceil(cpu - 1e-9))


@dataclass(frozen=True)
class BatchRequest:
    """One start on a batch backend.

    ``req``: batchspawner ``req_<name>`` values (the template variables); ``cmd``: the server
    argv run in the job; ``env``: extra job environment (``AFHUB_*``).
    """

    req: Mapping[str, str]
    cmd: tuple[str, ...]
    env: Mapping[str, str]


def batch_settings(resolved: Resolved, keys: tuple[str, ...]) -> dict[str, str]:
    """The profile's ``batch`` values that apply to this backend.

    Every value is checked, also those of keys this backend does not use (they are ignored
    afterwards): a value that could change a script is refused on every backend alike.
    """
    out = {}
    for key, value in resolved.batch.items():
        field = resolved.fields.get("batch." + key, "profile")
        if key not in PATTERNS:
            raise OptionsError(field, f"unknown batch setting {key!r}")
        checked = check_value(key, value, field)
        if key in keys:
            out[key] = checked
    return out
