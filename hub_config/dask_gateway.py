"""The Dask Gateway process: ``python -m afhub.hub_config.dask_gateway`` (a hub-managed service).

The hub starts it with ``AFHUB_DASK_SETTINGS`` (JSON from ``dask.py``: the values' ``dask``
section, the image catalogue, the server environment prefix, ports, the data dir) and its own
``JUPYTERHUB_API_*``. Here that becomes dask-gateway-server configuration:

- ``AfhubGatewayAuthenticator``: JupyterHub auth with service access scopes; a token whose
  model hides the user's groups gets them from the hub with the gateway's own token (groups
  decide the limits);
- ``cluster_options(settings)``: the options handler built from ``dask_options`` (per-group
  limits, images the user may use), enforced here, whatever the client sends;
- ``AfhubSlurmBackend``: schedulers and workers as Slurm jobs of the owner's system account
  (sudo + dask-gateway's launcher, private staging directory, secrets only in the exported
  environment);
- ``AfhubLocalBackend``: the local backend running schedulers and workers as processes in the
  chosen image's environment prefix (the user's server environment), refusing clusters beyond
  ``max_clusters``, and stopping the clusters of users whose servers have stopped;
- dashboards for their owner only: the gateway's proxy gets no public route to a dashboard (only
  the schedulers' TLS route); ``GET {prefix}/api/v1/afhub/clusters/<name>/dashboard`` tells the
  owner (their server, which proxies it, ``server_ext/dask_dashboard.py``) where it listens and
  the secret without which its scheduler's HTTP server answers nothing (the preload
  ``server_ext/dask_preload.py``, ``dask_dashboard_guard.py``);
- addresses clusters report (scheduler, API, dashboard) are used only inside the backend's
  ``allowed_networks`` (loopback for local clusters, ``dask.slurm.node_networks``): a
  scheduler cannot point the gateway's proxy or API calls at another service.

Operators may add raw dask-gateway configuration in ``<data dir>/dask_gateway_config.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import pwd
import shlex
import socket
import sys
import tempfile
from urllib.parse import quote, urlsplit

from aiohttp import web
from dask_gateway_server.app import DaskGateway
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.jobqueue.slurm import SlurmBackend, slurm_format_memory
from dask_gateway_server.backends.local import LocalBackend, getpwnam
from dask_gateway_server.models import ClusterStatus
from dask_gateway_server.options import Float, Integer, Options, Select
from dask_gateway_server.routes import api_handler
from traitlets import Bool, List, Unicode, default
from traitlets import Float as FloatTrait
from traitlets.config import Config, LoggingConfigurable

from . import dask_options, dask_workdir
from .dask import SETTINGS_ENV
from .secrets import ensure_generated

ACTIVE = [ClusterStatus.PENDING, ClusterStatus.RUNNING]


def settings_from_env(environ=None) -> dict:
    env = os.environ if environ is None else environ
    try:
        return json.loads(env[SETTINGS_ENV])
    except (KeyError, ValueError) as e:
        raise SystemExit(
            f"afhub dask gateway: {SETTINGS_ENV} is missing or not JSON ({e})"
        ) from None


# -- options ---------------------------------------------------------------------------------


def _checked(cls):
    """A dask-gateway option field whose validation is our Field.check (messages name the
    option and the range allowed for this user)."""

    class Checked(cls):
        def __init__(self, spec: dask_options.Field, **kw):
            self.spec = spec  # before the base validates default, min and max
            super().__init__(spec.name, default=spec.default, label=spec.label, **kw)

        def validate(self, x):
            try:
                return self.spec.check(x)
            except dask_options.DaskOptionError as e:
                raise ValueError(str(e)) from None

    Checked.__name__ = f"Checked{cls.__name__}"
    return Checked


_FIELD_CLASSES = {"float": _checked(Float), "int": _checked(Integer), "select": _checked(Select)}


def user_fields(settings: dict, groups) -> tuple[dask_options.Limits, list[dask_options.Field]]:
    dask = settings["dask"]
    limits = dask_options.limits_for(dask, groups)
    catalogue, profiles = settings.get("images") or [], settings.get("profiles") or []
    images = dask_options.offered_images(dask, catalogue, groups, profiles)
    return limits, dask_options.option_fields(dask, limits, images)


def image_prefix(settings: dict, name: str | None) -> str:
    for img in settings.get("images") or []:
        if img.get("name") == name and img.get("local_prefix"):
            return img["local_prefix"]
    return settings.get("default_prefix") or sys.prefix


def container_commands(settings: dict, name: str | None, *, gpus: int) -> dict | None:
    """With Slurm for Dask and Apptainer for servers (``settings["apptainer"]``, a batch
    backend's): scheduler and worker commands running ``dask`` inside catalogue image ``name``
    when it has no ``local_prefix``, with the servers' binds and extra arguments (``--nv`` for
    GPU workers). ``None``: no such image; the environment prefix applies."""
    apptainer = settings.get("apptainer")
    if settings.get("backend") != "slurm" or apptainer is None:
        return None
    entry = next((i for i in settings.get("images") or [] if i.get("name") == name), None)
    if entry is None or entry.get("local_prefix") or not entry.get("image"):
        return None
    from afhub.spawner.translations.apptainer import ApptainerSettings, server_command

    app = ApptainerSettings.from_values(apptainer)

    def run(what: str, gpu: bool) -> list[str]:  # apptainer exec ... <image> dask <what>
        return server_command(
            singleuser=[what], wrapper="dask", image=entry["image"], gpu=gpu, apptainer=app
        )

    return {
        "scheduler_cmd": run("scheduler", False),
        "worker_cmd": run("worker", gpus > 0),
        # the job's environment is only what is exported: a PATH that finds apptainer
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "DASK_TEMPORARY_DIRECTORY": "."},
    }


def cluster_options(settings: dict):
    """``c.Backend.cluster_options``: a callable giving each user their own Options."""

    def for_user(user):
        limits, fields = user_fields(settings, user.groups)
        gateway_fields = []
        for f in fields:
            cls = _FIELD_CLASSES[f.type]
            if f.type == "select":
                gateway_fields.append(cls(f, options=[v for v, _ in f.choices]))
            else:
                gateway_fields.append(cls(f, min=f.min, max=f.max))

        def handler(options, user):
            chosen = {f.name: options[f.name] for f in fields}
            # Slurm jobs of an image without local_prefix run in it with Apptainer (as batch
            # servers do); otherwise local and Slurm jobs run the image's environment prefix
            # (shared with the nodes)
            gpus = chosen.get("worker_gpus") or 0
            container = container_commands(settings, chosen.get("image"), gpus=gpus)
            prefix = None
            if container is None and settings.get("backend", "local") in ("local", "slurm"):
                prefix = image_prefix(settings, chosen.get("image"))
            config = dask_options.cluster_config(
                chosen,
                limits=limits,
                idle_timeout=settings["dask"].get("idle_timeout", 1800),
                prefix=prefix,
            )
            if container is not None:
                env = {**container.pop("environment"), **config.get("environment", {})}
                config.update(container, environment=env)
            if settings.get("backend", "local") in ("local", "slurm"):
                # dask-gateway's ClusterConfig counts whole cores (0.5 was a TraitError)
                config["worker_cores"] = max(1, math.ceil(config["worker_cores"]))
            return config

        return Options(*gateway_fields, handler=handler)

    return for_user


# -- authentication --------------------------------------------------------------------------


class AfhubGatewayAuthenticator(JupyterHubAuthenticator):
    """JupyterHub auth; groups looked up with the gateway's token when the user's token
    cannot read them (a server's API token only carries the scopes it was issued)."""

    async def authenticate(self, request):
        user = await super().authenticate(request)
        if not user.groups and ":" not in user.name:
            url = f"{self.jupyterhub_api_url}/users/{quote(user.name, safe='')}"
            headers = {"Authorization": f"token {self.jupyterhub_api_token}"}
            async with self.session.get(url, headers=headers, ssl=self.ssl_context) as resp:
                if resp.status == 200:
                    user.groups = set((await resp.json()).get("groups") or [])
        return user


# -- backend ---------------------------------------------------------------------------------

# the preload that makes schedulers' and workers' HTTP servers answer only the owner's relay
GUARD_PRELOAD = "afhub.server_ext.dask_preload"
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def with_guard(cmd: list[str], *, after: int) -> list[str]:
    """Pure: a dask scheduler or worker command (``cmd[:after]`` runs ``dask scheduler`` or
    ``dask worker``) that preloads the dashboard guard."""
    return [*cmd[:after], "--preload", GUARD_PRELOAD, *cmd[after:]]


def address_problem(what: str, address: str, networks) -> str | None:
    """Pure: why ``address`` (``tls://10.1.2.3:8786``, ``http://[::1]:8787``), which a
    cluster reported as its ``what``, is not one the gateway may connect to, or None. The host
    must be an IP address (a name could resolve elsewhere later) inside one of ``networks``."""
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return f"its {what} address {address!r} is not an IP address and port"
    if not port:
        return f"its {what} address {address!r} has no port"
    if not any(ip in ipaddress.ip_network(n, strict=False) for n in networks):
        allowed = ", ".join(networks) or "none"
        return f"its {what} address {address!r} is outside the allowed networks ({allowed})"
    return None


def reported_address_problems(msg: dict, networks) -> list[str]:
    """Pure: what is wrong with the addresses of a scheduler's heartbeat ``msg`` (the
    dashboard's may be empty: no dashboard)."""
    out = []
    for what in ("scheduler", "api", "dashboard"):
        address = msg.get(f"{what}_address") or ""
        if what == "dashboard" and not address:
            continue
        problem = address_problem(what, address, networks)
        if problem:
            out.append(problem)
    return out


def host_networks() -> list[str]:
    """The networks of this host's interfaces, loopback and link-local excluded: where the
    Slurm nodes' schedulers are by default (``dask.slurm.node_networks`` narrows it)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            try:
                net = ipaddress.ip_network(f"{a.address.split('%')[0]}/{a.netmask}", strict=False)
            except ValueError:
                continue
            if not (net.is_loopback or net.is_link_local) and str(net) not in out:
                out.append(str(net))
    return out


def node_networks(listen_ip: str) -> list[str]:
    """The default ``allowed_networks`` of Slurm clusters: ``listen_ip`` itself when it is
    one address (jobs on this host only, e.g. ``127.0.0.1``), else this host's networks."""
    if listen_ip not in WILDCARD_HOSTS:
        return [str(ipaddress.ip_network(listen_ip))]
    return host_networks()


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

    def owner_refusal(self, username: str) -> str | None:
        """Why ``username`` may have no cluster at all (``None``: they may). Single-user mode:
        anyone but the one user the local backend serves, and everyone while no one has
        started a server (the spawner's rule, :func:`afhub.spawner.accounts.single_user_refusal`);
        per-user accounts: an owner whose account is refused or does not exist yet."""
        from afhub.spawner import accounts

        settings = self._owner_settings()
        mode = accounts.resolve_mode(settings.get("accounts", "auto"), euid=os.geteuid())
        if mode == "single-user":
            # the spawner's home root: the gateway runs in the hub's working directory
            root = settings.get("home_root") or os.path.join(os.getcwd(), "home")
            owner = accounts.single_user_owner(root)
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
        dask-gateway records any cluster (its ``start_cluster`` calls this first)."""
        message = self.owner_refusal(user.name)
        if message:
            self.log.warning("afhub: refused a cluster for %s: %s", user.name, message)
            raise PublicException(message)
        return await super().process_cluster_options(user, request)

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


def slurm_job_script(*, setup: str, command: list[str]) -> str:
    """A scheduler's or worker's job script: the operator's ``dask.slurm.setup`` lines (shell,
    as written), then ``command`` with every argument shell-quoted, so that an environment
    prefix or image path holding a space or ``;`` stays one argument and never becomes shell."""
    return "\n".join(["#!/bin/sh", setup, shlex.join(command)])


def slurm_job_args(cmd: list[str], *, cores: float, gpus: int) -> list[str]:
    """dask-gateway's ``sbatch`` arguments with whole CPUs (it truncates 0.5 cores to
    ``--cpus-per-task=0``, which Slurm refuses) and the worker's GPUs as ``--gres``."""
    out = [
        f"--cpus-per-task={max(1, math.ceil(cores))}" if a.startswith("--cpus-per-task=") else a
        for a in cmd
    ]
    if gpus:
        out.insert(1, f"--gres=gpu:{gpus}")
    return out


