"""Batch servers on a real Slurm, the hub on a real PostgreSQL, crashed (issue 24).

Two users' servers run as Slurm jobs (``tests/slurm.py``; ``sudo -E -u <account> sbatch``) and
the hub's database is PostgreSQL (``tests/postgres.py``, the URL from the environment as in
``test_hub_postgres.py``). Then:

- the hub is SIGKILLed and ``afhub up`` restarts it: every server still answers through the
  proxy with the same job and start time, no job was submitted again (slurmctld's log of
  ``sbatch`` requests) or cancelled (the queue still holds the same jobs, running), and each
  server's token file keeps getting a later expiry;
- slurmctld is stopped (a real outage: ``squeue`` cannot reach it) and the hub SIGKILLed, so
  the restarted hub polls every server while ``squeue`` errors: each job is "unknown" (the hub
  says so once), no server is declared stopped and no job cancelled; once slurmctld is back the
  next poll reads "running" again, and everything above still holds.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess

import pytest
from facility import Facility, free_port, loopback_values, wait_for
from slurm import SlurmCluster, batch_hub_values, require, server_env, slurm_available
from test_hub_postgres import answers, pg, token_expiry  # noqa: F401 (pg: the PostgreSQL)

pytestmark = pytest.mark.integration

LIFETIME = 30  # s: the demo provider's access tokens
MARGIN = 10  # s before expiry a server renews
ENV_VAR = "AFHUB_TEST_SLURM_HUB_DB_URL"
USERS = [f"sp{secrets.token_hex(3)}", f"sp{secrets.token_hex(3)}"]  # site accounts, made here


@pytest.fixture(scope="module")
def cluster(accounts):  # torn down before the accounts: no job of theirs left to block userdel
    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    with SlurmCluster(cpus=2, memory_mb=3000, gpus=0, partitions=("cpu",)) as c, c.exported():
        yield c


@pytest.fixture(scope="module")
def accounts():
    for name in USERS:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    yield USERS
    for name in USERS:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture(scope="module")
def fac(pg, cluster, accounts, tmp_path_factory):  # noqa: F811
    values = batch_hub_values(cluster, USERS)
    values["auth"]["admin_groups"] = ["physicists"]  # admin_api: the servers' job ids
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["tokens"] = {"refresh_margin": MARGIN}
    values = loopback_values(values)
    values["hub"]["db_url"] = {"env": ENV_VAR}
    # fixed ports: running servers must find the hub API after a restart
    values["hub"].update({"hub_port": free_port(), "proxy_api_port": free_port()})
    os.environ[ENV_VAR] = pg.url.replace(f"{pg.role}@", f"{pg.role}:{pg.password}@")
    f = Facility(values, tmp_path_factory.mktemp("slurm-postgres"), loopback=False)
    try:
        f.start(timeout=120)
        yield f
    finally:
        f.stop()
        os.environ.pop(ENV_VAR, None)


def user_jobs(cluster) -> dict[str, dict]:
    """Queued or running jobs of the test users, by id."""
    return {j["id"]: j for j in cluster.queue() if j["user"] in USERS}


@pytest.fixture(scope="module")
def running(fac, cluster):
    sessions = {u: fac.login(u) for u in USERS}
    for hs in sessions.values():
        assert hs.spawn().status_code in (201, 202)
    servers = {}
    for user, hs in sessions.items():
        hs.wait_ready(timeout=180)
        model = fac.admin_api("GET", f"users/{user}").json()["servers"][""]
        status = hs.server_api("GET", "afhub/api/token").json()
        servers[user] = {
            "job": model["state"]["job_id"],
            "started": model["started"],
            "token_file": status["path"],
        }
    jobs = user_jobs(cluster)
    assert set(jobs) == {s["job"] for s in servers.values()}
    return {"sessions": sessions, "servers": servers, "submitted": cluster.submitted()}


def hub_restarted(fac) -> int:
    """SIGKILL the hub; returns the log offset from before (``afhub up`` restarts it)."""
    offset = len(fac.log_text())
    restarts = fac.log_text().count("hub is back")
    os.kill(fac.hub_pid(), signal.SIGKILL)
    wait_for(lambda: fac.log_text().count("hub is back") > restarts, 120, what="hub restart")
    return offset


def check_servers(fac, cluster, running, what: str, *, slurm_up: bool = True) -> None:
    wait_for(lambda: answers(fac.url + "hub/health"), 60, what=f"the hub ({what})")
    for user, before in running["servers"].items():
        hs = running["sessions"][user]
        model = fac.admin_api("GET", f"users/{user}").json()["servers"].get("")
        assert model and model["ready"], (what, user, model)
        assert model["state"]["job_id"] == before["job"], (what, user)
        assert model["started"] == before["started"], f"{user} started again ({what})"
        r = wait_for(
            lambda hs=hs: (r := hs.server_api("GET", "api/status")).status_code == 200 and r,
            60,
            what=f"{user}'s server through the proxy ({what})",
        )
        assert r.json()["started"]
    if slurm_up:  # the same jobs, still running: none cancelled, none added
        jobs = user_jobs(cluster)
        assert set(jobs) == {s["job"] for s in running["servers"].values()}, (what, jobs)
        assert {j["state"] for j in jobs.values()} == {"RUNNING"}, (what, jobs)
        assert cluster.submitted() == running["submitted"], f"a job was submitted ({what})"
    log = fac.log_text()
    for job in (s["job"] for s in running["servers"].values()):
        assert f"Cancelling job {job}" not in log and f"Cancelled job(s) {job}" not in log


def token_file_state(hs, path: str) -> tuple[str, float]:
    """(the token file's text, its expiry): the JWT's ``exp`` when the token is one, else the
    expiry the server's renewer wrote it with (its token status)."""
    with open(path) as f:
        text = f.read().strip()
    if text.count(".") == 2:
        return text, token_expiry(path)
    return text, hs.server_api("GET", "afhub/api/token").json()["expires_at"] or 0


def check_renewal(running, what: str) -> None:
    """Each server's token file gets a new token with a later expiry than it has now."""
    before = {
        u: token_file_state(running["sessions"][u], s["token_file"])
        for u, s in running["servers"].items()
    }
    assert all(text for text, _ in before.values()), f"an empty token file ({what})"

    def renewed(user: str) -> bool:
        text, exp = token_file_state(
            running["sessions"][user], running["servers"][user]["token_file"]
        )
        return text != before[user][0] and exp > before[user][1]

    wait_for(
        lambda: all(renewed(u) for u in before),
        LIFETIME + 60,
        what=f"every token file renewed ({what})",
    )


def test_the_hub_database_is_postgresql(pg, fac, running):  # noqa: F811
    rows = pg.query("SELECT name FROM users ORDER BY name")
    assert [r[0] for r in rows] == sorted(USERS)
    assert not (fac.data_dir / "jupyterhub.sqlite").exists()


def test_hub_killed_while_jobs_run(fac, cluster, running):
    offset = hub_restarted(fac)
    check_servers(fac, cluster, running, "the hub was killed")
    check_renewal(running, "the hub was killed")
    assert "Traceback" not in fac.log_text()[offset:]


def test_scheduler_down_during_a_hub_restart_is_unknown_never_stopped(fac, cluster, running):
    jobs = [s["job"] for s in running["servers"].values()]
    cluster.stop_controller()
    try:
        assert cluster.run("squeue", check=False).returncode != 0  # a real outage
        offset = hub_restarted(fac)
        # the restarted hub polled every server: squeue failed, and the job is "unknown"
        for job in jobs:
            wait_for(
                lambda job=job: (
                    f"Slurm did not answer the status query of job {job} "
                    in fac.log_text()[offset:]
                ),
                60,
                what=f"the restarted hub's poll of job {job}",
            )
        check_servers(fac, cluster, running, "slurmctld down", slurm_up=False)
    finally:
        cluster.start_controller()
    # the hub's next poll (every 30 s) reads the real state again
    for job in jobs:
        wait_for(
            lambda job=job: f"Slurm answers again about job {job} " in fac.log_text()[offset:],
            90,
            what=f"job {job} polled after slurmctld is back",
        )
    log = fac.log_text()[offset:]
    assert all(f"Slurm answers again about job {job} of" in log for job in jobs)
    assert log.count("answers again about job") == len(jobs)
    assert "running" in log.split("answers again about job", 1)[1].splitlines()[0]
    check_servers(fac, cluster, running, "slurmctld back")
    check_renewal(running, "slurmctld back")
    assert "Traceback" not in fac.log_text()[offset:]
