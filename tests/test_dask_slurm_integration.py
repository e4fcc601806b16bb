"""Dask on Slurm, whole: ``afhub up`` (hub, proxy, demo OIDC provider, the real
dask-gateway-server as a hub-managed service) with ``dask.backend: slurm`` against a real Slurm
(munged + slurmctld + slurmd on this machine, ``tests/slurm.py``).

User servers are the local backend's (per-user system accounts, the hub is root); their Dask
clusters run as Slurm jobs of the same accounts: the gateway submits through ``sudo -u
<account> dask-gateway-jobqueue-launcher`` from the server environment, and the jobs run
``dask scheduler`` / ``dask worker`` of that environment. Asserted against Slurm itself
(``scontrol show job``, ``squeue``, the stored job scripts, slurmctld's submission log) and the
file system (the staging directory). Nothing is faked.

Order matters (one facility): alice's cluster and its jobs, secrets, refused options, shutdown,
then a cluster that goes away with alice's server.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from types import SimpleNamespace

import psutil
import pytest
import requests
from afhub.hub_config.gateway.slurm import sudoers_rule
from facility import REPO, example_values, wait_for
from kernel_ws import Kernel
from slurm import SlurmCluster, require, slurm_available

pytestmark = pytest.mark.integration

PARTITION = "dask"
DOCS = REPO / "docs" / "operators-dask.md"
DOC_LAUNCHER = "/opt/afhub/envs/analysis/bin/dask-gateway-jobqueue-launcher"


@pytest.fixture(scope="module")
def slurm():
    require(slurm_available())
    # scheduler (1 CPU, 2 GiB) + 2 workers (1 CPU, 1 GiB each) fit; the default partition is
    # another one, so the jobs' partition shows dask.slurm.partition was applied
    c = SlurmCluster(cpus=4, memory_mb=6000, gpus=1, partitions=("other", PARTITION))
    with c, c.exported():  # afhub up -> hub -> the gateway's settings
        yield c


def _values() -> dict:
    values = example_values("local")
    values["culling"] = {"enabled": False}
    values["dask"].update(
        {
            "backend": "slurm",
            "server_check_interval": 1,
            # more than the node has (6000 MB): the operator's limits allow what Slurm cannot run
            "max_worker_memory": 8,
            "slurm": {"partition": PARTITION, "listen_ip": "127.0.0.1"},
        }
    )
    return values


@pytest.fixture(scope="module")
def fac(slurm, start_facility):
    facility = start_facility(_values(), name="dask-slurm")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    hs = fac.login_with_server("alice")
    return hs, Kernel(hs)


def jobs_of(slurm, account: str) -> list[dict]:
    return [slurm.job(j["id"]) for j in slurm.queue() if j["user"] == account]


def running(slurm, account: str, n: int):
    jobs = jobs_of(slurm, account)
    return jobs if len(jobs) == n and all(j["JobState"] == "RUNNING" for j in jobs) else None


PROBE = """
import json, os, sys
def where():
    return {"prefix": sys.prefix, "uid": os.getuid(), "job": os.environ.get("SLURM_JOB_ID"),
            "hub_env": sorted(k for k in os.environ if k.startswith("JUPYTERHUB"))}
