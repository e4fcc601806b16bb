"""A real Slurm cluster on localhost for tests: munged + slurmctld + slurmd, torn down after.

Nothing is installed here (``make test``'s ``system-deps`` installs Debian's ``slurm-wlm``,
``munge`` and ``sudo``); :class:`SlurmCluster` only generates a configuration in a private
directory and starts the daemons from it, so it never touches ``/etc/slurm`` or
``/etc/munge`` and several clusters can run side by side:

- munged with its own key and socket (``AuthInfo=socket=...`` points Slurm at it);
- slurmctld and slurmd on free loopback ports, ``NodeName`` = this machine's host name,
  state, spool, pid and log files in the private directory;
- one node with ``cpus`` CPUs, ``memory_mb`` MB and ``gpus`` GPUs of type ``gpu_type``
  (``gres.conf`` maps them to ``/dev/null``: the scheduler accounts for them, no device
  exists), in the partitions ``partitions`` (the first is the default).

Clients find the cluster through ``SLURM_CONF`` (``cluster.env``). Needs root (slurmd).

Usage::

    with SlurmCluster(tmpdir) as cluster:
        cluster.run("sbatch", "--wrap", "sleep 5")
        cluster.jobs()  # [{'JobId': '1', 'JobState': 'RUNNING', ...}]
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")


def slurm_available() -> str | None:
    """None when the cluster can start here, else the reason it cannot."""
    missing = [d for d in DAEMONS + ("/usr/bin/sudo",) if not os.path.exists(d)]
    if missing:
        return f"not installed: {', '.join(missing)} (`make system-deps` installs slurm-wlm, munge, sudo)"
    if os.geteuid() != 0:
        return "slurmd needs root"
    return None


def server_env() -> str:
    """The world-readable environment batch jobs run (``make server-env``: ``AFHUB_SERVER_ENV``,
    else the default prefix), or "" when it has no ``batchspawner-singleuser``."""
    prefix = os.environ.get("AFHUB_SERVER_ENV") or "/opt/afhub/envs/analysis"
    return prefix if os.path.exists(os.path.join(prefix, "bin", "batchspawner-singleuser")) else ""


def require(reason: str | None) -> None:
    """Skip the calling test for ``reason`` (``None``: nothing is missing); under CI (``CI``
    true) fail instead: CI installs and starts everything."""
    import pytest

    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)


def batch_hub_values(cluster: SlurmCluster, users: list[str], **slurm) -> dict:
    """Values of a hub whose servers are jobs on ``cluster`` (the server environment, reached
    on loopback): the demo provider with ``users`` in ``physicists``, one default profile of
    1 CPU and 1 GiB on the ``cpu`` partition, capacity and culling off. ``slurm`` adds to
    ``backend.slurm``; callers add the rest (``dask``, ``hub``, ...)."""
    return {
        "auth": {
            "provider": "dev",
            "allowed_groups": ["physicists"],
            "dev": {"users": [{"name": n, "groups": ["physicists"]} for n in users]},
        },
        "backend": {
            "type": "slurm",
            "start_timeout": 180,
            "slurm": {
                "runtime": "01:00:00",
                "environment": server_env(),
                "server_ip": "127.0.0.1",
                "node_addresses": {cluster.host: "127.0.0.1"},
                "capacity": {"enabled": False},
                **slurm,
            },
        },
        "profiles": [
            {
                "display_name": "CPU",
                "slug": "cpu",
                "default": True,
                "resources": {"cpu": 1, "memory": "1Gi"},
                "batch": {"partition": "cpu"},
            }
        ],
        "culling": {"enabled": False},
    }


def kill_orphaned_steps(conf: str | None = None) -> list[int]:
    """Kill ``slurmstepd`` processes (and the job processes under them) of a test cluster that
    is gone: those whose ``SLURM_CONF`` is ``conf``, or (``conf=None``) names a test cluster's
    configuration that no longer exists. slurmstepd outlives slurmd by design. Returns pids."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "slurmstepd":
            continue
        try:
            # slurmstepd overwrites the start of its environment with its title: read it raw
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
            confs = [e[len(b"SLURM_CONF=") :] for e in entries if e.startswith(b"SLURM_CONF=")]
            path = confs[0].decode(errors="replace") if confs else ""
            mine = path == conf if conf else ("/afhub-slurm-" in path and not os.path.exists(path))
            if not mine:
                continue
            victims = proc.children(recursive=True) + [proc]
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        for v in victims:
            try:
                v.kill()
                killed.append(v.pid)
            except psutil.NoSuchProcess:
                pass
    return killed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_kv(line: str) -> dict[str, str]:
    """``scontrol show ... --oneliner`` output -> mapping (values hold no spaces, except a few)."""
    out: dict[str, str] = {}
    key = None
    for word in line.split():
        if "=" in word:
            key, _, value = word.partition("=")
            out[key] = value
        elif key is not None:  # e.g. Reason=Not responding [slurm@...]
            out[key] += " " + word
    return out


