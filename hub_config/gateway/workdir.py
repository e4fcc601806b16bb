"""Working directories of the local Dask backend's clusters, made by a gateway that may be root.

What lives here: opening the directory that holds every cluster's working directory
(:func:`open_clusters_root`), building one cluster's directory (:func:`build_workdir`), the
log file a scheduler or worker process opens for itself (:func:`open_log`, in the child, after
it became the cluster's account) and removal (:func:`remove_workdir`). What must not: choosing
accounts, commands or environments (``local.AfhubLocalBackend`` does).

The rule (docs/developers.md, "Acting as root on a user's behalf"): root never resolves a path
through a directory a user can write. The clusters' parent belongs to root and nobody else may
write it (not even sticky), so an owner cannot rename or swap their cluster's directory. Inside
it everything is made relative to directory descriptors (``mkdir``/``open`` with ``dir_fd`` and
``O_NOFOLLOW``) and handed over with ``fchown`` while the cluster's directory is still root's
and 0700; its top goes to the owner last. Log files are created by the child as the owner.
"""

from __future__ import annotations

import os
import shutil
import stat

# the default parent of the clusters' directories when the gateway runs as root
CLUSTERS_DIRECTORY = "/var/lib/afhub/dask-clusters"
CERTS, LOGS = ".certs", "logs"
CERT, KEY = "dask.crt", "dask.pem"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkdirError(RuntimeError):
    """A cluster directory cannot be made or used safely (the message names the path)."""


def open_clusters_root(path: str, *, create: bool = True, searchable: bool = False) -> int:
    """A descriptor of ``path``, the directory holding the clusters' working directories.

    Walked from ``/`` one component at a time, never following a symlink. Every component must
    belong to root (or to the gateway's own account) and not be writable by group or others; an
    ancestor may be world-writable only if sticky (others cannot rename root's entries in
    ``/tmp``); ``path`` itself must be the gateway's. Missing components are created 0711 (others
    may enter, not list or write). ``searchable``: the clusters' accounts must get through every
    component (others' search bit).
    """
    if not os.path.isabs(path) or any(n in (".", "..") for n in path.split("/")):
        raise WorkdirError(f"clusters directory {path!r}: must be an absolute path without '..'")
    names = [n for n in path.split("/") if n]
    me = os.geteuid()
    fd = os.open("/", DIR_FLAGS)
    where = ""
    try:
        for i, name in enumerate(names):
            where += "/" + name
            last = i == len(names) - 1
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o711, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
                if os.fstat(nfd).st_uid == me:
                    os.fchmod(nfd, 0o711)  # whatever the umask
            except (NotADirectoryError, OSError) as e:
                raise WorkdirError(
                    f"clusters directory {path}: {where} is a symlink or not a directory "
                    f"({e.strerror})"
                ) from None
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid not in (0, me) or (last and st.st_uid != me):
                raise WorkdirError(
                    f"clusters directory {path}: {where} belongs to uid {st.st_uid}, "
                    f"not to {'the gateway' if last else 'root'}"
                )
            if mode & 0o022 and (last or not mode & stat.S_ISVTX):
                raise WorkdirError(
                    f"clusters directory {path}: {where} is writable by others (mode "
                    f"{oct(mode)}); it must be 0711"
                )
            if searchable and not mode & 0o001:
                raise WorkdirError(
                    f"clusters directory {path}: {where} (mode {oct(mode)}) cannot be entered "
                    "by the clusters' accounts; it must be 0711"
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None) -> None:
    fd = os.open(name, NEW_FILE, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def build_workdir(
    root_fd: int,
    name: str,
    *,
    cert: bytes,
    key: bytes,
    owner: tuple[int, int] | None,
    exists: bool = False,
) -> None:
    """Make cluster directory ``name`` under ``root_fd``: ``.certs/dask.crt`` and
    ``.certs/dask.pem`` (0600), ``logs/`` (directories 0700), all ``fchown``-ed to ``owner``
    (``(uid, gid)``; ``None``: they stay the gateway's) before the top directory, which is last.

    ``exists``: the top directory was just made by the gateway (``mkdtemp``), else it is created
    here and must not exist. On any failure what was made is removed and :class:`WorkdirError`
    names why.
    """
    if not exists:
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
        except FileExistsError:
            raise WorkdirError(f"cluster directory {name} exists already") from None
    opened: list[int] = []

    def opendir(n: str, fd: int) -> int:
        opened.append(os.open(n, DIR_FLAGS, dir_fd=fd))
        return opened[-1]

    try:
        top = opendir(name, root_fd)
        st = os.fstat(top)
        if st.st_uid != os.geteuid() or os.listdir(top):
            raise WorkdirError(f"cluster directory {name} is not the empty one just made")
        os.fchmod(top, 0o700)
        for sub in (CERTS, LOGS):
            os.mkdir(sub, 0o700, dir_fd=top)
        certs = opendir(CERTS, top)
        for fname, data in ((CERT, cert), (KEY, key)):
            _write(certs, fname, data, owner)
        if owner is not None:
            os.fchown(certs, *owner)
            os.fchown(opendir(LOGS, top), *owner)
            os.fchown(top, *owner)  # last: until now the owner could not enter
    except BaseException as e:
        remove_workdir(root_fd, name)
        if isinstance(e, OSError):
            raise WorkdirError(f"cluster directory {name}: {e.strerror}") from None
        raise
    finally:
        for fd in opened:
            os.close(fd)


def remove_workdir(root_fd: int, name: str) -> None:
    """Remove cluster directory ``name`` under ``root_fd`` and what is in it, through directory
    descriptors (``shutil.rmtree`` with ``dir_fd``: a symlink is removed, never followed)."""
    try:
        shutil.rmtree(name, dir_fd=root_fd)
    except FileNotFoundError:
        pass
    except OSError:
        # a symlink where the directory was (rmtree refuses to start at one): remove the link
        st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=root_fd)
        else:
            raise


def open_log(name: str) -> None:
    """In the child, once it runs as the cluster's account in the cluster's directory: create
    ``logs/<name>`` (``O_EXCL``, no symlink followed at ``logs`` or at the file) and make it
    the process's stdout and stderr."""
    logs = os.open(LOGS, DIR_FLAGS)
    try:
        fd = os.open(name, NEW_FILE & ~os.O_CLOEXEC, 0o600, dir_fd=logs)
    finally:
        os.close(logs)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if fd > 2:
        os.close(fd)