print(json.dumps({
    "notebook": {"prefix": sys.prefix, "uid": os.getuid()},
    "scheduler": client.run_on_scheduler(where),
    "workers": list(client.run(where).values()),
    "sum": client.submit(sum, range(10)).result(),
    "cluster_token": client.run_on_scheduler(lambda: os.environ["DASK_GATEWAY_API_TOKEN"]),
    "hub_token": os.environ["JUPYTERHUB_API_TOKEN"],
}))
"""


@pytest.fixture(scope="module")
def alice_cluster(alice, slurm, fac):
    hs, k = alice
    out = k.json(
        "from afhub.server_ext.dask import new_cluster\n"
        "import json\n"
        "cluster = new_cluster(workers=2, worker_cores=1, worker_memory=1)\n"
        "client = cluster.get_client()\n"
        "client.wait_for_workers(2, timeout=120)\n"
        "print(json.dumps({'name': cluster.name}))",
        timeout=240,
    )
    return out["name"], k.json(PROBE)


def test_scheduler_and_workers_are_slurm_jobs_of_alices_account(alice_cluster, slurm, fac):
    name, probe = alice_cluster
    account = fac.account("alice")
    uid = pwd.getpwnam(account).pw_uid
    jobs = wait_for(lambda: running(slurm, account, 3), 30, what="3 running jobs of alice")
    by_id = {j["JobId"]: j for j in jobs}
    # the scheduler and each worker run inside those jobs, as alice's account
    sched = by_id[probe["scheduler"]["job"]]
    workers = [by_id[w["job"]] for w in probe["workers"]]
    assert len({j["JobId"] for j in workers} | {sched["JobId"]}) == 3
    for j in jobs:
        assert j["UserId"] == f"{account}({uid})"
        assert j["Partition"] == PARTITION and j["JobName"] == "dask-gateway"
    assert (sched["NumCPUs"], sched["MinMemoryNode"]) == ("1", "2G")
    for j in workers:
        assert (j["NumCPUs"], j["MinMemoryNode"]) == ("1", "1G")
    # the same environment as the notebook, and the same account
    assert probe["notebook"]["uid"] == uid
    for where in [probe["scheduler"], *probe["workers"]]:
        assert where["prefix"] == probe["notebook"]["prefix"] and where["uid"] == uid
        assert where["hub_env"] == []  # no hub API token (nor any hub setting) in the jobs
    assert probe["sum"] == 45


def test_alice_opens_her_slurm_clusters_dashboard_through_her_server(alice, alice_cluster):
    """The scheduler's dashboard (in its job, on listen_ip) through the gateway and her server."""
    name, _ = alice_cluster
    hs, _ = alice
    hs.server_api("GET", "afhub/api/dask/clusters")  # the server's OAuth cookie, as Lab has it
    r = hs.get(f"/user/alice/afhub/dask/clusters/{name}/status")
    assert r.status_code == 200, r.text[:500]
    assert "Bokeh.embed.embed_items" in r.text  # the real dashboard, not an error page


def test_staging_directory_is_private_to_alices_account(alice_cluster, fac):
    name, _ = alice_cluster
    account = pwd.getpwnam(fac.account("alice"))
    staging = os.path.join(account.pw_dir, ".dask-gateway", name)
    st = os.stat(staging)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (account.pw_uid, 0o700)
    files = os.listdir(staging)
    assert {"dask.pem", "dask.crt"} <= set(files) and any(f.endswith(".log") for f in files)
    for f in files:  # TLS key, certificate, job logs (and the workers' scratch directory)
        st = os.stat(os.path.join(staging, f))
        private = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (account.pw_uid, private), f


def test_no_secret_in_jobs_scripts_argv_or_logs(alice_cluster, slurm, fac):
    _, probe = alice_cluster
    tokens = [probe["cluster_token"], probe["hub_token"]]
    assert all(len(t) >= 16 for t in tokens)
    ids = [j["JobId"] for j in jobs_of(slurm, fac.account("alice"))]
    assert len(ids) == 3
    texts = []
    for job_id in ids:
        texts.append(slurm.run("scontrol", "show", "job", "--details", job_id).stdout)
        script = slurm.run("scontrol", "write", "batch_script", job_id, "-").stdout
        assert "/bin/dask " in script  # it is the job script
        texts.append(script)
    texts.append(fac.log_text())
    for proc in psutil.process_iter(["cmdline"]):
        texts.append(" ".join(proc.info["cmdline"] or []))
    for text in texts:
        for secret in tokens:
            assert secret not in text


def _gateway_api(fac, token: str, method: str, path: str, **kw) -> requests.Response:
    url = fac.url + "services/dask-gateway/api/v1/" + path
    return requests.request(
        method, url, headers={"Authorization": f"jupyterhub {token}"}, timeout=60, **kw
    )


