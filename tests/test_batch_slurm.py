"""The ``slurm`` backend against a real Slurm (munged + slurmctld + slurmd on this machine,
``tests/slurm.py``), through a real hub (``afhub up``: hub, proxy, demo OIDC provider).

Users log in through the OIDC flow and start profiles; batchspawner submits with
``sudo -E -u <account> sbatch`` and the server runs in the job from the world-readable server
environment (no Apptainer here: the profiles have no image, the command builder is tested in
``test_batch_translate.py``). Asserted against Slurm itself: ``scontrol show job`` for the
requested resources, ``squeue`` for what is left in the queue.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time

import pytest
from facility import Facility, free_port, loopback_values, wait_for
from slurm import SlurmCluster, require, server_env, slurm_available

pytestmark = pytest.mark.integration

NO_ACCOUNT = "batchnoaccount"  # a hub user without a system account
USERS = {
    "batchalice": ["physicists"],
    "batchbob": ["physicists", "gpu-users"],
    "batchcarol": ["physicists", "gpu-users"],
}


@pytest.fixture(scope="module")
def cluster():
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    c = SlurmCluster(cpus=4, memory_mb=4000, gpus=1, gpu_type="a100", partitions=("cpu", "gpu"))
    c.start()
    with c.exported():  # the hub's squeue/scancel and the capacity reader use it
        yield c
    c.stop()
    # torn down means torn down: no job process of the test users outlives the cluster (the
    # accounts are machine-wide: processes of another cluster, e.g. a benchmark's, differ in
    # SLURM_CONF); processes that got their SIGTERM a moment ago may take a few seconds
    import psutil

    def left():
        pids = []
        for p in psutil.process_iter(["username"]):
            try:
                if p.info["username"] in USERS and p.environ().get("SLURM_CONF") == str(c.conf):
                    pids.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return pids

    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left(), f"job processes left behind: {left()}"


@pytest.fixture(scope="module")
def accounts():
    """System accounts of the test users (jobs run as them)."""
    created = []
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
            created.append(name)
    yield list(USERS)
    for name in created:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def batch_values(cluster: SlurmCluster, *, start_timeout: int = 180) -> dict:
    values = {
        "auth": {
            "provider": "dev",
            "allowed_groups": ["physicists"],
            "admin_groups": ["physicists"],
            "dev": {
                "users": [{"name": n, "groups": g} for n, g in USERS.items()]
                + [{"name": NO_ACCOUNT, "groups": ["physicists"]}]
            },
        },
        "backend": {
            "type": "slurm",
            "start_timeout": start_timeout,
            "slurm": {
                "runtime": "01:00:00",
                "environment": server_env(),
                "server_ip": "127.0.0.1",
                "node_addresses": {cluster.host: "127.0.0.1"},
                "capacity": {"refresh_interval": 1, "stale_after": 30},
                # slurmctld is stopped mid-start in one test: give up and retry quickly
                "scheduler_timeout": 10,
                "cancel_retry_interval": 2,
            },
        },
        "profiles": [
            {
                "display_name": "CPU",
                "slug": "cpu",
                "default": True,
                "resources": {"cpu": 1, "memory": "1Gi"},
                "batch": {"partition": "cpu"},
                "profile_options": {
                    "account": {
                        "display_name": "Account",
                        "choices": {"default": {"display_name": "default"}},
                        "unlisted_choice": {"enabled": True, "batch": {"account": "{value}"}},
                    }
                },
            },
            {
                "display_name": "GPU",
                "slug": "gpu",
                "allowed_groups": ["gpu-users"],
                "resources": {"cpu": 1, "memory": "1Gi", "gpu": {"count": 1, "type": "a100"}},
                "batch": {"partition": "gpu"},
            },
        ],
        "culling": {"enabled": False},
    }
    values["profiles"].append(
        {
            "display_name": "Broken",
            "slug": "nopartition",
            "allowed_groups": ["gpu-users"],
            "resources": {"cpu": 1, "memory": "1Gi"},
            "batch": {"partition": "nosuch"},
        }
    )
    return values


@pytest.fixture(scope="module")
def fac(cluster, accounts, tmp_path_factory):
    # fixed hub API port: running servers talk to it, and must find it after a hub restart
    values = loopback_values(batch_values(cluster))
    values["hub"].update({"hub_port": free_port(), "proxy_api_port": free_port()})
    f = Facility(values, tmp_path_factory.mktemp("batch-slurm"), loopback=False)
    f.start()
    yield f
    f.stop()


def hold_the_gpu(cluster) -> str:
    """Submit a root job holding the cluster's only GPU; returns its id (scancel it after)."""
    argv = ["sbatch", "--parsable", "--output=/dev/null", "-p", "gpu", "--gres=gpu:1"]
    return cluster.run(*argv, "--wrap", "sleep 600").stdout.strip()


