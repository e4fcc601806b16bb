"""A second host in the tests (issue 26): the test Slurm's compute node runs in its own network
namespace (tests/slurm.py ``NodeNetwork``: a veth pair with private addresses, made and removed
by the fixture), slurmctld, the hub and the proxy on this side. Batch servers on the node reach
the hub only over the link, at ``hub.node_address``: anything that works only on loopback fails
here.

Two sites run on it (``fac`` is parametrised, each test runs for both):

- ``test-site``: test_batch_slurm's site, servers from the server environment (no image);
- ``shipped-example``: ``hub_config/examples/slurm.yaml`` as shipped, adapted only by what
  names this test's hosts and ports (:func:`shipped_example_values` lists each key); the site's
  own paths (``/sdf/...``, ``/cvmfs``) are made by the ``site_paths`` fixture. Its profiles run
  Apptainer images. **Apptainer cannot run here** (not in Debian 12, not on PyPI, no other
  registry reachable): the node's ``apptainer`` is ``tests/apptainer_standin.py``, the one
  faked boundary, bound into the node's mount namespace only. It checks the command line
  afhub's job scripts really produce (``exec``, ``--nv``, ``--bind`` sources, the image
  reference), records it for the assertions below, and runs the inner command on the node
  with the server environment.

Fixtures (module scope): ``standin`` (the apptainer stand-in and its records), ``cluster``
(two-host Slurm), ``fac`` (``afhub up`` with the hub API and the proxy reachable over the
link). The loopback copy of the shipped example is refused by ``check``:
test_check_rules.py ``test_a_loopback_copy_of_the_slurm_example_is_refused_naming_every_key``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from facility import Facility, example_values, free_port, loopback_values, wait_for
from slurm import SlurmCluster, require, server_env, slurm_available
from test_batch_slurm import accounts, batch_values, user_jobs  # noqa: F401  (fixture)

HERE = Path(__file__).resolve().parent


class Standin:
    """The node's ``apptainer`` (tests/apptainer_standin.py) in a directory of its own, with
    its settings file and a world-writable directory where each call leaves a record."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="afhub-apptainer-"))
        self.bin, self.record = self.dir / "bin", self.dir / "calls"
        self.bin.mkdir()
        self.record.mkdir()
        for d, mode in ((self.dir, 0o755), (self.bin, 0o755), (self.record, 0o1777)):
            os.chmod(d, mode)
        exe = self.bin / "apptainer"
        shutil.copyfile(HERE / "apptainer_standin.py", exe)
        os.chmod(exe, 0o755)
        settings = {"record": str(self.record), "server_env": server_env()}
        (self.bin / "apptainer-standin.json").write_text(json.dumps(settings))

    def calls(self, job: str | None = None) -> list[dict]:
        out = [json.loads(p.read_text()) for p in self.record.glob("*.json")]
        return [c for c in out if job is None or c["job"] == job]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def standin():
    s = Standin()
    yield s
    s.remove()