def test_bad_options_are_refused_naming_them_before_any_job(alice_cluster, slurm, fac):
    _, probe = alice_cluster
    before = slurm.submitted()
    assert before  # the log records real submissions (alice's three jobs)
    for options, named in (
        ({"worker_cores": 64}, "worker_cores"),
        ({"worker_memory": -1}, "worker_memory"),
        ({"partition": "other"}, "partition"),  # not an option: the values file decides
    ):
        r = _gateway_api(
            fac, probe["hub_token"], "POST", "clusters/", json={"cluster_options": options}
        )
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert named in r.text and "Traceback" not in r.text
    assert slurm.submitted() == before
    # within the facility's limits, but no node of the partition has 8 GiB: Slurm's answer
    r = _gateway_api(
        fac, probe["hub_token"], "POST", "clusters/", json={"cluster_options": {"worker_memory": 8}}
    )
    assert r.status_code == 422, (r.status_code, r.text)
    assert (
        f"Slurm cannot run workers of worker_cores 1, worker_memory 8 GiB in partition {PARTITION}: "
        "Requested node configuration is not available"
    ) in r.text
    assert slurm.submitted() == before


def test_user_without_account_is_refused_before_any_job(slurm, fac):
    """bob never started a server, so he has no system account yet: a clear refusal."""
    bob = fac.login("bob")
    r = bob.api("POST", "users/bob/tokens", json={"note": "dask test"})
    assert r.status_code == 201, r.text
    before = slurm.submitted()
    r = _gateway_api(fac, r.json()["token"], "POST", "clusters/", json={"cluster_options": {}})
    assert r.status_code == 422, (r.status_code, r.text)
    assert "start your server first" in r.text
    assert slurm.submitted() == before
    assert "Traceback" not in fac.log_text()


def test_shutdown_leaves_no_job_and_no_staging_directory(alice_cluster, alice, slurm, fac):
    name, _ = alice_cluster
    hs, k = alice
    k.run("cluster.shutdown()", timeout=120)
    account = fac.account("alice")
    wait_for(lambda: not jobs_of(slurm, account), 30, what="alice's jobs gone")
    staging = os.path.join(pwd.getpwnam(account).pw_dir, ".dask-gateway", name)
    assert not os.path.exists(staging)


def test_new_cluster_from_her_venv_runs_slurm_workers_in_it(alice, slurm, fac):
    """Workers in the kernel's own environment (issue 22), on Slurm: the node shares the home,
    so alice's venv (``test_dask_user_env_integration.make_alice_venv``: a package only it has)
    runs her cluster's scheduler and workers as Slurm jobs of her account; their ``sys.prefix``
    is the venv, they import that package, and the version check finds them equal to her kernel
    (after her first cluster is shut down: the node has room for one)."""
    from test_dask_user_env_integration import check_workers_in_venv, make_alice_venv

    hs, prefix = make_alice_venv(fac, alice[0])
    submitted = set(slurm.submitted())
    check_workers_in_venv(hs, prefix)
    new = set(slurm.submitted()) - submitted  # the scheduler and both workers were jobs
    assert len(new) >= 3, new


def test_stopping_alices_server_cancels_her_cluster_jobs(alice, slurm, fac):
    hs, k = alice
    k.json(
        "from afhub.server_ext.dask import new_cluster\n"
        "import json\n"
        "cluster = new_cluster(workers=1)\n"
        "cluster.get_client().wait_for_workers(1, timeout=120)\n"
        "print(json.dumps(cluster.name))",
        timeout=240,
    )
    account = fac.account("alice")
    wait_for(lambda: running(slurm, account, 2), 30, what="scheduler and worker running")
    hs.stop_server(timeout=60)
    wait_for(lambda: not slurm.queue(), 60, what="empty squeue")


def test_gpu_worker_job_then_stopping_the_facility_cancels_every_job(alice, slurm, fac):
    """A worker with a GPU asks Slurm for it; user servers stop with the hub here (local
    backend), so their clusters' jobs do too."""
    hs = fac.login_with_server("alice")
    k = Kernel(hs)
    gpus = k.json(
        "from afhub.server_ext.dask import new_cluster\n"
        "import json, os\n"
        "cluster = new_cluster(workers=1, worker_gpus=1)\n"
        "client = cluster.get_client()\n"
        "client.wait_for_workers(1, timeout=120)\n"
        "print(json.dumps(list(client.run(os.getenv, 'CUDA_VISIBLE_DEVICES').values())))",
        timeout=240,
    )
    assert gpus == ["0"]  # Slurm gave the worker the node's GPU
    account = fac.account("alice")
    jobs = wait_for(lambda: running(slurm, account, 2), 30, what="scheduler and worker running")
    assert sorted(j.get("TresPerNode", "") for j in jobs) == ["", "gres:gpu:1"]
    fac.stop()
    wait_for(lambda: not slurm.queue(), 30, what="empty squeue after afhub up stopped")


