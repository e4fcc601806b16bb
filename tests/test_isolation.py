"""Isolation between users on the local backend run as root (real hub, proxy, IdP, servers).

alice and bob each get a system account; code in alice's kernel (started through her server's
REST API and run over its websocket, as JupyterLab does) tries to reach bob's token file, home,
server environment and the hub's data dir. Every probe has a control on alice's own things, so
the test fails if the probe itself is broken. The token broker answers only the API token the
hub issued to the user's running server: REST-minted tokens (with a copied note, by the user
or an admin) and a previous server's token are refused; the running server's token keeps
working across a hub restart. Admins do not see auth_state.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import textwrap
import time

import psutil
import pytest
import requests
from facility import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="per-user accounts need a hub run as root"),
]

USERS = [
    {"name": "alice", "groups": ["physicists"]},
    {"name": "bob", "groups": ["physicists"]},
    {"name": "carol", "groups": ["afhub-admins", "physicists"]},
]


@pytest.fixture(scope="module")
def fac(start_facility):
    values = {
        "hub": {"ip": "127.0.0.1"},
        "auth": {
            "provider": "dev",
            "allowed_groups": ["physicists"],
            "admin_groups": ["afhub-admins"],
            "dev": {"port": 0, "token_lifetime": 600, "users": USERS},
        },
        "backend": {"type": "local", "local": {"delete_accounts": True}},
        "culling": {"enabled": False},
    }
    facility = start_facility(values, name="isolation")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    return fac.login_with_server("alice")


@pytest.fixture(scope="module")
def bob(fac):
    return fac.login_with_server("bob")


def server_process(fac, username: str) -> psutil.Process:
    account = fac.account(username)
    for p in psutil.process_iter(["cmdline", "username"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["username"] == account and any("jupyterhub-singleuser" in c for c in cmd):
                return p
        except psutil.Error:
            continue
    raise AssertionError(f"no server process of {username} running as {account}")


def server_token(fac, username: str) -> str:
    return server_process(fac, username).environ()["JUPYTERHUB_API_TOKEN"]


def token_file(fac, username: str) -> str:
    def ready():
        p = fac.home(username) / ".afhub" / "tokens" / f"bt_u{fac.uid(username)}"
        return p if p.exists() else None

    return str(wait_for(ready, 60, what=f"{username}'s token file"))


def mint(hs, owner: str, note: str) -> str:
    r = hs.api("POST", f"users/{owner}/tokens", json={"note": note, "expires_in": 600})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


def broker(fac, user: str, token: str) -> requests.Response:
    return requests.get(
        fac.url + f"hub/api/afhub/users/{user}/token",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )


def run_in_kernel(hs, code: str) -> str:
    """Start a kernel in ``hs``'s server and run ``code`` in it (JupyterLab's websocket path
    through the hub's proxy); its stdout."""
    from kernel_ws import Kernel

    kernel = Kernel(hs)
    try:
        return kernel.run(code, timeout=90)
    finally:
        hs.server_api("DELETE", f"api/kernels/{kernel.id}")


PROBE = textwrap.dedent(
    """
    import json, os
    def read(p):
        try:
            with open(p, "rb") as f:
                f.read(1)
            return "read"
        except OSError as e:
            return type(e).__name__
    def listing(p):
        try:
            os.listdir(p)
            return "listed"
        except OSError as e:
            return type(e).__name__
    print(json.dumps({{
        "uid": os.getuid(),
        "own_token": read({own_token!r}),
        "own_home": listing({own_home!r}),
        "own_environ": read("/proc/self/environ"),
        "bob_token": read({bob_token!r}),
        "bob_home": listing({bob_home!r}),
        "bob_environ": read("/proc/{bob_pid}/environ"),
        "hub_environ": read("/proc/{hub_pid}/environ"),
        "data_dir": listing({data_dir!r}),
        "crypt_key": read({crypt_key!r}),
        "database": read({database!r}),
        "home_root": listing({home_root!r}),
    }}))
    """
)


def test_servers_run_as_their_own_accounts(fac, alice, bob):
    procs = {u: server_process(fac, u) for u in ("alice", "bob")}
    for user, proc in procs.items():
        pw = pwd.getpwnam(fac.account(user))
        assert proc.uids().real == proc.uids().effective == pw.pw_uid != 0
        assert "--allow-root" not in proc.cmdline()
        assert pw.pw_shell.endswith("nologin")
        home = fac.home(user)
        assert pw.pw_dir == str(home)
        st = home.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pw.pw_uid, 0o700)
    assert procs["alice"].uids().real != procs["bob"].uids().real


