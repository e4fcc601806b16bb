"""First-start files for a user's home: the sample notebooks in ``samples/``.

What lives here: :func:`seed_home`, which copies each sample into a home directory once (a marker
file remembers it was done, so a notebook the user deleted or renamed is not brought back), owned
by the user. What must not: deciding where homes are or creating accounts (the spawner does).

The hub may run as root while the home belongs to the user, who controls its contents; so every
file is created relative to an open descriptor of the home with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` (a symlink planted under a sample's name is never followed, an existing file is
never overwritten) and then ``fchown``-ed to the user.
"""

from __future__ import annotations

import logging
import os

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
MARKER = ".afhub-samples"

log = logging.getLogger(__name__)


def samples(samples_dir: str = SAMPLES_DIR) -> list[str]:
    """File names of the shipped samples, sorted."""
    try:
        return sorted(n for n in os.listdir(samples_dir) if n.endswith(".ipynb"))
    except FileNotFoundError:
        return []


def _create(dir_fd: int, name: str, data: bytes, uid: int | None, gid: int | None) -> bool:
    """Create ``name`` under ``dir_fd`` with ``data``; False if something is already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    except FileExistsError:
        return False
    try:
        if uid is not None:
            os.fchown(fd, uid, -1 if gid is None else gid)
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def seed_home(
    home: str, *, uid: int | None = None, gid: int | None = None, samples_dir: str = SAMPLES_DIR
) -> list[str]:
    """Copy the samples into ``home`` unless that was done before; returns the names written.

    ``uid``/``gid``: owner of the new files (when the hub runs as root and the server as the
    user's account); None keeps the hub's. Never raises for a home it cannot write: a missing
    sample is not worth a failed start, so problems are logged and nothing is written.
    """
    written: list[str] = []
    try:
        dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        log.warning("Not placing sample notebooks in %s: %s", home, e.strerror)
        return written
    try:
        if not _create(dir_fd, MARKER, b"afhub placed its sample notebooks here once\n", uid, gid):
            return written
        for name in samples(samples_dir):
            with open(os.path.join(samples_dir, name), "rb") as f:
                data = f.read()
            if _create(dir_fd, name, data, uid, gid):
                written.append(name)
    except OSError as e:
        log.warning("Could not place all sample notebooks in %s: %s", home, e.strerror)
    finally:
        os.close(dir_fd)
    if written:
        log.info("Placed sample notebooks %s in %s", ", ".join(written), home)
    return written
