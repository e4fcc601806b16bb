"""Quantities in the values file: ``8G`` (10^9), ``16Gi`` (2^30), ``512M``, plain bytes."""

from __future__ import annotations

import re

_FACTORS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?)?$")


def parse_bytes(text: str) -> int:
    """Kubernetes quantity semantics: ``parse_bytes("1.5Gi") == 1610612736``."""
    m = _RE.match(str(text).strip())
    if not m:
        raise ValueError(f"not a byte size: {text!r} (examples: 512M, 8G, 16Gi)")
    return int(float(m.group(1)) * _FACTORS[m.group(2) or ""])
