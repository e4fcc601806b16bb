"""Dask on Slurm with the ``slurm`` backend for servers too (the usual facility): the user's
server is a Slurm job (batchspawner), her Dask cluster's scheduler and worker are Slurm jobs of
the same site account, and all of them outlive a hub restart; stopping the server then cancels
the cluster's jobs. Real Slurm (``tests/slurm.py``), real ``afhub up``, nothing faked.
"""

from __future__ import annotations

import pwd
import secrets
import subprocess

import pytest
from facility import Facility, free_port, loopback_values, wait_for
from kernel_ws import Kernel
from slurm import SlurmCluster, batch_hub_values, require, server_env, slurm_available

pytestmark = pytest.mark.integration

USER = f"dsb{secrets.token_hex(3)}"  # a site account named as the hub user (no prefix)


@pytest.fixture(scope="module")
def slurm():
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    # server (1 CPU, 1 GiB) + scheduler (1 CPU, 2 GiB) + worker (1 CPU, 1 GiB)
    with SlurmCluster(cpus=4, memory_mb=6000, gpus=0, partitions=("cpu",)) as c, c.exported():
        yield c


@pytest.fixture(scope="module")
def account():
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    yield pwd.getpwnam(USER)
    subprocess.run(["userdel", "--remove", USER], capture_output=True)


@pytest.fixture(scope="module")
def fac(slurm, account, tmp_path_factory):
    values = loopback_values(
        {
            **batch_hub_values(slurm, [USER]),
            "dask": {
                "enabled": True,
                "server_check_interval": 1,
                "slurm": {"partition": "cpu", "listen_ip": "127.0.0.1"},
            },
        }
    )
    # fixed ports: running servers and schedulers must find the hub and gateway after a restart
    values["hub"].update({"hub_port": free_port(), "proxy_api_port": free_port()})
    values["dask"].update({"port": free_port(), "scheduler_port": free_port()})
    f = Facility(values, tmp_path_factory.mktemp("dask-slurm-batch"), loopback=False)
    f.start()
    yield f
    f.stop()


def jobs(slurm) -> list[dict]:
    return [slurm.job(j["id"]) for j in slurm.queue() if j["user"] == USER]


def all_running(slurm, n: int) -> list[dict] | None:
    js = jobs(slurm)
    return js if len(js) == n and all(j["JobState"] == "RUNNING" for j in js) else None


CONNECT = """
import json
from afhub.server_ext.dask import connect
cluster = connect()
client = cluster.get_client()
client.wait_for_workers(1, timeout=60)
print(json.dumps(client.submit(sum, [1, 2, 3]).result()))
"""


def test_cluster_jobs_outlive_a_hub_restart_and_stop_with_the_server(fac, slurm, account):
    hs = fac.login(USER)
    assert hs.spawn().status_code in (201, 202)
    hs.wait_ready(timeout=180)
    (server_job,) = jobs(slurm)
    out = Kernel(hs).json(
        "from afhub.server_ext.dask import new_cluster\n"
        "import json, os\n"
        "cluster = new_cluster(workers=1)\n"
        "client = cluster.get_client()\n"
        "client.wait_for_workers(1, timeout=120)\n"
        "print(json.dumps({'uid': os.getuid(),\n"
        "    'worker': list(client.run(os.getenv, 'SLURM_JOB_ID').values())}))",
        timeout=240,
    )
    assert out["uid"] == account.pw_uid  # the notebook runs as the site account ...
    running = wait_for(lambda: all_running(slurm, 3), 30, what="server, scheduler, worker")
    # ... and so do the scheduler and the worker, as Slurm jobs
    assert {j["UserId"] for j in running} == {f"{USER}({account.pw_uid})"}
    assert out["worker"][0] in {j["JobId"] for j in running} - {server_job["JobId"]}
    ids = {j["JobId"] for j in running}

    fac.stop()  # batch servers outlive the hub, so their clusters do too
    assert {j["id"] for j in slurm.queue()} == ids
    fac.start()
    hs = fac.login(USER)
    hs.wait_ready(timeout=60)
    assert Kernel(hs).json(CONNECT, timeout=120) == 6  # the same cluster, still reachable
    assert {j["id"] for j in slurm.queue()} == ids

    hs.stop_server(timeout=60)
    wait_for(lambda: not slurm.queue(), 60, what="empty squeue")
