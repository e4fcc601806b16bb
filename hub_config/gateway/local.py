"""``AfhubLocalBackend``: schedulers and workers as local processes of the owner's account.

What must not live here: how the working directories are made (``workdir.py``), what every
backend shares (``clusters.py``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.local import LocalBackend, getpwnam
from traitlets import Bool, default

from . import workdir as workdirs
from .clusters import OwnedClusters


class AfhubLocalBackend(OwnedClusters, LocalBackend):
    """Schedulers and workers as local processes in the image's environment prefix.

    When user servers run as per-user system accounts (``backend.local.accounts`` resolving to
    ``system``: the hub is root), ``run_as_owner`` is true and each cluster runs as its owner's
    account (``<account_prefix><hub name>``, the same name the spawner uses), in a working
    directory only that account can read. Otherwise (a non-root hub serving one user, or the
    operator's explicit ``shared-uid``) they run as the gateway's account, like dask-gateway's
    ``UnsafeLocalBackend``: the same account the servers run as.
    """

    run_as_owner = Bool(False, config=True, help="Run clusters as the owner's system account.")

    def _owned(self, cluster):
        """``cluster`` seen with its owner's account name (what LocalBackend looks up)."""

        class Owned:
            def __init__(self, c, name):
                self._c, self.username = c, name

            def __getattr__(self, attr):
                return getattr(self._c, attr)

        return Owned(cluster, self.account(cluster.username))

    @default("clusters_directory")
    def _default_clusters_directory(self):
        # as root, a root-owned parent the owners cannot write (not the sticky /tmp)
        return workdirs.CLUSTERS_DIRECTORY if os.geteuid() == 0 else ""

    def setup_working_directory(self, cluster):
        """The cluster's private working directory (0700: ``.certs/`` with the TLS cert and key
        0600, ``logs/``), owned by the account the cluster runs as.

        In ``clusters_directory`` (root's, 0711, checked on every start, created if missing;
        a gateway not running as root without one uses a ``mkdtemp`` directory of its own).
        Everything is made through directory descriptors and handed to the owner while the
        directory is still root's, the top last (``workdirs.build_workdir``): no path a
        cluster owner can change is followed as root."""
        owner = None
        if self.run_as_owner:
            try:
                pw = getpwnam(self.account(cluster.username))
            except KeyError:
                raise PublicException(
                    f"{cluster.username} has no system account yet; start your server first"
                ) from None
            owner = (pw.pw_uid, pw.pw_gid)
        exists = False
        try:
            if self.clusters_directory:
                parent, name = self.clusters_directory, cluster.name
                root_fd = workdirs.open_clusters_root(parent, searchable=self.run_as_owner)
            elif os.geteuid() == 0:
                raise workdirs.WorkdirError(
                    "AfhubLocalBackend.clusters_directory is empty: a gateway running as root "
                    "needs a root-owned directory for the clusters (not /tmp)"
                )
            else:  # the gateway's own private directory; clusters run as the gateway's account
                parent, name = os.path.split(tempfile.mkdtemp(prefix="dask", suffix=cluster.name))
                root_fd, exists = os.open(parent, workdirs.DIR_FLAGS), True
            try:
                workdirs.build_workdir(
                    root_fd, name, cert=cluster.tls_cert, key=cluster.tls_key, owner=owner,
                    exists=exists,
                )  # fmt: skip
            finally:
                os.close(root_fd)
        except (workdirs.WorkdirError, OSError) as e:
            self.log.error("afhub: cluster %s: %s", cluster.name, e)
            raise PublicException(
                "The cluster's working directory could not be prepared; please tell the "
                "facility admins"
            ) from None
        workdir = os.path.join(parent, name)
        self.log.debug("Working directory %s for cluster %s created", workdir, cluster.name)
        return workdir

    def cleanup_working_directory(self, workdir):
        """Remove ``workdir`` through a descriptor of its parent (links are removed, never
        followed; the parent is the clusters directory or, for a directory made by ``mkdtemp``,
        ``/tmp``)."""
        parent, name = os.path.split(os.path.normpath(workdir))
        try:
            if self.clusters_directory and parent == os.path.normpath(self.clusters_directory):
                fd = workdirs.open_clusters_root(parent, create=False)
            else:
                fd = os.open(parent, workdirs.DIR_FLAGS)
            try:
                workdirs.remove_workdir(fd, name)
            finally:
                os.close(fd)
            self.log.debug("Working directory %s removed", workdir)
        except FileNotFoundError:
            pass
        except (workdirs.WorkdirError, OSError) as e:
            self.log.warning("afhub: could not remove working directory %s: %s", workdir, e)

    async def start_process(self, cluster, cmd, env, name):
        """dask-gateway's, except that ``logs/<name>.log`` is created by the child once it runs
        as the cluster's account in the cluster's directory (``workdirs.open_log``), never
        by the gateway: a ``logs`` the owner replaced by a link is not followed."""
        become_owner = self.make_preexec_fn(cluster)
        log_name = name + ".log"

        def preexec():  # pragma: no cover - runs in the child
            become_owner()
            workdirs.open_log(log_name)

        proc = await asyncio.create_subprocess_exec(
            *cmd, preexec_fn=preexec, start_new_session=True, env=env
        )
        return proc.pid

    def get_env(self, cluster):
        env = super().get_env(cluster)
        if self.run_as_owner:
            env["USER"] = self.account(cluster.username)
        return env

    def make_preexec_fn(self, cluster):
        if self.run_as_owner:  # setgid, setgroups, setuid, then chdir to the cluster's directory
            return super().make_preexec_fn(self._owned(cluster))
        workdir = cluster.state["workdir"]

        def preexec():  # pragma: no cover - runs in the child
            os.chdir(workdir)

        return preexec

    def set_file_permissions(self, paths, username):
        raise NotImplementedError("afhub never chowns by path: see setup_working_directory")