def submitted_so_far(cluster) -> set[str]:
    """``cluster.submitted()``, known to see submissions: when no test submitted anything yet
    (a test run alone), one finished root job proves the log is read."""
    before = cluster.submitted()
    if not before:
        job = cluster.run("sbatch", "--parsable", "--output=/dev/null", "--wrap", "true")
        before = cluster.submitted()
        assert job.stdout.strip() in before, (job.stdout, before)
    return before


def user_jobs(cluster, user):
    return [j for j in cluster.queue() if j["user"] == user]


def progress_messages(session, until: str, timeout: float = 90) -> list[str]:
    r = session.api(
        "GET", f"users/{session.username}/server/progress", stream=True, timeout=timeout
    )
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    for line in r.iter_lines():
        if line.startswith(b"data:"):
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if until in event.get("message", "") or event.get("ready") or event.get("failed"):
                break
        if time.monotonic() > deadline:
            break
    r.close()
    return messages


def test_cpu_and_gpu_profiles_reach_jupyterlab(fac, cluster):
    alice, bob = fac.login("batchalice"), fac.login("batchbob")
    assert alice.spawn({"profile": "cpu", "account--unlisted-choice": "atlas"}).status_code in (
        201,
        202,
    )
    assert bob.spawn({"profile": "gpu"}).status_code in (201, 202)
    for s in (alice, bob):
        url = s.wait_ready(timeout=180)
        lab = s.session.get(url + "lab", timeout=60)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    (a,) = user_jobs(cluster, "batchalice")
    (b,) = user_jobs(cluster, "batchbob")
    ja, jb = cluster.job(a["id"]), cluster.job(b["id"])
    assert ja["JobState"] == jb["JobState"] == "RUNNING"
    assert ja["UserId"].startswith("batchalice(") and jb["UserId"].startswith("batchbob(")
    assert (ja["Partition"], ja["NumCPUs"], ja["MinMemoryNode"]) == ("cpu", "1", "1G")
    assert ja["TimeLimit"] == "01:00:00" and ja["Account"] == "atlas"
    assert "gres" not in ja.get("TresPerNode", "")
    assert (jb["Partition"], jb["NumCPUs"], jb["MinMemoryNode"]) == ("gpu", "1", "1G")
    assert jb["TresPerNode"] == "gres:gpu:a100:1"


def server_token(user: str) -> str:
    """The hub API token of ``user``'s running server, read from its process environment."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "username"]):
        try:
            if proc.info["username"] != user or not any(
                "jupyterhub-singleuser" in a for a in proc.info["cmdline"] or []
            ):
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("JUPYTERHUB_API_TOKEN"):
            return env["JUPYTERHUB_API_TOKEN"]
    raise AssertionError(f"no server process of {user}")


def test_server_token_reaches_the_job_but_not_slurm(fac, cluster):
    """The job gets its hub API token from a 0600 file its own account wrote and it deleted:
    the token is not in what Slurm keeps (the stored job environment, the batch script,
    ``scontrol show job``), the hub log, or any process's command line."""
    import psutil

    token = server_token("batchalice")  # the server got it (and used it: it is ready)
    (a,) = user_jobs(cluster, "batchalice")
    script = cluster.run("scontrol", "write", "batch_script", a["id"], "-").stdout
    assert "#SBATCH --partition=cpu" in script and "batchspawner-singleuser" in script
    assert token not in script
    stored = cluster.job_environment(a["id"])  # slurmctld's copy (root only; sacct on some sites)
    assert "JUPYTERHUB_API_URL=" in stored  # the rest of the server's environment is there
    assert token not in stored and "JUPYTERHUB_API_TOKEN" not in stored
    for argv in (["scontrol", "show", "job", "-d", a["id"]], ["squeue", "-o", "%all"]):
        assert token not in cluster.run(*argv, user="batchbob").stdout
    assert token not in fac.log_text()
    for proc in psutil.process_iter(["cmdline"]):
        assert token not in " ".join(proc.info["cmdline"] or [])
    # the file is gone (read once by the job); only its private directory stays
    home = pwd.getpwnam("batchalice").pw_dir
    private = os.path.join(home, ".afhub", "batch", ".default")
    assert os.listdir(private) == []
    for d in (private, os.path.dirname(private)):
        st = os.stat(d)
        assert st.st_mode & 0o777 == 0o700 and st.st_uid == pwd.getpwnam("batchalice").pw_uid


