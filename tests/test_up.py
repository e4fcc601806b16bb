"""The embedded default facility, end to end: ``afhub up`` -> OIDC login -> spawn -> JupyterLab,
and nothing left running once it is stopped."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import psutil
import pytest
from facility import Facility, example_values, process_tree_pids, wait_for

pytestmark = pytest.mark.integration


def test_health_and_login_page(facility):
    import requests

    assert (
        "demo users (type the name at the provider's page): alice (physicists, gpu-users), "
        "bob (physicists), carol (afhub-admins, physicists, gpu-users), eve (visitors)"
        in facility.log_text()
    )

    assert requests.get(facility.url + "hub/health", timeout=10).status_code == 200
    page = requests.get(facility.url + "hub/login", timeout=10)
    assert page.status_code == 200
    assert "afhub demo IdP" in page.text


def test_login_spawn_reaches_lab(facility):
    alice = facility.login("alice")
    r = alice.spawn()
    assert r.status_code in (201, 202), r.text
    server_url = alice.wait_ready()
    lab = alice.get(server_url + "lab")
    assert lab.status_code == 200
    assert "JupyterLab" in lab.text
    # groups came from the provider's claim
    groups = facility.admin_api("GET", "users/alice").json()["groups"]
    assert sorted(groups) == ["gpu-users", "physicists"]


def test_user_outside_allowed_groups_is_refused(facility):
    eve = facility.login("eve", expect_ok=False)  # a demo user in `visitors` only
    assert eve.last_response.status_code == 403
    assert "physicists" in eve.last_response.text  # the page names the groups that grant access
    assert eve.get("hub/api/user").status_code == 403


def test_admin_group_makes_admin(facility):
    """auth.admin_groups members administer the hub (afhub-admin role) without auth_state."""
    carol = facility.login("carol")
    me = carol.api("GET", "user").json()
    assert {"admin-ui", "admin:servers", "tokens"} <= set(me["scopes"])  # via her group's role
    assert "admin:auth_state" not in me["scopes"] and "admin:users" not in me["scopes"]
    assert carol.get("hub/admin").status_code == 200
    assert carol.api("GET", "users").status_code == 200
    bob = facility.login("bob")
    assert "admin-ui" not in bob.api("GET", "user").json()["scopes"]
    assert bob.api("GET", "users").status_code == 403


def test_state_files_are_private(facility):
    data = facility.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("crypt_key", "dev_client_secret", "jupyterhub_cookie_secret"):
        mode = stat.S_IMODE(os.stat(data / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"


def test_stop_leaves_no_process(tmp_path):
    fac = Facility(example_values("local"), tmp_path).start()
    bob = fac.login("bob")
    assert bob.spawn().status_code in (201, 202)
    bob.wait_ready()
    pids = process_tree_pids(fac.proc.pid)
    # afhub up, idp, hub, proxy, culler, bob's server at least
    assert len(pids) >= 6, pids
    assert fac.stop() == 0
    time.sleep(0.5)
    alive = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], [psutil.Process(p).cmdline() for p in alive]
    assert re.search(r"\[afhub\] stopped", fac.log_text())


def test_state_survives_restart(tmp_path):
    fac = Facility(example_values("local"), tmp_path).start()
    fac.login("bob")
    secret = (fac.data_dir / "jupyterhub_cookie_secret").read_bytes()
    key = (fac.data_dir / "crypt_key").read_text()
    fac.stop()
    fac2 = Facility(example_values("local"), tmp_path)
    fac2.port = fac.port
    fac2.url = fac.url
    fac2.start()
    try:
        assert (fac.data_dir / "jupyterhub_cookie_secret").read_bytes() == secret
        assert (fac.data_dir / "crypt_key").read_text() == key
        users = [u["name"] for u in fac2.admin_api("GET", "users").json()]
        assert "bob" in users  # the sqlite database was kept
    finally:
        fac2.stop()


def test_user_server_runs_the_afhub_extension(facility, tmp_path):
    """Hub -> server wiring: kernels from the user's ~/envs and the token status API."""
    from kernels_helpers import make_venv

    bob = facility.login("bob")
    home = facility.home("bob")
    from afhub.spawner.local import server_environment

    # built from the server environment, which bob's account (as root: afhub-...-bob) can run
    make_venv(home / "envs" / "ana", ipykernel=True, base=server_environment())
    assert bob.spawn().status_code in (201, 202)
    bob.wait_ready()
    envs = bob.server_api("GET", "afhub/api/environments")
    assert envs.status_code == 200, envs.text
    names = {e["name"]: e for e in envs.json()["environments"]}
    assert names["ana"]["runnable"] is True
    specs = bob.server_api("GET", "api/kernelspecs").json()["kernelspecs"]
    assert any("ana" in name for name in specs), sorted(specs)
    status = bob.server_api("GET", "afhub/api/token")
    assert status.status_code == 200 and "token" not in {k.lower() for k in status.json()}
    bob.stop_server()


def hold_ports(ports) -> list:
    """Listen on each of ``ports`` on loopback, as another program would; a port something
    else already holds is held all the same (and is left to it)."""
    import socket

    held = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
        except OSError:  # already taken by another program: held all the same
            s.close()
    return held