@pytest.fixture(scope="module")
def cluster(standin):
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    # the node is declared with the CPUs and memory the shipped example's profiles ask for
    # (Slurm accounts for them; nothing here enforces or uses that much); partitions of both
    # sites; the apptainer stand-in on the node's PATH (/usr/local/bin there only)
    c = SlurmCluster(
        cpus=16, memory_mb=100_000, gpus=1, gpu_type="a100", node_netns=True,
        partitions=("cpu", "gpu", "milano", "ampere"),
        node_mounts={"/usr/local/bin": str(standin.bin)},
    )  # fmt: skip
    c.start()
    with c.exported():
        yield c
    c.stop()
    import subprocess

    assert (
        c.network.name
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


def test_jobs_run_on_the_node_and_reach_this_side_only_over_the_link(cluster):
    """The node has its own addresses; a listener on this side's 127.0.0.1 is out of its reach,
    one on the link address is not."""
    net = cluster.network
    outer = socket.create_server(("127.0.0.1", 0))
    link = socket.create_server((net.host_ip, 0))
    for s in (outer, link):
        threading.Thread(target=lambda s=s: s.accept(), daemon=True).start()
    probe = (
        "import socket,sys\n"
        "for h,p in ((sys.argv[1],int(sys.argv[2])),('127.0.0.1',int(sys.argv[3]))):\n"
        "    try: socket.create_connection((h,p),2); print('open',h)\n"
        "    except OSError: print('closed',h)\n"
    )
    r = cluster.run(
        "srun", "-p", "cpu", "python3", "-c", probe,
        net.host_ip, str(link.getsockname()[1]), str(outer.getsockname()[1]), check=False,
    )  # fmt: skip
    assert r.stdout.split("\n")[:2] == [f"open {net.host_ip}", "closed 127.0.0.1"], r
    ips = cluster.run("srun", "-p", "cpu", "ip", "-o", "-4", "addr", check=False).stdout
    assert net.node_ip in ips and net.host_ip not in ips
    outer.close()
    link.close()


def two_host_values(cluster) -> dict:
    """test_batch_slurm's site on the two-host Slurm: the hub API and the proxy listen on this
    side's link address, which servers are told through hub.node_address."""
    net = cluster.network
    values = loopback_values(batch_values(cluster))
    values["hub"].update(
        {
            "ip": net.host_ip,
            "hub_ip": net.host_ip,
            "node_address": net.host_ip,
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
        }
    )
    values["backend"]["slurm"].update(
        {"server_ip": "0.0.0.0", "node_addresses": {cluster.node_name: net.node_ip}}
    )
    # Dask on the same Slurm: the gateway's proxies on the link address, schedulers and
    # workers on the node (all interfaces there), GPU workers in the GPU partition
    values["dask"] = {
        "enabled": True,
        "backend": "slurm",
        "port": free_port(),
        "scheduler_port": free_port(),
        "server_check_interval": 1,
        "max_worker_gpus": 1,
        "slurm": {
            "partition": "cpu",
            "gateway_ip": net.host_ip,
            "listen_ip": "0.0.0.0",
            "scheduler_memory": 1,
            "gpu_workers": {"partition": "gpu", "type": "a100"},
        },
    }
    return values


EXAMPLE_USERS = {  # the demo provider's users for the shipped example (its groups)
    "batchalice": ["af-users"],
    "batchbob": ["af-users", "af-gpu"],
    "batchcarol": ["af-users", "af-admins"],
}
SITE_MARK = ".afhub-test-site"  # in a top directory site_paths made
EXAMPLE_PATHS = ("/cvmfs", "/sdf/home", "/sdf/group", "/sdf/data", "/sdf/scratch/users")


def shipped_example_values(cluster, issuer: str) -> dict:
    """``hub_config/examples/slurm.yaml`` as shipped, but for what names this test's hosts:

    - ``hub.node_address`` (``hub.af.example.org``): this side's link address;
    - ``auth.issuer`` (``https://login.af.example.org``): the demo provider the ``demo_issuer``
      fixture runs on the link address, with ``authorize_url``/``token_url`` added because the
      provider's paths (``/oauth2/...``) are not the generic preset's; ``auth.callback_url``
      (``https://af.example.org/...``): the proxy on the link address in plain HTTP (no TLS in
      front here), set by the ``fac`` fixture once ``hub.port`` is known;
    - ``backend.slurm.node_addresses``: the node's name, ``afnode1``, which no DNS resolves here.

    ``hub.port`` (8000) becomes a free port (``Facility``); the hub API, proxy API and gateway
    ports are left unset, as in the file, and ``afhub up`` picks free ones. ``hub.ip``,
    ``hub.hub_ip`` and ``dask.slurm.gateway_ip`` stay ``0.0.0.0``; the site's paths
    (``/sdf/...``, ``/cvmfs``) are made by the ``site_paths`` fixture."""
    values = example_values("slurm")
    net = cluster.network
    values["hub"]["node_address"] = net.host_ip
    values["auth"].update(
        issuer=issuer,
        authorize_url=f"{issuer}/oauth2/authorize",
        token_url=f"{issuer}/oauth2/token",
    )
    values["backend"]["slurm"]["node_addresses"] = {cluster.node_name: net.node_ip}
    return values


@dataclass(frozen=True)
class Site:
    """What a site's tests start and expect: per kind of server (``cpu``, ``gpu``) the user,
    the profile slug, the partition and the image its job runs (None: the server environment,
    no Apptainer); the Dask cluster's user and its scheduler's and GPU worker's partitions."""

    name: str
    users: dict
    profiles: dict
    partitions: dict
    images: dict
    binds: tuple = ()
    dask_user: str = "batchalice"
    dask_partitions: tuple = ("cpu", "gpu")
    dask_image: str | None = None


def shipped_site() -> Site:
    """The shipped example's expectations, read from the file (profiles, images, binds)."""
    ex = example_values("slurm")
    refs = {i["name"]: i["image"] for i in ex["images"]}
    cpu, gpu = (next(p for p in ex["profiles"] if p["slug"] == s) for s in ("cpu", "gpu-a100"))
    return Site(
        "shipped-example",
        users={"cpu": "batchalice", "gpu": "batchbob"},  # batchbob is in af-gpu
        profiles={"cpu": cpu["slug"], "gpu": gpu["slug"]},
        partitions={"cpu": cpu["batch"]["partition"], "gpu": gpu["batch"]["partition"]},
        images={"cpu": refs[cpu["image"]], "gpu": refs[gpu["image"]]},
        binds=tuple(ex["backend"]["slurm"]["apptainer"]["binds"]),
        dask_user="batchbob",  # GPU workers: the af-gpu limits entry
        dask_partitions=(
            ex["dask"]["slurm"]["partition"],
            ex["dask"]["slurm"]["gpu_workers"]["partition"],
        ),
        dask_image=refs[cpu["image"]],  # the first image offered (the default): coffea
    )


@pytest.mark.parametrize("site", ["test-site", "shipped-example"])
def test_two_host_values_pass_check(cluster, site):
    from afhub.hub_config import cli

    if site == "test-site":
        values = two_host_values(cluster)
    else:
        values = shipped_example_values(cluster, f"http://{cluster.network.host_ip}:9")
    # what `afhub check` runs on a Slurm file: the standalone checks, the address rules included
    assert cli.check_values(values, "standalone", data_dir="/nonexistent") == []


@pytest.fixture(scope="module")
def site_paths(accounts):  # noqa: F811
    """The shipped example's site paths on both hosts (they share the file systems, as a site's
    hosts share /sdf and /cvmfs): the Apptainer binds, the server environment at
    ``backend.slurm.environment`` (a link to this machine's; the gateway runs its job launcher
    from there), each user's scratch directory (the Dask staging directories go below it).
    What did not exist is removed after; a top directory carrying this fixture's mark was left
    by an interrupted run and is made afresh (a site's own /sdf or /cvmfs has no mark, and stays).
    """
    created = []
    for top in ("/sdf", "/cvmfs"):
        if os.path.isfile(os.path.join(top, SITE_MARK)) and not os.path.islink(top):
            shutil.rmtree(top)
        if not os.path.lexists(top):
            os.makedirs(top)
            with open(os.path.join(top, SITE_MARK), "w") as f:
                f.write("made by tests/test_two_hosts.py site_paths; removed after the module\n")
            created.append(top)
    for d in EXAMPLE_PATHS:
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
    env = example_values("slurm")["backend"]["slurm"]["environment"]
    os.makedirs(os.path.dirname(env), exist_ok=True)
    if not os.path.lexists(env):
        os.symlink(server_env(), env)
    for user in accounts:
        d = os.path.join("/sdf/scratch/users", user)
        os.makedirs(d, exist_ok=True)
        pw = pwd.getpwnam(user)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
    yield
    for top in created:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_issuer(cluster, tmp_path_factory):
    """The demo OIDC provider (hub_config/demo.py ``idp_command``, as ``afhub up`` runs it) on
    this side's link address, with the shipped example's groups: the example's issuer."""
    from afhub.hub_config.demo import idp_command

    host, port = cluster.network.host_ip, free_port()
    users = {
        "auth": {"dev": {"users": [{"name": n, "groups": g} for n, g in EXAMPLE_USERS.items()]}}
    }
    log = open(tmp_path_factory.mktemp("idp") / "idp.log", "wb")
    proc = subprocess.Popen(
        idp_command(users, host, port), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    issuer = f"http://{host}:{port}"

    def answers():
        assert proc.poll() is None, "the demo provider exited"
        try:
            return requests.get(issuer + "/.well-known/openid-configuration", timeout=5).ok
        except requests.RequestException:
            return False

    wait_for(answers, 60, what="the demo provider")
    yield issuer
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def fac(request, cluster, accounts, site_paths, demo_issuer, tmp_path_factory):  # noqa: F811
    """``afhub up`` for the shipped example (``hub_config/examples/slurm.yaml``), its public
    proxy reached on this side's link address (servers on the node reach the Dask gateway
    through it: ``DASK_GATEWAY__ADDRESS``). No ``--ip`` or ``--port``: a values file for more
    than one host takes them from the file.

    One facility: the test site of ``two_host_values`` (no images, addresses on the link) is
    only checked (``test_two_host_values_pass_check``); running it too repeated every assertion
    below on the same hosts, with a second hub and ~2 minutes more of the suite."""
    ip = cluster.network.host_ip
    workdir = tmp_path_factory.mktemp("shipped-example")
    f, site = (
        Facility(shipped_example_values(cluster, demo_issuer), workdir, loopback=False),
        shipped_site(),
    )
    f.values["auth"]["callback_url"] = f"http://{ip}:{f.port}/hub/oauth_callback"
    f.values_path.write_text(yaml.safe_dump(f.values))
    f.site = site
    f.url = f"http://{ip}:{f.port}/"
    # auth.client_secret: {env: AFHUB_OIDC_CLIENT_SECRET} (the demo provider takes any)
    os.environ["AFHUB_OIDC_CLIENT_SECRET"] = os.urandom(16).hex()
    try:
        f.start(
            cmd=[sys.executable, "-m", "afhub.hub_config", "up", "-f", str(f.values_path),
                 "--data-dir", str(f.data_dir)]
        )  # fmt: skip
    finally:
        del os.environ["AFHUB_OIDC_CLIENT_SECRET"]
    yield f
    f.stop()


def check_container_calls(
    standin, site: Site, job: str, image: str | None, *, gpu: bool, user: str
):
    """The apptainer calls a job made on the node: none without an image; else ``exec`` of
    ``image`` with the site's binds, ``--nv`` exactly with GPUs, as the job's user. Returns them."""
    calls = standin.calls(job)
    if image is None:
        assert calls == [], calls
        return calls
    assert calls, f"job {job} ran no apptainer"
    for c in calls:
        assert c["image"] == image and c["binds"] == list(site.binds), c
        assert c["nv"] == gpu and c["uid"] == pwd.getpwnam(user).pw_uid, c
        if gpu:
            assert c["gpus"] == "0", c  # Slurm gave the job the node's GPU
    return calls


def test_cpu_and_gpu_profiles_spawn_on_the_node_and_reach_jupyterlab(fac, cluster, standin):
    site = fac.site
    sessions = {kind: fac.login(site.users[kind]) for kind in ("cpu", "gpu")}
    for kind, s in sessions.items():
        assert s.spawn({"profile": site.profiles[kind]}).status_code in (201, 202)
    for s in sessions.values():
        # ready means batchspawner-singleuser on the node reported its port to the hub API at
        # JUPYTERHUB_API_URL: the node's own 127.0.0.1 has no hub, so that was the link address
        url = s.wait_ready(timeout=180)
        lab = s.session.get(url + "lab", timeout=60)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    for kind in ("cpu", "gpu"):
        user = site.users[kind]
        (j,) = user_jobs(cluster, user)
        job = cluster.job(j["id"])
        assert job["BatchHost"] == cluster.node_name and job["Partition"] == site.partitions[kind]
        # the server in the job called the hub API over the link (no loopback was handed out)
        env = cluster.run("scontrol", "show", "job", j["id"], check=False).stdout
        assert "127.0.0.1" not in env
        if kind == "gpu":
            assert "gres:gpu:a100:1" in job.get("TresPerNode", ""), job
        calls = check_container_calls(
            standin, site, j["id"], site.images[kind], gpu=kind == "gpu", user=user
        )
        if calls:  # the server itself ran in the image, through batchspawner's wrapper
            assert [c["command"][:2] for c in calls] == [
                ["batchspawner-singleuser", "jupyterhub-singleuser"]
            ], calls
    for s in sessions.values():
        s.stop_server()
    wait_for(lambda: cluster.queue() == [], timeout=60, what="an empty squeue")


DASK_PROBE = """
import json, os, socket, sys
from afhub.server_ext.dask import new_cluster

def where():
    import psutil
    me = psutil.Process()
    peers = sorted({c.raddr[0] for c in me.net_connections("tcp") if c.raddr})
    binds = sorted({c.laddr[0] for c in me.net_connections("tcp") if c.status == "LISTEN"})
    env = {k: v for k, v in os.environ.items() if k.startswith(("DASK_", "JUPYTERHUB"))}
    return {"job": os.environ.get("SLURM_JOB_ID"), "partition": os.environ.get(
        "SLURM_JOB_PARTITION"), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "peers": peers, "binds": binds, "env": env, "host": socket.gethostname()}

cluster = new_cluster(workers=1, worker_cores=1, worker_memory=1, worker_gpus=1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=120)
info = client.scheduler_info()
print(json.dumps({
    "name": cluster.name,
    "env": {k: v for k, v in os.environ.items() if k.startswith("DASK_GATEWAY")},
    "client_scheduler": client.scheduler.address,
    "scheduler_address": info["address"],
    "workers": sorted(info["workers"]),
    "scheduler": client.run_on_scheduler(where),
    "on_workers": list(client.run(where).values()),
    "sum": client.submit(sum, range(10)).result(),
    "dashboard_link": cluster.dashboard_link,
}))
"""


def test_dask_cluster_from_a_server_on_the_node_runs_there_over_the_link(fac, cluster, standin):
    """A batch server on the node makes a Dask cluster with the gateway (Slurm backend): the
    scheduler and the GPU worker are Slurm jobs on the node (the worker in the GPU partition,
    dask.slurm.gpu_workers), the notebook's computation runs, the dashboard opens through the
    owner's relay, and nothing on the way used a loopback address. For the shipped example,
    scheduler and worker run in the notebook's image (Apptainer, ``--nv`` for the worker)."""
    from kernel_ws import Kernel

    net, site = cluster.network, fac.site
    user = fac.login(site.dask_user)
    if not (user.server_model() or {}).get("ready"):
        assert user.spawn({"profile": site.profiles["cpu"]}).status_code in (201, 202)
        user.wait_ready(timeout=180)
    k = Kernel(user)
    out = k.json(DASK_PROBE, timeout=240)
    # the server was told the gateway at the link address (hub.node_address)
    env = out["env"]
    assert env["DASK_GATEWAY__ADDRESS"].startswith(f"http://{net.host_ip}:"), env
    assert env["DASK_GATEWAY__PROXY_ADDRESS"].startswith(f"gateway://{net.host_ip}:"), env
    if fac.values["dask"].get("scheduler_port"):
        assert env["DASK_GATEWAY__PROXY_ADDRESS"].endswith(
            f":{fac.values['dask']['scheduler_port']}"
        )
    assert out["sum"] == 45
    # the scheduler reported its node address to the gateway; the worker registered with it
    assert out["scheduler_address"].startswith(f"tls://{net.node_ip}:"), out
    assert out["workers"] and all(w.startswith(f"tls://{net.node_ip}:") for w in out["workers"])
    sched, (worker,) = out["scheduler"], out["on_workers"]
    # jobs on the node: the scheduler in dask.slurm.partition, the GPU worker in the GPU one
    jobs = {j["id"]: cluster.job(j["id"]) for j in user_jobs(cluster, site.dask_user)}
    assert {sched["job"], worker["job"]} <= set(jobs), (jobs, sched, worker)
    for j in (sched["job"], worker["job"]):
        assert jobs[j]["BatchHost"] == cluster.node_name and jobs[j]["JobName"] == "dask-gateway"
    assert jobs[sched["job"]]["Partition"] == site.dask_partitions[0]
    assert jobs[worker["job"]]["Partition"] == site.dask_partitions[1] and worker["gpus"] == "0"
    assert "gres:gpu:a100:1" in jobs[worker["job"]].get("TresPerNode", ""), jobs[worker["job"]]
    # in the image or not, as the site says
    kw = {"user": site.dask_user}
    sched_calls = check_container_calls(
        standin, site, sched["job"], site.dask_image, gpu=False, **kw
    )
    worker_calls = check_container_calls(
        standin, site, worker["job"], site.dask_image, gpu=True, **kw
    )
    if site.dask_image:
        assert ["dask", "scheduler"] in [c["command"][:2] for c in sched_calls], sched_calls
        assert [c["command"][:2] for c in worker_calls] == [["dask", "worker"]], worker_calls
    # no loopback: what jobs were handed (the gateway API URL), where they listen, whom
    # they talk to
    for where in (sched, worker):
        assert not any(v.startswith(("127.", "::1")) for v in where["peers"]), where
        assert not any(b.startswith("127.") for b in where["binds"]), where
        for key, value in where["env"].items():
            assert "127.0.0.1" not in value and "localhost" not in value, (key, value)
    assert sched["env"]["DASK_GATEWAY_API_URL"].startswith(f"http://{net.host_ip}:"), sched
    assert net.host_ip in sched["peers"]  # the gateway's API (heartbeats) over the link
    for j in jobs:
        assert "127.0.0.1" not in cluster.job_environment(j)
    # the dashboard through the user's server (the relay), which reaches the scheduler's on
    # the node
    name = out["name"]
    user.server_api("GET", "afhub/api/dask/clusters")
    r = user.get(f"/user/{site.dask_user}/afhub/dask/clusters/{name}/status")
    assert r.status_code == 200 and "Bokeh.embed.embed_items" in r.text, r.text[:500]
    k.run("cluster.shutdown()", timeout=120)
    user.stop_server()
    wait_for(lambda: cluster.queue() == [], timeout=60, what="an empty squeue")