def test_scheduler_refusal_is_a_clear_error(fac, cluster):
    s = fac.login("batchcarol")
    offset = len(fac.log_text())
    r = s.spawn({"profile": "nopartition"})
    assert r.status_code == 503, (r.status_code, r.text)
    message = r.json()["message"]
    assert message.startswith("Slurm did not accept the job: ") and "partition" in message
    assert "Traceback" not in fac.log_text()[offset:]
    assert not user_jobs(cluster, "batchcarol") and s.server_model() is None


def test_spawn_page_shows_capacity(fac, cluster):
    """Idle GPUs and CPUs per partition next to each profile, from the background cache."""
    carol = fac.login("batchcarol")

    def page():
        text = carol.get("hub/spawn").text
        return text if "Now in gpu:" in text else None

    text = wait_for(page, 30, what="capacity on the spawn page")
    # bob's GPU job holds the only GPU; alice's and bob's jobs hold 2 of 4 CPUs
    assert "Now in gpu: 0 of 1 a100 GPUs idle, 2 of 4 CPUs idle" in text
    assert "Now in cpu: 2 of 4 CPUs idle" in text


def test_second_gpu_spawn_shows_pending_reason_then_cancel_leaves_no_job(fac, cluster):
    carol = fac.login("batchcarol")
    assert carol.spawn({"profile": "gpu"}).status_code in (201, 202)
    messages = progress_messages(carol, until="Resources")
    assert any(m.startswith("Queued in Slurm (Resources)") for m in messages), messages
    assert [j["state"] for j in user_jobs(cluster, "batchcarol")] == ["PENDING"]
    # the "nothing was submitted" checks below read this log; it must see real submissions
    assert {j["id"] for j in user_jobs(cluster, "batchcarol")} <= cluster.submitted()
    carol.stop_server(timeout=60)  # cancels the pending start
    wait_for(lambda: not user_jobs(cluster, "batchcarol"), 30, what="carol's job gone")
    assert carol.server_model() is None


def test_tampered_options_are_refused_before_submission(fac, cluster):
    carol = fac.login("batchcarol")
    before = submitted_so_far(cluster)
    for text in ("x\n#SBATCH --partition=gpu", "$(id)", "a;b", "+Owner=root", "`id`", "a b"):
        r = carol.spawn({"profile": "cpu", "account--unlisted-choice": text})
        assert r.status_code == 400, (text, r.status_code, r.text)
        assert "account--unlisted-choice" in r.json()["message"]
    assert cluster.submitted() == before  # nothing was submitted
    assert carol.server_model() is None


def test_user_without_account_gets_a_clear_error_and_no_job(fac, cluster):
    before = submitted_so_far(cluster)
    s = fac.login(NO_ACCOUNT)
    offset = len(fac.log_text())
    r = s.spawn({"profile": "cpu"})
    assert r.status_code == 503, (r.status_code, r.text)
    assert f"there is no system account '{NO_ACCOUNT}' on the hub host" in r.json()["message"]
    assert cluster.submitted() == before
    assert "Traceback" not in fac.log_text()[offset:]