class NodeNetwork:
    """A second "host" for the compute node: a network namespace joined to this one by a veth
    pair with private addresses (``10.213.N.1`` here, ``10.213.N.2`` there, ``N`` from the pid),
    made by :meth:`create` and removed by :meth:`remove`. Processes in it (slurmd and its jobs)
    share this machine's file systems and accounts, as nodes share homes and accounts, but
    reach this side only over the link: their 127.0.0.1 is their own."""

    def __init__(self):
        n = os.getpid() % 250 + 1
        tag = f"{os.getpid() % 100000}"
        self.name = f"afhub-node{tag}"
        self.host_if, self.node_if = f"afh{tag}h", f"afh{tag}n"
        self.host_ip, self.node_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self.prefix = 24

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def create(self) -> None:
        self.remove()  # a namespace left by a killed run of this pid
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if)
        self._ip("link", "set", self.node_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        ns = ["netns", "exec", self.name, "ip"]
        self._ip(*ns, "addr", "add", f"{self.node_ip}/{self.prefix}", "dev", self.node_if)
        self._ip(*ns, "link", "set", self.node_if, "up")
        self._ip(*ns, "link", "set", "lo", "up")

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        """``argv`` on the node (inside the namespace)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.name}", "--", *argv], **kw)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class SlurmCluster:
    def __init__(
        self,
        parent: str | os.PathLike | None = None,
        *,
        cpus: int = 4,
        memory_mb: int = 4000,
        gpus: int = 1,
        gpu_type: str = "a100",
        partitions: tuple[str, ...] = ("cpu", "gpu"),
        node_netns: bool = False,
        node_mounts: dict[str, str] | None = None,
    ):
        # a world-traversable directory: slurm, munge and the users' clients all read it
        self.dir = Path(tempfile.mkdtemp(prefix="afhub-slurm-", dir=parent or "/tmp"))
        os.chmod(self.dir, 0o755)
        self.host = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb, self.gpus, self.gpu_type = cpus, memory_mb, gpus, gpu_type
        self.partitions = partitions
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        # the compute node: this host (loopback), or with ``node_netns`` a second host in its
        # own network namespace behind a veth pair (NodeNetwork), slurmctld on the other side
        self.network = NodeNetwork() if node_netns else None
        self.ctl_addr = self.network.host_ip if self.network else "127.0.0.1"
        self.node_addr = self.network.node_ip if self.network else "127.0.0.1"
        self.node_name = "afnode1" if self.network else self.host
        # with ``node_netns``: directories bound (``{target: source}``) in a mount namespace of
        # slurmd's own, so what the node's jobs see there (e.g. a test-only executable on
        # their PATH) is the node's alone; the hub's side keeps the real directories
        if node_mounts and not self.network:
            raise ValueError("node_mounts needs node_netns (a second host)")
        self.node_mounts = dict(node_mounts or {})

    # -- configuration ---------------------------------------------------------------
    def _write_config(self) -> None:
        d = self.dir
        slurm = pwd.getpwnam("slurm")
        for sub, owner in (("state", slurm), ("spool", None), ("log", slurm)):
            (d / sub).mkdir(mode=0o755)
            if owner is not None:
                os.chown(d / sub, owner.pw_uid, owner.pw_gid)
        gres = f"gpu:{self.gpu_type}:{self.gpus}" if self.gpus else ""
        nodes = self.node_name
        lines = [
            "ClusterName=afhubtest",
            f"SlurmctldHost={self.host}({self.ctl_addr})",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=slurm",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'log' / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'spool' / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'spool' / 'slurmd.log'}",
            "SlurmdParameters=config_overrides",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=256",
            "ReturnToService=2",
            "MpiDefault=none",
            "SchedulerParameters=sched_interval=2",
            "KillWait=3",
            "MinJobAge=2",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={self.node_name} NodeAddr={self.node_addr} CPUs={self.cpus} "
            f"RealMemory={self.memory_mb}" + (f" Gres={gres}" if gres else "") + " State=UNKNOWN",
        ]
        for i, p in enumerate(self.partitions):
            default = "YES" if i == 0 else "NO"
            lines.append(
                f"PartitionName={p} Nodes={nodes} Default={default} MaxTime=INFINITE State=UP"
            )
        self.conf.write_text("\n".join(lines) + "\n")
        gres_conf = (
            f"NodeName={self.node_name} Name=gpu Type={self.gpu_type} File=/dev/null\n"
            if self.gpus
            else ""
        )
        (d / "gres.conf").write_text(gres_conf)
        for f in (self.conf, d / "gres.conf"):
            os.chmod(f, 0o644)

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        mdir = self.munge_socket.parent
        mdir.mkdir(mode=0o755)
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        for p in (mdir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        self.procs["munged"] = subprocess.Popen(
            [
                "runuser", "-u", "munge", "--",
                "/usr/sbin/munged", "--foreground", "--force",
                f"--socket={self.munge_socket}", f"--key-file={key}",
                f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
                f"--seed-file={mdir / 'munged.seed'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait(lambda: self.munge_socket.exists(), 20, "munged socket")

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @contextlib.contextmanager
    def exported(self):
        """``SLURM_CONF`` of this cluster in ``os.environ`` (processes started meanwhile, e.g.
        ``afhub up``, use it), restored after."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _daemon(self, name: str, *args: str, netns: str = "", mounts: dict | None = None) -> None:
        log = open(self.dir / "log" / f"{name}.out", "ab")
        # nsenter, not `ip netns exec` (which mounts a fresh /sys: slurmd loses the cgroups)
        prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
        argv = [f"/usr/sbin/{name}", "-D", *args]
        if mounts:  # a private mount namespace: the binds, then exec the daemon (same pid)
            binds = [f"mount --bind {shlex.quote(s)} {shlex.quote(t)}" for t, s in mounts.items()]
            script = " && ".join([*binds, "exec " + shlex.join(argv)])
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        self.procs[name] = subprocess.Popen(
            [*prefix, *argv],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            if self.network:
                self.network.create()
            self._write_config()
            self._start_munge()
            self._daemon("slurmctld", "-i")
            self._wait(
                lambda: self.run("scontrol", "ping", check=False).returncode == 0,
                timeout,
                "slurmctld",
            )
            netns = self.network.name if self.network else ""
            self._daemon("slurmd", "-N", self.node_name, netns=netns, mounts=self.node_mounts)
            self._wait(self._node_ready, timeout, "slurmd registered and idle")
        except BaseException:
            self.stop()
            raise
        return self

    def stop_controller(self) -> None:
        """Stop slurmctld (it saves its state; clients then fail with "Unable to contact slurm
        controller"); slurmd and the running jobs stay."""
        p = self.procs.pop("slurmctld")
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)

    def start_controller(self, timeout: float = 60) -> None:
        """Start slurmctld again, recovering the jobs from its state directory."""
        self._daemon("slurmctld")
        self._wait(
            lambda: self.run("scontrol", "ping", check=False).returncode == 0,
            timeout,
            "slurmctld after a restart",
        )

    def job_environment(self, job_id: str) -> str:
        """The environment slurmctld stored for a batch job (its state directory, root only)."""
        path = self.dir / "state" / f"hash.{int(job_id) % 10}" / f"job.{job_id}" / "environment"
        return path.read_bytes().decode("utf-8", errors="replace")

    def _node_ready(self) -> bool:
        node = self.node()
        state = node.get("State", "")
        return state.startswith(("IDLE", "MIXED", "ALLOCATED")) and "NOT_RESPONDING" not in state

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.logs()}")
            if predicate():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{what} not ready in {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job and wait until the queue is empty (slurmd must be up to kill the
        job steps), stop the daemons (slurmd, slurmctld, munged), kill any job process left
        behind (:func:`kill_orphaned_steps`), remove the files."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            ids = [j["id"] for j in self.queue()]
            if ids:
                self.run("scancel", "--full", *ids, check=False)
            deadline = time.monotonic() + 30
            while self.queue() and time.monotonic() < deadline:
                time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        kill_orphaned_steps(str(self.conf))
        if self.network:
            self.network.remove()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------
    def run(
        self, *cmd: str, check: bool = True, user: str | None = None, **kw
    ) -> subprocess.CompletedProcess:
        argv = list(cmd) if user is None else ["sudo", "-E", "-u", user, *cmd]
        return subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True,
            check=check, timeout=60, **kw,
        )  # fmt: skip

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still lists (``scontrol show job --oneliner``), finished ones too."""
        out = self.run("scontrol", "show", "job", "--oneliner", check=False).stdout
        return [parse_kv(line) for line in out.splitlines() if line.startswith("JobId=")]

    def submitted(self) -> set[str]:
        """Ids of every job ever accepted by ``sbatch``, from slurmctld's log.

        ``jobs()`` forgets finished jobs after ``MinJobAge`` (2 s here), so "nothing was
        submitted" must be read from the log, not from the job list.
        """
        try:
            text = (self.dir / "log" / "slurmctld.log").read_text(errors="replace")
        except FileNotFoundError:
            return set()
        return set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text))

    def queue(self) -> list[dict[str, str]]:
        """Jobs pending or running (what ``squeue`` shows)."""
        out = self.run("squeue", "-h", "-o", "%i %T %r %u", check=False).stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return [{"id": r[0], "state": r[1], "reason": r[2], "user": r[3]} for r in rows]

    def job(self, job_id: str) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return parse_kv(out.strip())

    def node(self) -> dict[str, str]:
        r = self.run("scontrol", "show", "node", "--oneliner", self.node_name, check=False)
        return parse_kv(r.stdout.strip()) if r.returncode == 0 else {}

    def logs(self) -> str:
        parts = []
        for f in sorted(self.dir.rglob("*.log")) + sorted(self.dir.rglob("*.out")):
            try:
                parts.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(parts)
