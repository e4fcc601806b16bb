"""``AfhubSlurmBackend``: schedulers and workers as Slurm jobs of the owner's account.

Also the pure pieces of its jobs (script, ``sbatch`` arguments) and of its launcher (the
sudoers rule, which launcher runs). What must not live here: what every backend shares
(``clusters.py``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pwd
import shlex
import sys

from afhub.server_ext.contract import WORKER_GPUS
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.jobqueue.slurm import SlurmBackend, slurm_format_memory
from traitlets import Bool, Dict, Unicode, default

from .clusters import OwnedClusters
from .networks import node_networks

NODE_IP = "AFHUB_NODE_IP"
# the node's own address on its route to the gateway (no packet is sent); on a node with no
# such route it fails, and the job keeps listen_ip's wildcard
ROUTE_PROBE = (
    "import socket,sys;"
    "a=socket.getaddrinfo(sys.argv[1],9,socket.AF_INET,socket.SOCK_DGRAM)[0];"
    "s=socket.socket(a[0],a[1]);s.connect(a[4]);print(s.getsockname()[0])"
)


def route_probe(command: list[str], gateway_host: str) -> list[str]:
    """The command printing the node's address toward ``gateway_host``, run by the Python of
    ``command``'s environment (``<prefix>/bin/dask`` -> ``<prefix>/bin/python``; inside an
    image, ``apptainer exec ... dask`` -> ``apptainer exec ... python``)."""
    for i, arg in enumerate(command):
        if os.path.basename(arg) == "dask":
            python = os.path.join(os.path.dirname(arg), "python")
            return [*command[:i], python, "-c", ROUTE_PROBE, gateway_host]
    return ["python3", "-c", ROUTE_PROBE, gateway_host]


def slurm_job_script(
    *, setup: str, command: list[str], wildcard: str = "", gateway_host: str = ""
) -> str:
    """A scheduler's or worker's job script: the operator's ``dask.slurm.setup`` lines (shell,
    as written), then ``command`` with every argument shell-quoted, so that an environment
    prefix or image path holding a space or ``;`` stays one argument and never becomes shell.

    With ``gateway_host`` (the host in the gateway API URL, on another host) the arguments
    that are ``wildcard`` (``dask.slurm.listen_ip``, e.g. ``0.0.0.0``) or ``wildcard:port``
    become the node's own address toward the gateway, found on the node when the job starts
    (:func:`route_probe`): a scheduler listening on all interfaces reports the address of
    Dask's guess (a route to 8.8.8.8, else the node's host name), which on a cluster network
    without a default route, or with the host name on 127.0.0.1, is loopback or wrong."""
    lines = ["#!/bin/sh", setup]
    if not (wildcard and gateway_host):
        return "\n".join([*lines, shlex.join(command)])
    probe = shlex.join(route_probe(command, gateway_host))
    lines.append(f"{NODE_IP}=$({probe}) || {NODE_IP}={shlex.quote(wildcard)}")
    args = []
    for a in command:
        if a == wildcard:
            args.append(f'"${NODE_IP}"')
        elif a.startswith(wildcard + ":"):
            args.append(f'"${NODE_IP}"' + shlex.quote(a[len(wildcard) :]))
        else:
            args.append(shlex.quote(a))
    return "\n".join([*lines, " ".join(args)])


GPU_JOB_KEYS = ("partition", "account", "qos")


def slurm_job_args(
    cmd: list[str], *, cores: float, gpus: int, gpu_workers: dict | None = None
) -> list[str]:
    """dask-gateway's ``sbatch`` arguments with whole CPUs (it truncates 0.5 cores to
    ``--cpus-per-task=0``, which Slurm refuses) and the worker's GPUs as ``--gres``. A job
    with GPUs goes where ``gpu_workers`` (``dask.slurm.gpu_workers``) says: its partition,
    account and QOS replace the cluster's, its ``gres_type`` (already translated by
    ``backend.slurm.gpu_types``) is asked for as ``--gres=gpu:<type>:<n>``."""
    from afhub.spawner.translations.slurm import gres

    out = [
        f"--cpus-per-task={max(1, math.ceil(cores))}" if a.startswith("--cpus-per-task=") else a
        for a in cmd
    ]
    if gpus:
        g = gpu_workers or {}
        chosen = {k: g[k] for k in GPU_JOB_KEYS if g.get(k)}
        out = [a for a in out if not a.startswith(tuple(f"--{k}=" for k in chosen))]
        out[1:1] = [f"--gres={gres(gpus, g.get('gres_type'), {}, 'worker_gpus')}"] + [
            f"--{k}={v}" for k, v in chosen.items()
        ]
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
    gpu_workers = Dict(
        config=True,
        help="""Workers with GPUs: ``partition``, ``account``, ``qos`` replacing the cluster's,
        ``gres_type`` (the Slurm GRES type). Default ``{}``: where CPU workers go, any GPU
        type (``dask.slurm.gpu_workers``).""",
    )

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

    def _node_address_args(self) -> dict[str, str]:
        """How a scheduler finds the address it listens on and reports (slurm_job_script):
        with a wildcard ``listen_ip`` and the gateway on another host (``api_url`` built from
        ``hub.node_address``), the node's address toward the gateway. Workers need none:
        Dask picks their address on the route to the scheduler."""
        from urllib.parse import urlsplit

        from afhub.hub_config.addresses import is_loopback, is_wildcard

        host = urlsplit(self.api_url).hostname or ""
        if not is_wildcard(self.listen_ip) or not host or is_loopback(host):
            return {}
        return {"wildcard": self.listen_ip, "gateway_host": host}

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
        gpus = int(config.environment.get(WORKER_GPUS, 0))
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
            cmd=slurm_job_args(
                cmd, cores=config.worker_cores, gpus=gpus, gpu_workers=self.gpu_workers
            ),
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
            partition = (gpus and self.gpu_workers.get("partition")) or config.partition
            where = f" in partition {partition}" if partition else ""
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
        gpus = int(cluster.config.environment.get(WORKER_GPUS, 0)) if worker else 0
        cores = cluster.config.worker_cores if worker else cluster.config.scheduler_cores
        if worker:  # dask-gateway's script joins the command unquoted: built again, quoted
            setup = cluster.config.worker_setup
            command = self.get_worker_command(cluster, worker.name)
        else:
            setup = cluster.config.scheduler_setup
            command = self.get_scheduler_command(cluster)
        script = slurm_job_script(
            setup=setup, command=command, **({} if worker else self._node_address_args())
        )
        args = slurm_job_args(cmd, cores=cores, gpus=gpus, gpu_workers=self.gpu_workers)
        return args, {**env, **self._slurm_env()}, script

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
                hint = " (does sudoers let the gateway run the launcher as that account? see docs/operators-dask.md)"
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