def test_alice_kernel_cannot_reach_bob_or_the_hub(fac, alice, bob):
    data = fac.data_dir
    code = PROBE.format(
        own_token=token_file(fac, "alice"),
        own_home=str(fac.home("alice")),
        bob_token=token_file(fac, "bob"),
        bob_home=str(fac.home("bob")),
        bob_pid=server_process(fac, "bob").pid,
        hub_pid=fac.hub_pid(),
        data_dir=str(data),
        crypt_key=str(data / "crypt_key"),
        database=str(data / "jupyterhub.sqlite"),
        home_root=str(fac.home("alice").parent),
    )
    seen = json.loads(run_in_kernel(alice, code).strip().splitlines()[-1])
    assert seen == {
        "uid": fac.uid("alice"),
        # controls: the probe reads what alice owns
        "own_token": "read",
        "own_home": "listed",
        "own_environ": "read",
        # bob's and the hub's things
        "bob_token": "PermissionError",
        "bob_home": "PermissionError",
        "bob_environ": "PermissionError",
        "hub_environ": "PermissionError",
        "data_dir": "PermissionError",
        "crypt_key": "PermissionError",
        "database": "PermissionError",
        "home_root": "PermissionError",  # others' names are not even listed
    }


def test_broker_answers_only_the_running_servers_own_token(fac, alice, bob):
    own = server_token(fac, "alice")
    assert broker(fac, "alice", own).status_code == 200
    # a token alice mints herself, with the note the hub writes on server tokens
    forged = mint(alice, "alice", "Server at /user/alice/")
    assert broker(fac, "alice", forged).status_code == 403
    # an admin mints one for alice
    carol = fac.login("carol")
    by_admin = mint(carol, "alice", "Server at /user/alice/")
    assert broker(fac, "alice", by_admin).status_code == 403
    # bob's server token is not alice's
    assert broker(fac, "alice", server_token(fac, "bob")).status_code == 403


def test_admin_sees_no_auth_state(fac, alice):
    carol = fac.login("carol")
    model = carol.api("GET", "users/alice").json()
    assert model["name"] == "alice" and model["admin"] is False
    assert "auth_state" not in model or model["auth_state"] is None
    text = json.dumps(model)
    for word in ("refresh_token", "access_token", "id_token"):
        assert word not in text
    scopes = carol.api("GET", "user").json().get("scopes", [])
    assert "admin:auth_state" not in scopes and "admin:users" not in scopes


def test_previous_server_token_refused_and_running_token_survives_hub_restart(fac, alice):
    old = server_token(fac, "alice")
    alice.stop_server()
    assert alice.spawn().status_code in (201, 202)
    alice.wait_ready()
    new = server_token(fac, "alice")
    assert new != old
    assert broker(fac, "alice", old).status_code == 403
    assert broker(fac, "alice", new).status_code == 200

    # the hub dies; afhub up restarts it; the server (and its token id in the state) survive
    hub = fac.hub_pid()
    os.kill(hub, signal.SIGKILL)
    wait_for(lambda: _hub_back(fac, hub), 120, what="restarted hub")
    assert server_token(fac, "alice") == new
    r = wait_for(lambda: _answer(fac, new), 60, what="broker after hub restart")
    assert r.status_code == 200, r.text
    assert broker(fac, "alice", old).status_code == 403


def _hub_back(fac, old_pid) -> bool:
    try:
        pid = fac.hub_pid()
        if pid == old_pid:
            return False
        return requests.get(fac.url + "hub/api/", timeout=5).status_code == 200
    except (OSError, ValueError, requests.RequestException):
        return False


def _answer(fac, token):
    r = broker(fac, "alice", token)
    return r if r.status_code != 503 and r.status_code < 500 else None


def test_huge_option_name_gets_a_short_400_and_one_log_line(fac):
    """A 5 MB option name: a short 400 naming the problem; the hub log grows by one line."""
    carol = fac.login("carol")
    time.sleep(1)  # let the login's own log lines land first
    before = os.path.getsize(fac.log_path)
    r = carol.spawn({"x" * 5_000_000: "1"})
    assert r.status_code == 400
    assert len(r.content) < 1000
    assert "option names are at most 100 characters" in r.json()["message"]
    assert carol.server_model() is None  # nothing started
    time.sleep(1)
    with open(fac.log_path, "rb") as f:
        f.seek(before)
        grown = f.read().decode(errors="replace")
    assert len(grown) < 2048, grown[:3000]
    assert "Traceback" not in grown and "[E " not in grown
    rejected = [line for line in grown.splitlines() if "Rejected user_options" in line]
    assert len(rejected) == 1 and rejected[0].startswith("[W "), grown


def test_deleting_a_user_deletes_the_account_when_configured(fac, bob):
    """backend.local.delete_accounts: true (set for this module): account and home go."""
    account, home = fac.account("bob"), fac.home("bob")
    assert pwd.getpwnam(account) and home.is_dir()
    bob.stop_server()
    r = fac.admin_api("DELETE", "users/bob")
    assert r.status_code == 204, r.text
    with pytest.raises(KeyError):
        pwd.getpwnam(account)
    assert not home.exists()