# -- the sudoers rule docs/operators-dask.md gives operators whose hub does not run as root ----


def server_launcher() -> str:
    prefix = os.environ.get("AFHUB_SERVER_ENV") or "/opt/afhub/envs/analysis"
    return os.path.join(prefix, "bin", "dask-gateway-jobqueue-launcher")


@pytest.fixture
def sudo_rule(tmp_path):
    """A non-root "hub" account, an owner in the users' group, another account outside it, and
    the documented sudoers rule installed as a drop-in (checked by visudo first; removed after)."""
    launcher = server_launcher()
    require(None if os.path.exists(launcher) else f"no {launcher} (`make server-env`)")
    tag = secrets.token_hex(3)
    hub, owner, other, group = f"dgw{tag}", f"dso{tag}", f"dsx{tag}", f"dgu{tag}"
    dropin = f"/etc/sudoers.d/afhub-test-{tag}"
    try:
        subprocess.run(["groupadd", group], check=True)
        for name, extra in ((hub, []), (owner, ["--create-home", "-G", group]), (other, [])):
            subprocess.run(["useradd", "--shell", "/usr/sbin/nologin", *extra, name], check=True)
        rule = tmp_path / "rule"
        rule.write_text(sudoers_rule(hub, group, launcher) + "\n")
        os.chmod(rule, 0o440)
        subprocess.run(["visudo", "-cf", str(rule)], check=True, capture_output=True)
        shutil.copy(rule, dropin + ".tmp")  # sudo skips names with a dot: installed by rename
        os.rename(dropin + ".tmp", dropin)
        yield SimpleNamespace(hub=hub, owner=owner, other=other, launcher=launcher)
    finally:
        for path in (dropin, dropin + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
        for name in (hub, owner, other):
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def as_hub(rule, *argv: str, request: dict | None = None) -> subprocess.CompletedProcess:
    """``argv`` run by the hub's account, with the umask the gateway uses."""
    return subprocess.run(
        ["runuser", "-u", rule.hub, "--", *argv],
        input=json.dumps(request or {"action": "none"}),
        capture_output=True, text=True, timeout=60, umask=0o077,
    )  # fmt: skip


def test_documented_sudoers_rule_submits_as_the_owner_and_allows_nothing_else(slurm, sudo_rule):
    r = sudo_rule
    assert sudoers_rule("jupyterhub", "dask-users", DOC_LAUNCHER) in DOCS.read_text()
    staging = os.path.join(pwd.getpwnam(r.owner).pw_dir, ".dask-gateway", "c1")
    start = {
        "action": "start",
        "cmd": ["/usr/bin/sbatch", "--parsable", f"--partition={PARTITION}", "--output=/dev/null",
                "--wrap", "sleep 300"],
        "env": {"SLURM_CONF": slurm.env["SLURM_CONF"]},
        "stdin": None,
        "staging_dir": staging,
        "files": {"dask.pem": "KEY"},
    }  # fmt: skip
    out = as_hub(r, "sudo", "-n", "-H", "-u", r.owner, r.launcher, request=start)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["returncode"] == 0, result
    job = slurm.job(result["stdout"].strip())
    try:
        assert job["UserId"].startswith(f"{r.owner}(")
        key = os.stat(os.path.join(staging, "dask.pem"))
        assert key.st_uid == pwd.getpwnam(r.owner).pw_uid and stat.S_IMODE(key.st_mode) == 0o600
    finally:
        slurm.run("scancel", job["JobId"], check=False)
    # nothing else: not as root, not as an account outside the group, no other command, no
    # arguments to the launcher
    for argv in (
        ["sudo", "-n", "-u", "root", r.launcher],
        ["sudo", "-n", "-u", r.other, r.launcher],
        ["sudo", "-n", "-u", r.owner, "/bin/sh", "-c", "id"],
        ["sudo", "-n", "-u", r.owner, r.launcher, "--help"],
    ):
        refused = as_hub(r, *argv)
        assert refused.returncode != 0 and "password is required" in refused.stderr, argv
