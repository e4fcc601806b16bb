"""A second host in the tests (issue 26): the test Slurm's compute node runs in its own network
namespace (tests/slurm.py ``NodeNetwork``: a veth pair with private addresses, made and removed
by the fixture), slurmctld, the hub and the proxy on this side. Batch servers on the node reach
the hub only over the link, at ``hub.node_address``: anything that works only on loopback fails
here.

Fixtures (module scope): ``cluster`` (two-host Slurm), ``fac`` (afhub up with the hub API and
the proxy on this side's link address)."""

from __future__ import annotations

import socket
import threading

import pytest
from facility import Facility, free_port, loopback_values, wait_for
from slurm import SlurmCluster, require, server_env, slurm_available
from test_batch_slurm import accounts, batch_values, user_jobs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def cluster():
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    c = SlurmCluster(cpus=4, memory_mb=4000, gpus=1, gpu_type="a100", node_netns=True)
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
    return values


def test_two_host_values_pass_check(cluster):
    from afhub.hub_config import cli

    values = two_host_values(cluster)
    problems = cli.check_values(values, "standalone", data_dir="/nonexistent")
    assert [p for p in problems if p.path.startswith(("hub.", "backend.slurm."))] == []


@pytest.fixture(scope="module")
def fac(cluster, accounts, tmp_path_factory):  # noqa: F811
    f = Facility(two_host_values(cluster), tmp_path_factory.mktemp("two-hosts"), loopback=False)
    f.start()
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
