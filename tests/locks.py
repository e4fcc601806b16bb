"""Reading the locks (``make lock``) and comparing them with what asks for them: pure functions.

- :func:`read_lock`: a compiled lock (``requirements-hub.txt``, ``images/analysis/requirements.txt``)
  as ``{canonical name: version}``; every entry must be ``==``-pinned and carry hashes.
- :func:`read_inputs`: requirement lines of a ``.in`` file (comments and ``-c`` lines skipped).
- :func:`project_requirements`: what ``pyproject.toml`` asks for (dependencies, every extra, the
  build system's requires).
- :func:`disagreements`: the requirements a lock does not satisfy (missing, or pinned outside the
  range), on the platform the locks are for.
- :func:`conflicts`: packages two locks both pin, at different versions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: the platform the locks are compiled for (the Makefile's LOCK_FOR)
LOCK_ENVIRONMENT = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(\[[^\]]*\])?==([^\s;\\]+)")


class LockError(ValueError):
    """A lock that is not a lock: an entry without ``==`` or without hashes."""


def read_lock(text: str) -> dict[str, str]:
    """``{canonical name: version}`` of a lock compiled with ``--generate-hashes``."""
    pins: dict[str, str] = {}
    name = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.startswith((" ", "\t")):
            if line.strip().startswith("--hash=sha256:") and name:
                pins.setdefault(f"{name}#hashed", "1")
            continue
        m = _ENTRY.match(line)
        if not m:
            raise LockError(f"{line!r} is not pinned with ==")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise LockError(f"{name} is pinned twice")
        pins[name] = m.group(3)
    unhashed = sorted(n for n in pins if "#" not in n and f"{n}#hashed" not in pins)
    if unhashed:
        raise LockError(f"no hashes for {', '.join(unhashed)}")
    return {n: v for n, v in pins.items() if "#" not in n}


def read_inputs(text: str) -> list[Requirement]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(Requirement(line))
    return out


def project_requirements(pyproject: str) -> list[Requirement]:
    data = tomllib.loads(pyproject)
    lines = list(data["project"].get("dependencies", []))
    for extra in data["project"].get("optional-dependencies", {}).values():
        lines.extend(extra)
    lines.extend(data.get("build-system", {}).get("requires", []))
    return [Requirement(line) for line in lines]


def disagreements(requirements: Iterable[Requirement], pins: dict[str, str]) -> list[str]:
    """One line per requirement the lock does not satisfy on :data:`LOCK_ENVIRONMENT`."""
    out = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            out.append(f"{req}: not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            out.append(f"{req}: the lock pins {pins[name]}")
    return out


def conflicts(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {n: (a[n], b[n]) for n in sorted(a.keys() & b.keys()) if a[n] != b[n]}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")
