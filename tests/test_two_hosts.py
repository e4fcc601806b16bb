"""A second host in the tests (issue 26): the test Slurm's compute node runs in its own network
namespace (tests/slurm.py ``NodeNetwork``: a veth pair with private addresses, made and removed
by the fixture), slurmctld, the hub and the proxy on this side. Batch servers on the node reach
the hub only over the link, at ``hub.node_address``: anything that works only on loopback fails
here.

Fixtures (module scope): ``cluster`` (two-host Slurm), ``fac`` (afhub up with the hub API and
the proxy on this side's link address)."""

from __future__ import annotations

import socket
import sys
import threading

import pytest
from facility import Facility, free_port, loopback_values, wait_for
from slurm import SlurmCluster, require, server_env, slurm_available
from test_batch_slurm import accounts, batch_values, user_jobs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def cluster():
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    c = SlurmCluster(cpus=4, memory_mb=6000, gpus=1, gpu_type="a100", node_netns=True)
    c.start()
    with c.exported():
        yield c
    c.stop()
    import subprocess

    assert c.network.name not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout


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


def test_two_host_values_pass_check(cluster):
    from afhub.hub_config import cli

    values = two_host_values(cluster)
    problems = cli.check_values(values, "standalone", data_dir="/nonexistent")
    assert [p for p in problems if p.path.startswith(("hub.", "backend.slurm.", "dask."))] == []


@pytest.fixture(scope="module")
def fac(cluster, accounts, tmp_path_factory):  # noqa: F811
    f = Facility(two_host_values(cluster), tmp_path_factory.mktemp("two-hosts"), loopback=False)
    # the public proxy on the link address too (Facility.start would put it on 127.0.0.1):
    # notebooks on the node reach the Dask gateway through it (DASK_GATEWAY__ADDRESS)
    ip = cluster.network.host_ip
    f.url = f"http://{ip}:{f.port}/"
    f.start(
        cmd=[sys.executable, "-m", "afhub.hub_config", "up", "-f", str(f.values_path),
             "--ip", ip, "--port", str(f.port), "--data-dir", str(f.data_dir)]
    )  # fmt: skip
    yield f
    f.stop()


def test_cpu_and_gpu_profiles_spawn_on_the_node_and_reach_jupyterlab(fac, cluster):
    alice, bob = fac.login("batchalice"), fac.login("batchbob")
    assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
    assert bob.spawn({"profile": "gpu"}).status_code in (201, 202)
    for s in (alice, bob):
        # ready means batchspawner-singleuser on the node reported its port to the hub API at
        # JUPYTERHUB_API_URL: the node's own 127.0.0.1 has no hub, so that was the link address
        url = s.wait_ready(timeout=180)
        lab = s.session.get(url + "lab", timeout=60)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    for user, partition in (("batchalice", "cpu"), ("batchbob", "gpu")):
        (j,) = user_jobs(cluster, user)
        job = cluster.job(j["id"])
        assert job["BatchHost"] == cluster.node_name and job["Partition"] == partition
        # the server in the job called the hub API over the link (no loopback was handed out)
        env = cluster.run("scontrol", "show", "job", j["id"], check=False).stdout
        assert "127.0.0.1" not in env
    for s in (alice, bob):
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


def test_dask_cluster_from_a_server_on_the_node_runs_there_over_the_link(fac, cluster):
    """A batch server on the node makes a Dask cluster with the gateway (Slurm backend): the
    scheduler and the GPU worker are Slurm jobs on the node (the worker in the GPU partition,
    dask.slurm.gpu_workers), the notebook's computation runs, the dashboard opens through the
    owner's relay, and nothing on the way used a loopback address."""
    from kernel_ws import Kernel

    net = cluster.network
    alice = fac.login("batchalice")
    if not (alice.server_model() or {}).get("ready"):
        assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
        alice.wait_ready(timeout=180)
    k = Kernel(alice)
    out = k.json(DASK_PROBE, timeout=240)
    # the server was told the gateway at the link address (hub.node_address)
    env = out["env"]
    assert env["DASK_GATEWAY__ADDRESS"].startswith(f"http://{net.host_ip}:"), env
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == (
        f"gateway://{net.host_ip}:{fac.values['dask']['scheduler_port']}"
    ), env
    assert out["sum"] == 45
    # the scheduler reported its node address to the gateway; the worker registered with it
    assert out["scheduler_address"].startswith(f"tls://{net.node_ip}:"), out
    assert out["workers"] and all(w.startswith(f"tls://{net.node_ip}:") for w in out["workers"])
    sched, (worker,) = out["scheduler"], out["on_workers"]
    # jobs on the node: the scheduler in dask.slurm.partition, the GPU worker in the GPU one
    jobs = {j["id"]: cluster.job(j["id"]) for j in user_jobs(cluster, "batchalice")}
    assert {sched["job"], worker["job"]} <= set(jobs), (jobs, sched, worker)
    for j in (sched["job"], worker["job"]):
        assert jobs[j]["BatchHost"] == cluster.node_name and jobs[j]["JobName"] == "dask-gateway"
    assert jobs[sched["job"]]["Partition"] == "cpu"
    assert jobs[worker["job"]]["Partition"] == "gpu" and worker["gpus"] == "0"
    assert "gres:gpu:a100:1" in jobs[worker["job"]].get("TresPerNode", ""), jobs[worker["job"]]
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
    # the dashboard through alice's server (the relay), which reaches the scheduler's on the node
    name = out["name"]
    alice.server_api("GET", "afhub/api/dask/clusters")
    r = alice.get(f"/user/batchalice/afhub/dask/clusters/{name}/status")
    assert r.status_code == 200 and "Bokeh.embed.embed_items" in r.text, r.text[:500]
    k.run("cluster.shutdown()", timeout=120)
    alice.stop_server()
    wait_for(lambda: cluster.queue() == [], timeout=60, what="an empty squeue")
