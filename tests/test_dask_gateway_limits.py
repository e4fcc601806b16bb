"""The gateway process on its own (``python -m afhub.hub_config.gateway``, the Slurm backend,
a real Slurm on this machine): what it refuses whatever the client sends.

- an image the spawn page hides from the user (gated by a profile's ``allowed_groups``) is
  refused by the REST create call, and no cluster or job is made;
- parallel creates never pass ``max_clusters``: Slurm's options check (``sbatch --test-only``)
  awaits between the count and the creation, where 8 parallel creates all went through.

The gateway runs with the settings the hub writes for it (``apply.build``), clusters as the
gateway's own account (``backend.local.accounts: shared-uid``: no sudo), and, through the
operator's ``dask_gateway_config.py``, dask-gateway's ``SimpleAuthenticator`` in place of the
hub (its users have no groups). Nothing else is faked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from facility import wait_for
from slurm import SlurmCluster, require, slurm_available

pytestmark = pytest.mark.integration

GATE = "max_clusters: you have 2 running cluster(s) and may have at most 2; stop one first"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher() -> tuple[str, str]:
    prefix = os.environ.get("AFHUB_SERVER_ENV") or "/opt/afhub/envs/analysis"
    launcher = os.path.join(prefix, "bin", "dask-gateway-jobqueue-launcher")
    require(None if os.path.exists(launcher) else f"no {launcher} (`make server-env`)")
    return prefix, launcher


@pytest.fixture(scope="module")
def slurm():
    require(slurm_available())
    with SlurmCluster(cpus=4, memory_mb=6000, gpus=1, partitions=("dask",)) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(slurm, tmp_path_factory):
    from afhub.hub_config import apply

    prefix, launcher = _launcher()
    data_dir = tmp_path_factory.mktemp("gateway")
    port = _free_port()
    values = {
        "hub": {"port": 8000},
        "auth": {"provider": "dev"},
        "backend": {"type": "local", "local": {"accounts": "shared-uid"}},
        "images": [
            {"name": "analysis", "image": "a:1", "local_prefix": prefix},
            {"name": "cms-sw", "image": "c:1", "local_prefix": prefix},
        ],
        "profiles": [
            {"display_name": "Analysis", "image": "analysis"},
            {"display_name": "CMS", "image": "cms-sw", "allowed_groups": ["cms"]},
        ],
        "dask": {
            "enabled": True,
            "backend": "slurm",
            "max_clusters": 2,
            "port": port,
            "scheduler_port": _free_port(),
            "slurm": {"partition": "dask", "listen_ip": "127.0.0.1", "launcher": launcher},
        },
    }
    plan = apply.build(values, data_dir=str(data_dir))
    (svc,) = [s for s in plan.get("JupyterHub", "services") if s["name"] == "dask-gateway"]
    settings = json.loads(svc["environment"]["AFHUB_DASK_SETTINGS"])
    settings["slurm_conf"] = str(slurm.conf)
    (data_dir / "dask_gateway_config.py").write_text(
        'c.AfhubDaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"\n'
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir),
        "AFHUB_DASK_SETTINGS": json.dumps(settings),
    }
    log = open(data_dir / "gateway.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "afhub.hub_config.gateway"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}{settings['prefix']}/api"

    def up():
        if proc.poll() is not None:
            raise AssertionError((data_dir / "gateway.log").read_text()[-3000:])
        try:
            return requests.get(api + "/health", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=60, what="the gateway")
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)  # stops its clusters: their jobs are cancelled
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def create(api: str, user: str, options: dict) -> requests.Response:
    return requests.post(
        api + "/v1/clusters/", json={"cluster_options": options}, auth=(user, "x"), timeout=120
    )


def clusters(api: str, user: str) -> list[str]:
    r = requests.get(api + "/v1/clusters/", auth=(user, "x"), timeout=30)
    assert r.status_code == 200, r.text
    return sorted(name for name, c in r.json().items() if c["status"] in ("PENDING", "RUNNING"))


def test_a_profile_gated_image_is_refused_and_nothing_is_created(gateway, slurm):
    r = create(gateway, "carol", {"image": "cms-sw"})
    assert r.status_code == 422
    assert "image: 'cms-sw' is not available to you; choose one of 'analysis'" in r.text
    # nobody was told or given anything: no cluster, no job
    assert clusters(gateway, "carol") == []
    time.sleep(1)
    assert slurm.submitted() == set()


def test_parallel_creates_stop_at_max_clusters(gateway, slurm):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: create(gateway, "alice", {}), range(8)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 201] + [422] * 6, [(r.status_code, r.text) for r in answers]
    for r in answers:
        if r.status_code == 422:
            assert GATE in r.text
    made = sorted(r.json()["name"] for r in answers if r.status_code == 201)
    assert clusters(gateway, "alice") == made
    # two scheduler jobs, no more (one per cluster)
    wait_for(lambda: len(slurm.submitted()) == 2, timeout=30, what="2 scheduler jobs")
    time.sleep(2)
    assert len(slurm.submitted()) == 2
    # another user's limit is their own
    assert create(gateway, "bob", {}).status_code == 201
