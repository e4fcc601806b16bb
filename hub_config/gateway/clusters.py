"""``OwnedClusters``: what afhub adds to every dask-gateway DB backend (mixed in before it).

``max_clusters`` per user (one creation at a time per user), the owner check (single-user
mode, per-user accounts), stopping the clusters of users whose servers stopped, the dashboard
guard preloaded into schedulers and workers, the address checks of what schedulers report
(``networks.py``), and clusters in the owner's own environment (``user_env.py``). What must
not live here: one backend's specifics (``local.py``, ``slurm.py``).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
from urllib.parse import quote

from afhub.server_ext import dask_options
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.models import ClusterStatus
from traitlets import Float as FloatTrait
from traitlets import List, Unicode, default
from traitlets.config import LoggingConfigurable

from . import user_env
from .networks import LOOPBACK_NETWORKS, WILDCARD_HOSTS, address_problem, reported_address_problems

ACTIVE = [ClusterStatus.PENDING, ClusterStatus.RUNNING]

# the preload that makes schedulers' and workers' HTTP servers answer only the owner's relay
GUARD_PRELOAD = "afhub.server_ext.dask_preload"


def with_guard(cmd: list[str], *, after: int) -> list[str]:
    """Pure: a dask scheduler or worker command (``cmd[:after]`` runs ``dask scheduler`` or
    ``dask worker``) that preloads the dashboard guard."""
    return [*cmd[:after], "--preload", GUARD_PRELOAD, *cmd[after:]]


class OwnedClusters(LoggingConfigurable):
    """``max_clusters`` per user and stopping the clusters of users whose server stopped, for
    any dask-gateway DB backend (mixed in before it)."""

    server_check_interval = FloatTrait(
        10.0,
        config=True,
        help="Seconds between checks that owners still have a running server; clusters of "
        "users without one are stopped. 0 disables the check.",
    )
    account_prefix = Unicode("afhub-", config=True, help="Prefix of the owners' account names.")

    def _owner_settings(self) -> dict:
        return getattr(self.parent, "afhub_settings", None) or {}

    def account(self, username: str) -> str:
        """The owner's system account: the name the spawners use (one mapping everywhere,
        :func:`afhub.spawner.accounts.account_for`). An existing account the owner may not run
        as (root, below ``UID_MIN``, the gateway's own, another hub user's:
        :func:`~afhub.spawner.accounts.account_refusal`) is refused here, before any sudo,
        chown or process as it (a PublicException: the client shows the message)."""
        from afhub.spawner import accounts

        records = bool(self._owner_settings().get("account_records", False))
        name = accounts.account_for(self.account_prefix, username, records=records)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return name  # (no account yet: the callers say so)
        try:
            accounts.check_account(username, pw, records=records)
        except accounts.AccountRefused as e:
            raise PublicException(str(e)) from None
        return name

    def _home_root(self) -> str:
        """The spawner's home root when servers run as the hub's own account (the gateway runs
        in the hub's working directory)."""
        return self._owner_settings().get("home_root") or os.path.join(os.getcwd(), "home")

    def owner_refusal(self, username: str) -> str | None:
        """Why ``username`` may have no cluster at all (``None``: they may). Single-user mode:
        anyone but the one user the local backend serves, and everyone while no one has
        started a server (the spawner's rule, :func:`afhub.spawner.accounts.single_user_refusal`);
        per-user accounts: an owner whose account is refused or does not exist yet."""
        from afhub.spawner import accounts

        settings = self._owner_settings()
        mode = accounts.resolve_mode(settings.get("accounts", "auto"), euid=os.geteuid())
        if mode == "single-user":
            owner = accounts.single_user_owner(self._home_root())
            if owner is None:
                return (
                    "This hub serves one user only (single-user mode) and no one has started "
                    "a server yet: start your server first."
                )
            return accounts.single_user_refusal(owner=owner, user=username)
        if getattr(self, "run_as_owner", False):
            try:
                name = self.account(username)
            except PublicException as e:
                return str(e)
            try:
                pwd.getpwnam(name)
            except KeyError:
                return f"{username} has no system account {name!r} yet; start your server first"
        return None

    async def process_cluster_options(self, user, request):
        """Owners who may not have a cluster (:meth:`owner_refusal`) are refused here, before
        dask-gateway records any cluster (its ``start_cluster`` calls this first). A cluster in
        the owner's own environment (the ``environment`` option) runs its scheduler and workers
        with that environment's Python once :meth:`user_environment` accepted it."""
        message = self.owner_refusal(user.name)
        if message:
            self.log.warning("afhub: refused a cluster for %s: %s", user.name, message)
            raise PublicException(message)
        options, config = await super().process_cluster_options(user, request)
        path = options.get(dask_options.ENVIRONMENT)
        if path:
            prefix = await self.user_environment(user.name, path)
            cmds = dask_options.local_commands(prefix, interpreter=True)
            config.scheduler_cmd = cmds.scheduler_cmd
            config.worker_cmd = cmds.worker_cmd
            config.environment = {**config.environment, **cmds.environment}
        return options, config

    def _refuse_environment(self, username: str, path: str, why: str):
        self.log.warning("afhub: refused environment %s for %s: %s", path, username, why)
        return PublicException(f"{dask_options.ENVIRONMENT}: {why}")

    async def user_environment(self, username: str, path: str) -> str:
        """``path`` if it is the owner's own environment and can run a scheduler and workers;
        else a PublicException saying why (nothing is started). Root resolves nothing through
        the owner's directories by path: the walk uses directory descriptors
        (``server_ext/token.private_dir_problem``), the probe runs as the owner."""
        from afhub.server_ext.token import private_dir_problem
        from afhub.spawner import accounts

        settings = self._owner_settings()
        account = None
        if getattr(self, "run_as_owner", False):
            account = self.account(username)
            try:
                pw = pwd.getpwnam(account)
            except KeyError:
                raise PublicException(
                    f"{username} has no system account yet; start your server first"
                ) from None
            owner, home = pw.pw_uid, pw.pw_dir
            if os.geteuid() != 0:
                raise self._refuse_environment(
                    username, path, "clusters in your own environment need a gateway running "
                    "as root on this facility; pass environment='' for a catalogue image",
                )  # fmt: skip
        else:  # clusters run as the gateway's account, the account user servers run as
            try:
                owner, home = os.geteuid(), accounts.home_path(self._home_root(), username)
            except accounts.AccountRefused as e:
                raise PublicException(str(e)) from None
        problem = user_env.path_problem(path, home=home)
        if problem is None:
            try:
                problem = private_dir_problem(path, owner=owner)
            except FileNotFoundError:
                problem = f"{path} does not exist"
            except OSError as e:
                problem = f"{path}: {e.strerror}"
            if problem:
                problem = f"{path} is not an environment of yours: {problem}"
        if problem:
            raise self._refuse_environment(username, path, problem)
        python = os.path.join(path, "bin", "python")
        found = await self._probe(python, account, home)
        if found is None:
            raise self._refuse_environment(
                username, path, f"{python} did not run (is {path} a Python environment?)"
            )
        facility_python = os.path.join(
            settings.get("default_prefix") or sys.prefix, "bin", "python"
        )
        if getattr(self, "_afhub_facility_versions", None) is None:
            self._afhub_facility_versions = await self._probe(facility_python, account, home) or {}
        from dask_gateway_server import __version__ as gateway_version

        problem = user_env.requirements_problem(
            found, gateway=gateway_version, facility=self._afhub_facility_versions,
            facility_python=facility_python, path=path,
        )  # fmt: skip
        if problem:
            raise self._refuse_environment(username, path, problem)
        return path

    async def _probe(self, python: str, account: str | None, home: str) -> dict | None:
        """:data:`user_env.PROBE` run by ``python`` as ``account`` (``None``: the gateway's own,
        the account clusters run as), in a session of its own, killed after 60 s."""
        from jupyterhub.spawner import set_user_setuid

        preexec = set_user_setuid(account) if account else None
        env = {"PATH": os.path.dirname(python) + ":/usr/local/bin:/usr/bin:/bin", "HOME": home}
        try:
            proc = await asyncio.create_subprocess_exec(
                python, "-c", user_env.PROBE, env=env, preexec_fn=preexec,
                start_new_session=True, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            self.log.warning("afhub: environment probe %s: %s", python, e)
            return None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        if proc.returncode != 0:
            self.log.warning(
                "afhub: environment probe %s exited %s: %s", python, proc.returncode, err[-300:]
            )
            return None
        return user_env.parse_probe(out.decode(errors="replace"))

    allowed_networks = List(
        Unicode(),
        config=True,
        help="Networks (CIDR, e.g. 10.1.0.0/16) the addresses a cluster reports (scheduler, "
        "dashboard, API) must lie in, as IP addresses: the gateway proxies to and connects to "
        "nothing else, and stops a cluster that reports anything else. Default: the backend's "
        "(loopback for local clusters; the Slurm nodes' networks, dask.slurm.node_networks).",
    )

    @default("allowed_networks")
    def _loopback(self):
        return list(LOOPBACK_NETWORKS)

    # the dashboard guard (server_ext/dask_dashboard_guard.py) preloaded into schedulers and
    # workers: their HTTP servers answer only requests carrying the cluster's dashboard secret
    def get_scheduler_command(self, cluster):
        cmd = super().get_scheduler_command(cluster)
        return with_guard(cmd, after=len(cluster.config.scheduler_cmd))

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        cmd = super().get_worker_command(cluster, worker_name, scheduler_address)
        cmd = with_guard(cmd, after=len(cluster.config.worker_cmd))
        if self.default_host not in WILDCARD_HOSTS:  # the worker and its nanny bind there too
            cmd += ["--host", self.default_host]
        return cmd

    # a scheduler reports its addresses in its first heartbeats (whatever its owner's code makes
    # it say): outside the backend's networks, the cluster is stopped before any is stored
    async def on_cluster_heartbeat(self, cluster_name, msg):
        cluster = self.db.get_cluster(cluster_name)
        if (
            cluster is not None
            and cluster.status != JobStatus.RUNNING
            and cluster.target <= JobStatus.RUNNING
        ):
            problems = reported_address_problems(msg, self.allowed_networks)
            if problems:
                self.log.warning(
                    "Stopping cluster %s of %s: %s", cluster_name, cluster.username, problems[0]
                )
                await self.stop_cluster(cluster_name, failed=True)
                return
        await super().on_cluster_heartbeat(cluster_name, msg)

    # dashboards: no public PATH route (anyone who learnt a cluster's name could open it); the
    # owner's server proxies the dashboard instead. Scheduler connections keep their SNI route,
    # to an address in the backend's networks only.
    async def _check_cluster_proxied(self, cluster):
        if not cluster.added_to_proxies:
            problem = address_problem("scheduler", cluster.scheduler_address, self.allowed_networks)
            if problem:
                self.log.warning("Stopping cluster %s: %s", cluster.name, problem)
                await self.stop_cluster(cluster.name, failed=True)
                return
            self.log.info("Adding cluster %s scheduler route to the proxy", cluster.name)
            await self.proxy.add_route(
                kind="SNI", sni=cluster.name, target=cluster.scheduler_address
            )
            cluster.added_to_proxies = True

    # max_clusters: enforced here, where every creation passes. One creation at a time per
    # user: the count and the creation it allows are one step, whatever the backend awaits in
    # between (Slurm's `sbatch --test-only` of the options); counted before an await, parallel
    # creates all saw the same count and all went through.
    async def start_cluster(self, user, cluster_options):
        locks = self.__dict__.setdefault("_afhub_create_locks", {})
        entry = locks.setdefault(user.name, [asyncio.Lock(), 0])  # [lock, callers holding it]
        entry[1] += 1
        try:
            async with entry[0]:
                settings = self.parent.afhub_settings
                limits = dask_options.limits_for(settings["dask"], user.groups)
                active = self.db.list_clusters(username=user.name, statuses=ACTIVE)
                if len(active) >= limits.max_clusters:
                    raise PublicException(
                        dask_options.MAX_CLUSTERS_MESSAGE.format(
                            active=len(active), limit=limits.max_clusters
                        )
                    )
                return await super().start_cluster(user, cluster_options)
        finally:
            entry[1] -= 1
            if not entry[1]:
                locks.pop(user.name, None)

    async def setup(self, app):
        await super().setup(app)
        self._owner_task = None
        if self.server_check_interval > 0 and os.environ.get("JUPYTERHUB_API_URL"):
            self._owner_task = asyncio.ensure_future(self._owner_loop())

    async def cleanup(self):
        task = getattr(self, "_owner_task", None)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await super().cleanup()

    async def _owner_loop(self):
        import aiohttp

        api = os.environ["JUPYTERHUB_API_URL"].rstrip("/")
        headers = {"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            while True:
                await asyncio.sleep(self.server_check_interval)
                try:
                    await self.stop_orphaned(session, api)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the hub may be restarting; try again next round
                    self.log.warning("afhub: could not check owners' servers: %s", e)

    async def stop_orphaned(self, session, api: str) -> None:
        owners = {c.username for c in self.db.list_clusters(statuses=ACTIVE)}
        for name in sorted(owners):
            if ":" in name:  # services own no server
                continue
            async with session.get(f"{api}/users/{quote(name, safe='')}") as resp:
                if resp.status == 404:
                    running = False
                elif resp.status == 200:
                    running = bool((await resp.json()).get("servers"))
                else:
                    self.log.warning("afhub: hub answered %s for user %s", resp.status, name)
                    continue
            if running:
                continue
            for c in self.db.list_clusters(username=name, statuses=ACTIVE):
                self.log.info("Stopping cluster %s: %s has no running server", c.name, name)
                await self.stop_cluster(c.name)