class AfhubSlurmBackend(OwnedClusters, SlurmBackend):
    """Schedulers and workers as Slurm jobs (dask-gateway's Slurm backend), with afhub's limits
    and owner check.

    Jobs are submitted and cancelled as the cluster owner's system account (``run_as_owner``:
    the account the owner's servers run as, mapped as the spawner maps it), through ``sudo -n
    -u <account> <launcher>`` with umask 077: the per-cluster staging directory (TLS key and
    certificate, job logs) is private to that account. The launcher reads the job's environment
    (holding the cluster's token) on stdin; ``sbatch`` exports it by name, so no secret is in
    any command line, in the job script or in ``scontrol show job``. Without per-user accounts
    (a hub serving its own account) the launcher runs directly, as the gateway's account.
    """

    run_as_owner = Bool(True, config=True, help="Submit as the owner's system account.")
    listen_ip = Unicode("0.0.0.0", config=True, help="Address schedulers and workers bind.")
    slurm_conf = Unicode("", config=True, help="SLURM_CONF for sbatch, squeue and scancel.")

    @property
    def default_host(self):  # what dask-gateway's scheduler and worker commands bind
        return self.listen_ip

    @default("allowed_networks")
    def _node_networks(self):
        return node_networks(self.listen_ip)

    def account(self, username: str) -> str:
        if not self.run_as_owner:
            return pwd.getpwuid(os.geteuid()).pw_name
        return super().account(username)

    def _slurm_env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {}

    async def start_cluster(self, user, cluster_options):
        if not os.access(self.dask_gateway_jobqueue_launcher, os.X_OK):
            self.log.error(
                "afhub: %s is missing or not executable (dask.slurm.launcher; `make server-env` "
                "installs it)",
                self.dask_gateway_jobqueue_launcher,
            )
            raise PublicException(
                "Dask clusters cannot start on Slurm here: the gateway's job launcher is "
                "missing (dask.slurm.launcher); please tell the facility admins"
            )
        try:
            pwd.getpwnam(self.account(user.name))
        except KeyError:
            raise PublicException(
                f"{user.name} has no system account {self.account(user.name)!r} for Slurm jobs "
                "yet; start your server first, or ask the facility admins"
            ) from None
        return await super().start_cluster(user, cluster_options)

    async def process_cluster_options(self, user, request):
        """The options as dask-gateway checks them, then whether Slurm can run such a worker
        at all (``sbatch --test-only`` as the owner: partition, account, QOS, CPUs, memory and
        GPUs against the nodes and the owner's associations), before anything is submitted."""
        options, config = await super().process_cluster_options(user, request)
        await self.check_staging_directory(user.name, config, create=True)
        gpus = int(config.environment.get("AFHUB_WORKER_GPUS", 0))
        cmd = [self.submit_command, "--test-only", "--job-name=dask-gateway"]
        cmd += [
            f"--{k}={getattr(config, k)}"
            for k in ("partition", "account", "qos")
            if getattr(config, k)
        ]
        cmd += ["--cpus-per-task=1", f"--mem={slurm_format_memory(config.worker_memory)}"]
        code, _, err = await self.do_as_user(
            user.name,
            "start",
            cmd=slurm_job_args(cmd, cores=config.worker_cores, gpus=gpus),
            env={"PATH": os.defpath, **self._slurm_env()},
            stdin="#!/bin/sh\ntrue\n",
        )
        if code != 0:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
            reason = lines[-1].split(": ", 1)[-1] if lines else f"sbatch exited with {code}"
            asked = f"worker_cores {config.worker_cores:g}, worker_memory "
            asked += f"{config.worker_memory / 2**30:g} GiB" + (
                f", worker_gpus {gpus}" if gpus else ""
            )
            where = f" in partition {config.partition}" if config.partition else ""
            raise PublicException(f"Slurm cannot run workers of {asked}{where}: {reason}")
        return options, config

    def staging_base(self, username: str, config) -> str:
        """``dask.slurm.staging_directory`` for ``username``'s account (each cluster gets a
        subdirectory, made by the launcher as that account)."""
        account = pwd.getpwnam(self.account(username))
        base = config.staging_directory.format(home=account.pw_dir, username=account.pw_name)
        return os.path.normpath(base)

    def get_staging_directory(self, cluster):
        return os.path.join(self.staging_base(cluster.username, cluster.config), cluster.name)

    async def check_staging_directory(self, username: str, config, *, create: bool) -> None:
        """Refuse (before anything is submitted) a staging directory another account could
        change: it and every directory on the way must pass the token files' ownership walk
        (``server_ext/token.py``) for the owner's account: root's or the owner's, not writable
        by others (an ancestor may be sticky, like ``/tmp``), no link owned by anyone else. A
        missing one is made by the launcher as the owner (``create``; it refuses to reuse one
        made meanwhile) and walked again."""
        from afhub.server_ext.token import private_dir_problem

        base = self.staging_base(username, config)
        uid = pwd.getpwnam(self.account(username)).pw_uid
        try:
            problem = private_dir_problem(base, owner=uid)
        except FileNotFoundError:
            problem = "does not exist"
            if create:
                try:
                    await self.do_as_user(
                        username, "start", cmd=["true"], env={"PATH": os.defpath}, stdin=None,
                        staging_dir=base, files={},
                    )  # fmt: skip
                except RuntimeError as e:
                    self.log.warning("afhub: creating %s for %s: %s", base, username, e)
                try:
                    problem = private_dir_problem(base, owner=uid)
                except FileNotFoundError:
                    pass
        if problem:
            self.log.error("afhub: staging directory of %s refused: %s", username, problem)
            raise PublicException(
                f"Dask clusters cannot start: your staging directory {base} "
                f"(dask.slurm.staging_directory) is not safe: {problem}. It must be your own, "
                "not writable by others, in directories of root or yours; ask the facility "
                "admins."
            )

    async def do_start_cluster(self, cluster):
        await self.check_staging_directory(cluster.username, cluster.config, create=False)
        async for state in super().do_start_cluster(cluster):
            yield state

    def get_submit_cmd_env_stdin(self, cluster, worker=None):
        cmd, env, _ = super().get_submit_cmd_env_stdin(cluster, worker)
        gpus = int(cluster.config.environment.get("AFHUB_WORKER_GPUS", 0)) if worker else 0
        cores = cluster.config.worker_cores if worker else cluster.config.scheduler_cores
        if worker:  # dask-gateway's script joins the command unquoted: built again, quoted
            setup = cluster.config.worker_setup
            command = self.get_worker_command(cluster, worker.name)
        else:
            setup = cluster.config.scheduler_setup
            command = self.get_scheduler_command(cluster)
        script = slurm_job_script(setup=setup, command=command)
        return slurm_job_args(cmd, cores=cores, gpus=gpus), {**env, **self._slurm_env()}, script

    def get_stop_cmd_env(self, job_id):
        cmd, env = super().get_stop_cmd_env(job_id)
        return cmd, {**env, **self._slurm_env()}

    def get_status_cmd_env(self, job_ids):
        cmd, env = super().get_status_cmd_env(job_ids)
        return cmd, {**env, **self._slurm_env()}

    async def do_as_user(self, user, action, **kwargs):
        """dask-gateway's launcher protocol (JSON on stdin, JSON result on stdout), run as
        ``user``'s account with umask 077 (sudo keeps the stricter of its own and ours)."""
        account = self.account(user)
        cmd = [self.dask_gateway_jobqueue_launcher]
        if self.run_as_owner:
            cmd = ["sudo", "-n", "-H", "-u", account, *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            env={"PATH": os.defpath},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            umask=0o077,
        )
        request = json.dumps({**kwargs, "action": action}).encode()
        out, err = await proc.communicate(request)
        out_text, err_text = out.decode(errors="replace"), err.decode(errors="replace").strip()
        if proc.returncode != 0:
            hint = ""
            if "sudo" in err_text:
                hint = " (does sudoers let the gateway run the launcher as that account? see docs/dask.md)"
            raise RuntimeError(
                f"{cmd[-1]} as {account} failed ({proc.returncode}): {err_text[-500:]}{hint}"
            )
        try:
            result = json.loads(out_text)
        except ValueError:
            raise RuntimeError(f"{cmd[-1]} as {account} answered {out_text[-300:]!r}") from None
        if not result.get("ok"):
            raise RuntimeError(f"{cmd[-1]} as {account}: {result.get('error')}")
        return result["returncode"], result["stdout"], result["stderr"]


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
        return dask_workdir.CLUSTERS_DIRECTORY if os.geteuid() == 0 else ""

    def setup_working_directory(self, cluster):
        """The cluster's private working directory (0700: ``.certs/`` with the TLS cert and key
        0600, ``logs/``), owned by the account the cluster runs as.

        In ``clusters_directory`` (root's, 0711, checked on every start, created if missing;
        a gateway not running as root without one uses a ``mkdtemp`` directory of its own).
        Everything is made through directory descriptors and handed to the owner while the
        directory is still root's, the top last (``dask_workdir.build_workdir``): no path a
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
                root_fd = dask_workdir.open_clusters_root(parent, searchable=self.run_as_owner)
            elif os.geteuid() == 0:
                raise dask_workdir.WorkdirError(
                    "AfhubLocalBackend.clusters_directory is empty: a gateway running as root "
                    "needs a root-owned directory for the clusters (not /tmp)"
                )
            else:  # the gateway's own private directory; clusters run as the gateway's account
                parent, name = os.path.split(tempfile.mkdtemp(prefix="dask", suffix=cluster.name))
                root_fd, exists = os.open(parent, dask_workdir.DIR_FLAGS), True
            try:
                dask_workdir.build_workdir(
                    root_fd, name, cert=cluster.tls_cert, key=cluster.tls_key, owner=owner,
                    exists=exists,
                )  # fmt: skip
            finally:
                os.close(root_fd)
        except (dask_workdir.WorkdirError, OSError) as e:
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
                fd = dask_workdir.open_clusters_root(parent, create=False)
            else:
                fd = os.open(parent, dask_workdir.DIR_FLAGS)
            try:
                dask_workdir.remove_workdir(fd, name)
            finally:
                os.close(fd)
            self.log.debug("Working directory %s removed", workdir)
        except FileNotFoundError:
            pass
        except (dask_workdir.WorkdirError, OSError) as e:
            self.log.warning("afhub: could not remove working directory %s: %s", workdir, e)

    async def start_process(self, cluster, cmd, env, name):
        """dask-gateway's, except that ``logs/<name>.log`` is created by the child once it runs
        as the cluster's account in the cluster's directory (``dask_workdir.open_log``), never
        by the gateway: a ``logs`` the owner replaced by a link is not followed."""
        become_owner = self.make_preexec_fn(cluster)
        log_name = name + ".log"

        def preexec():  # pragma: no cover - runs in the child
            become_owner()
            dask_workdir.open_log(log_name)

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


# -- the process -----------------------------------------------------------------------------


@api_handler(user_authenticated=True)
async def limits_route(request):
    """``GET {prefix}/api/v1/afhub/limits``: the caller's limits (the notebook API checks
    ``workers`` against ``max_workers`` before asking for them)."""
    settings = request.app["gateway"].afhub_settings
    limits = dask_options.limits_for(settings["dask"], request["user"].groups)
    return web.json_response(limits.model())


def dashboard_answer(cluster, username: str, name: str) -> tuple[int, dict]:
    """Pure: the answer of the dashboard route for ``username`` asking about cluster ``name``
    (``cluster``: the gateway's model or None). Only the owner learns anything, even that the
    cluster exists; messages are the afhub error model. With the address comes the cluster's
    dashboard secret (its scheduler refuses requests without it; ``dask_dashboard_guard``)."""
    if cluster is None or cluster.username != username:
        return 404, {"message": f"no cluster of yours is named {name!r}"}
    if cluster.status != ClusterStatus.RUNNING:
        state = cluster.status.name.lower()
        return 404, {"message": f"cluster {name!r} is {state}: it has no dashboard"}
    if not cluster.dashboard_address:
        return 404, {"message": f"cluster {name!r} runs no dashboard (is bokeh installed?)"}
    from afhub.server_ext.contract import dask_dashboard_secret

    secret = dask_dashboard_secret(cluster.tls_key)
    return 200, {"address": cluster.dashboard_address, "secret": secret}


@api_handler(user_authenticated=True)
async def dashboard_route(request):
    """``GET {prefix}/api/v1/afhub/clusters/<name>/dashboard``: where the caller's own running
    cluster serves its dashboard and its secret (``{"address": "http://host:port", "secret":
    ...}``), else 404."""
    name = request.match_info["cluster_name"]
    cluster = await request.app["backend"].get_cluster(name)
    status, body = dashboard_answer(cluster, request["user"].name, name)
    return web.json_response(body, status=status)


class AfhubDaskGateway(DaskGateway):
    afhub_settings: dict = {}

    def initialize(self, argv=None):
        super().initialize(argv)
        self.app.router.add_get("/api/v1/afhub/limits", limits_route)
        self.app.router.add_get("/api/v1/afhub/clusters/{cluster_name}/dashboard", dashboard_route)


def gateway_config(settings: dict) -> Config:
    data_dir = settings["data_dir"]
    c = Config()
    G = "AfhubDaskGateway"
    c[G].config_file = os.path.join(data_dir, "dask_gateway_config.py")  # operators' extras
    c[G].authenticator_class = AfhubGatewayAuthenticator
    slurm = settings.get("backend") == "slurm"
    c[G].backend_class = AfhubSlurmBackend if slurm else AfhubLocalBackend
    c[G].address = "127.0.0.1:0"  # private API server; the proxy fronts it
    ip = settings.get("gateway_ip", "127.0.0.1")  # loopback unless Slurm nodes must reach it
    c.Proxy.address = f"{ip}:{settings['port']}"  # the hub's proxy fronts it
    c.Proxy.tcp_address = f"{ip}:{settings['scheduler_port']}"
    c.Proxy.prefix = settings["prefix"]
    c.JupyterHubAuthenticator.jupyterhub_service_name = "dask-gateway"
    c.JupyterHubAuthenticator.use_service_access_scopes = True
    c.DBBackendBase.db_url = "sqlite:///" + os.path.join(data_dir, "dask-gateway.sqlite")
    c.DBBackendBase.stop_clusters_on_shutdown = False  # a hub restart keeps users' clusters
    c.Backend.cluster_options = cluster_options(settings)
    c.OwnedClusters.server_check_interval = float(settings.get("server_check_interval", 10))
    s = settings["dask"].get("slurm") or {}
    for key in ("partition", "account", "qos"):
        if s.get(key):
            setattr(c.SlurmClusterConfig, key, s[key])
    if s.get("setup"):
        c.SlurmClusterConfig.scheduler_setup = s["setup"]
        c.SlurmClusterConfig.worker_setup = s["setup"]
    if s.get("staging_directory"):
        c.SlurmClusterConfig.staging_directory = s["staging_directory"]
    if s.get("scheduler_cores"):
        c.SlurmClusterConfig.scheduler_cores = int(s["scheduler_cores"])
    if s.get("scheduler_memory"):
        c.SlurmClusterConfig.scheduler_memory = int(s["scheduler_memory"] * 2**30)
    from afhub.spawner.accounts import resolve_mode

    mode = resolve_mode(settings.get("accounts", "auto"), euid=os.geteuid())
    c.OwnedClusters.account_prefix = settings.get("account_prefix", "afhub-")
    c.AfhubLocalBackend.run_as_owner = mode == "system"
    if slurm:
        S = c.AfhubSlurmBackend
        S.run_as_owner = mode == "system"
        S.listen_ip = s.get("listen_ip", "0.0.0.0")
        if s.get("node_networks"):
            S.allowed_networks = list(s["node_networks"])
        S.dask_gateway_jobqueue_launcher = slurm_launcher(settings)
        S.slurm_conf = settings.get("slurm_conf") or ""
        if ip == "0.0.0.0":  # schedulers reach the API by this host's name (as servers do)
            S.api_url = f"http://{socket.getfqdn()}:{settings['port']}{settings['prefix']}/api"
        # Slurm jobs outlive the gateway: when the owners' servers stop with the hub, their
        # clusters' jobs are cancelled too (when servers survive a hub restart, so do clusters)
        S.stop_clusters_on_shutdown = not settings.get("servers_outlive_hub", False)
    return c


LAUNCHER = "dask-gateway-jobqueue-launcher"


def sudoers_rule(hub_account: str, users_group: str, launcher: str) -> str:
    """The sudoers line a hub not running as root needs for Dask on Slurm: its account may run
    the launcher, with no arguments, as members of ``users_group``, never as root."""
    return f'{hub_account} ALL=(%{users_group}, !root) NOPASSWD: {launcher} ""'


def slurm_launcher(settings: dict) -> str:
    """The launcher sudo runs as each owner: ``dask.slurm.launcher``, else the one of the
    server environment (world-readable, unlike the gateway's own environment may be)."""
    s = settings["dask"].get("slurm") or {}
    if s.get("launcher"):
        return s["launcher"]
    return os.path.join(settings.get("default_prefix") or sys.prefix, "bin", LAUNCHER)


def main(argv=None) -> None:
    settings = settings_from_env()
    if settings.get("backend", "local") not in ("local", "slurm"):
        raise SystemExit(
            f"afhub dask gateway: the {settings['backend']} backend runs the gateway elsewhere"
        )
    os.makedirs(settings["data_dir"], mode=0o700, exist_ok=True)
    config = gateway_config(settings)
    key = ensure_generated(os.path.join(settings["data_dir"], "dask_gateway_db_key"), 16)
    config.DBBackendBase.db_encrypt_keys = [key]
    app = AfhubDaskGateway(config=config)
    app.afhub_settings = settings
    app.initialize(argv or [])
    app.start()


if __name__ == "__main__":
    main()