def test_readme_first_command(tmp_path):
    """`make up` (the README's first command) brings up the embedded default, on free internal
    ports while 8081, 8001 and 9400 (JupyterHub's and the demo provider's usual ports) are
    held by another program; SIGTERM to its process group stops all of it."""
    # the default values as shipped (not loopback_values): only port and data dir are chosen
    fac = Facility(example_values("local"), tmp_path, loopback=False)
    repo = Path(__file__).resolve().parent.parent
    cmd = [
        "make",
        "--no-print-directory",
        "up",
        f"AFHUB_ARGS=--port {fac.port} --data-dir {fac.data_dir}",
    ]
    held = hold_ports([8081, 8001, 9400])
    try:
        fac.start(cmd=cmd, cwd=repo, timeout=300)
    finally:
        for s in held:
            s.close()
    try:
        assert f"afhub is up at http://127.0.0.1:{fac.port}/" in fac.log_text()
        ports = re.search(
            r"internal ports: hub API 127\.0\.0\.1:(\d+), proxy API 127\.0\.0\.1:(\d+), "
            r"demo OIDC provider 127\.0\.0\.1:(\d+)",
            fac.log_text(),
        )
        assert ports, fac.log_text()[-2000:]
        assert not {8081, 8001, 9400} & {int(p) for p in ports.groups()}
        assert f":{ports.group(3)}/" in fac.idp_url
        alice = fac.login("alice")
        assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
        lab = alice.get(alice.wait_ready() + "lab")
        assert lab.status_code == 200
        pids = process_tree_pids(fac.proc.pid)
    finally:
        assert fac.stop() is not None
    time.sleep(0.5)
    alive = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def _afhub_up(*args, timeout=60):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "afhub.hub_config", "up", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_refuses_a_busy_port_before_starting_anything(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _afhub_up("--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1
    assert f"hub.port: 127.0.0.1:{port} is already in use" in r.stderr
    assert "starting demo OIDC provider" not in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_up_without_the_proxy_says_how_to_get_it_before_starting_anything(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(f"hub:\n  proxy_command: [{str(tmp_path / 'no-such-proxy')!r}]\n")
    r = _afhub_up("-f", str(values), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1
    assert "hub.proxy_command: " in r.stderr and "was not found" in r.stderr
    assert "npm install -g configurable-http-proxy" in r.stderr
    assert "starting demo OIDC provider" not in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_up_with_invalid_values_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("hub:\n  prot: 8000\n")
    r = _afhub_up("-f", str(bad), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "hub.prot: unknown key 'prot' (did you mean 'port'?)" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def service_pids(fac: Facility, name: str) -> list[int]:
    """Running processes of the hub service ``name`` under this facility."""
    out = []
    for pid in process_tree_pids(fac.proc.pid):
        try:
            p = psutil.Process(pid)
            env = p.environ()
            if env.get("JUPYTERHUB_SERVICE_NAME") == name and p.status() != psutil.STATUS_ZOMBIE:
                if env.get("JUPYTERHUB_SERVICE_NAME") != p.parent().environ().get(
                    "JUPYTERHUB_SERVICE_NAME"
                ):
                    out.append(pid)
        except psutil.Error:
            pass
    return out


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "45-raw-nul-byte-in-hub-ip.yaml",
            "hub.ip: the value contains the control character U+0000",
        ),
        ("37-duplicate-key-opens-gpu-profile.yaml", "profiles[0].allowed_groups: duplicate key"),
        ("41-alias-bomb-in-kubespawner-override.yaml", "the document expands to more than"),
    ],
)
def test_up_refuses_hostile_values_before_starting_anything(tmp_path, name, expected):
    """afhub up reads values through the same loader as check: exit 2, the key named."""
    bad = Path(__file__).resolve().parent / "values_corpus" / "bad" / name
    r = _afhub_up("-f", str(bad), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "starting" not in r.stderr


def test_hub_crash_is_recovered_and_servers_keep_their_tokens(tmp_path):
    """SIGKILL the hub: afhub up restarts it, the running server survives and still gets
    data-access tokens (the restarted hub knows its token only from the database)."""
    import signal

    fac = Facility(example_values("local"), tmp_path).start()
    try:
        alice = fac.login("alice")
        assert alice.spawn({"profile": "cpu"}).status_code in (201, 202)
        alice.wait_ready()
        server_pid = fac.admin_api("GET", "users/alice").json()["servers"][""]["state"]["pid"]
        old_hub = fac.hub_pid()
        (old_culler,) = service_pids(fac, "idle-culler")
        os.kill(old_hub, signal.SIGKILL)
        wait_for(lambda: "hub is back" in fac.log_text(), 90, what="hub restart")
        assert "hub exited with code -9; restarting it (1/3)" in fac.log_text()
        assert fac.hub_pid() != old_hub and psutil.pid_exists(server_pid)
        # the dead hub's culler was stopped before the new hub started its own
        assert (
            f"stopping the services the old hub started: idle-culler (pid {old_culler})"
            in fac.log_text()
        )
        wait_for(lambda: len(service_pids(fac, "idle-culler")) == 1, 30, what="one culler")
        assert old_culler not in service_pids(fac, "idle-culler")
        assert alice.server_api("GET", "api/status").status_code == 200
        refreshed = alice.server_api("POST", "afhub/api/token")
        assert refreshed.status_code == 200
        assert refreshed.json()["state"] == "ok", refreshed.json()
    finally:
        assert fac.stop() == 0
    assert (
        not psutil.pid_exists(server_pid)
        or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    )