def test_scheduler_down_mid_start_gives_a_clear_error_and_leaves_no_job(fac, cluster):
    """slurmctld stops while carol's GPU start waits in the queue and alice stops her server:
    carol's start ends with a clear message after ``scheduler_timeout``, alice's stop returns,
    and once slurmctld is back both jobs are cancelled (deferred cancels)."""
    alice, carol = fac.login("batchalice"), fac.login("batchcarol")
    (alices,) = user_jobs(cluster, "batchalice")
    assert carol.spawn({"profile": "gpu"}).status_code in (201, 202)  # bob holds the GPU
    wait_for(lambda: user_jobs(cluster, "batchcarol"), 30, what="carol's job queued")
    (carols,) = user_jobs(cluster, "batchcarol")
    offset = len(fac.log_text())
    cluster.stop_controller()
    try:
        alice.stop_server(timeout=90)  # the hub lets go; the job is cancelled later
        messages = progress_messages(carol, until="did not start", timeout=120)
        assert any(m.startswith("Slurm is not answering (") for m in messages), messages
        assert carol.server_model() is None
        failure = messages[-1]
        assert "The Slurm job did not start: Slurm has not answered for" in failure, messages
        assert "the job is cancelled when Slurm answers again" in failure
    finally:
        cluster.start_controller()
    assert {j["id"] for j in cluster.queue()} >= {alices["id"], carols["id"]}  # still there
    wait_for(
        lambda: not user_jobs(cluster, "batchalice") and not user_jobs(cluster, "batchcarol"),
        60,
        what="deferred cancels taken",
    )
    log = fac.log_text()[offset:]
    assert "Traceback" not in log
    assert f"Cancelled job(s) {carols['id']}" in log and f"Cancelled job(s) {alices['id']}" in log


def test_stop_leaves_queue_empty(fac, cluster):
    for name in ("batchalice", "batchbob"):
        s = fac.login(name)
        if s.server_model() is not None:
            s.stop_server(timeout=60)
    wait_for(lambda: not cluster.queue(), 30, what="empty squeue")


def test_hub_restart_keeps_running_jobs_and_cancels_unfinished_starts(
    fac, cluster, tmp_path_factory
):
    alice, carol = fac.login("batchalice"), fac.login("batchcarol")
    # carol's GPU start waits behind a job holding the GPU, as the hub goes down
    blocker = hold_the_gpu(cluster)
    assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
    alice.wait_ready(timeout=180)
    assert carol.spawn({"profile": "gpu"}).status_code in (201, 202)
    wait_for(lambda: user_jobs(cluster, "batchcarol"), 30, what="carol's job queued")
    (running,) = user_jobs(cluster, "batchalice")
    fac.stop()
    assert [j["id"] for j in user_jobs(cluster, "batchalice")] == [
        running["id"]
    ]  # jobs outlive the hub
    fac.start()
    try:
        alice = fac.login("batchalice")
        url = alice.wait_ready(timeout=60)
        assert alice.session.get(url + "api/status", timeout=30).status_code == 200
        assert [j["id"] for j in user_jobs(cluster, "batchalice")] == [running["id"]]
        wait_for(
            lambda: not user_jobs(cluster, "batchcarol"), 30, what="unfinished start cancelled"
        )
        assert fac.login("batchcarol").server_model() is None
        alice.stop_server(timeout=60)
    finally:
        cluster.run("scancel", blocker, check=False)
    wait_for(lambda: not cluster.queue(), 30, what="empty squeue")


def test_spawn_timeout_cancels_the_job(cluster, accounts, tmp_path_factory):
    f = Facility(batch_values(cluster, start_timeout=15), tmp_path_factory.mktemp("batch-timeout"))
    blocker = hold_the_gpu(cluster)
    f.start()
    try:
        carol = f.login("batchcarol")
        assert carol.spawn({"profile": "gpu"}).status_code in (201, 202)
        wait_for(lambda: user_jobs(cluster, "batchcarol"), 30, what="carol's job queued")
        wait_for(lambda: carol.server_model() is None, 60, what="start abandoned after the timeout")
        wait_for(lambda: not user_jobs(cluster, "batchcarol"), 30, what="timed-out job cancelled")
        assert "failed to start in 15 seconds" in f.log_text()
    finally:
        cluster.run("scancel", blocker, check=False)
        f.stop()
    wait_for(lambda: not cluster.queue(), 30, what="empty squeue")
