"""Issue 19, items 2 and 3: no hub user runs as another hub user's account or a system account.

Real accounts (``useradd``), a real Slurm (``tests/slurm.py``), real ``afhub up``:

- local backend (the spawner's start as the hub runs it, as root): the hashed account of
  ``john.doe`` made by a release before issue 19 (``<prefix>john-doe-30f696``, comment
  ``afhub user john.doe``) stays his and is refused to hub user ``john-doe-30f696``, whose
  plain name it is; an account afhub did not make is not adopted; ``root`` and ``daemon``
  (``account_prefix: ""``) are refused; nothing is created for a refused user;
- ``slurm`` backend and Dask on Slurm (site accounts named as the hub users): hub users ``root``
  and ``daemon`` get HTTP 403 for a server and a refusal for a cluster, and nothing is submitted.

The pure rules (names, records, uid ranges) are tables in ``test_accounts.py``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from auth_helpers import MemoryUser
from tornado import web

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="makes system accounts: needs root")
SERVER = "/opt/afhub/envs/analysis/bin/jupyterhub-singleuser"


# -- local backend -----------------------------------------------------------------------------


@pytest.fixture
def site():
    """A home root (that accounts can reach, unlike pytest's 0700 tmp_path) and an account
    prefix of this test's own; accounts and homes made here are removed."""
    prefix = f"am{secrets.token_hex(2)}-"
    home_root = Path(tempfile.mkdtemp(prefix="afhub-test-homes-"))
    os.chmod(home_root, 0o711)
    made: list[str] = []

    def useradd(name: str, *args: str) -> pwd.struct_passwd:
        subprocess.run(["useradd", "--shell", "/usr/sbin/nologin", *args, name], check=True)
        made.append(name)
        return pwd.getpwnam(name)

    yield SimpleNamespace(prefix=prefix, home_root=home_root, useradd=useradd, made=made)
    for name in made:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
    shutil.rmtree(home_root, ignore_errors=True)


def local_spawner(site, name: str, *, prefix: str | None = None):
    from afhub.spawner.local import LocalProfileSpawner

    sp = LocalProfileSpawner(
        user=MemoryUser(name, None),
        accounts="system",
        account_prefix=site.prefix if prefix is None else prefix,
        home_root=str(site.home_root),
        sample_notebooks=False,
    )
    sp.cmd = [SERVER if os.path.exists(SERVER) else "/bin/true"]
    return sp


def start_checks(sp) -> web.HTTPError | None:
    """The backend's checks of a start (account, environment), as the hub runs them."""
    try:
        asyncio.run(sp.afhub_before_start(SimpleNamespace(display_name="Default")))
    except web.HTTPError as e:
        return e
    return None


def accounts_of(site) -> set[str]:
    """The accounts with this test's prefix (other tests on this machine make accounts too)."""
    return {p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(site.prefix)}


@root_only
def test_a_plain_name_does_not_get_the_hashed_account_of_another_user(site):
    """The collision of issue 19: john.doe's account from an earlier release is the plain name
    of hub user john-doe-30f696; it stays john.doe's, and john-doe-30f696 is refused."""
    legacy = site.prefix + "john-doe-30f696"  # what releases before issue 19 named john.doe's
    home = site.home_root / "john.doe"
    johns = site.useradd(
        legacy, "--home-dir", str(home), "--create-home", "-c", "afhub user john.doe"
    )
    (home / "notes.txt").write_text("john.doe's")

    before = accounts_of(site)
    sp = local_spawner(site, "john-doe-30f696")
    assert sp.account_name() == legacy  # the plain name: unchanged for plain names
    err = start_checks(sp)
    assert err is not None and err.status_code == 403, err
    assert "belongs to another hub user" in err.jupyterhub_message
    assert repr(legacy) in err.jupyterhub_message and "john.doe" not in err.jupyterhub_message
    assert sp._afhub_account is None and sp.get_state().get("account") is None
    assert accounts_of(site) == before
    assert not (site.home_root / "john-doe-30f696").exists()  # nothing made for the refused user

    # john.doe himself keeps the account an earlier release made for him (same uid, same home)
    sp = local_spawner(site, "john.doe")
    assert sp.account_name() == legacy
    assert start_checks(sp) is None
    assert sp._afhub_account == legacy and sp.home_dir == str(home)
    assert pwd.getpwnam(legacy).pw_uid == johns.pw_uid
    assert (home / "notes.txt").read_text() == "john.doe's"


@root_only
def test_new_hashed_names_are_made_with_the_owner_record(site):
    sp = local_spawner(site, "jane.doe")
    name = sp.account_name()
    assert name == site.prefix + "jane-doe." + name.rsplit(".", 1)[1] and "." not in site.prefix
    site.made.append(name)
    assert start_checks(sp) is None
    pw = pwd.getpwnam(name)
    assert pw.pw_gecos == "afhub user jane.doe" and pw.pw_dir == str(site.home_root / "jane.doe")
    # the plain name that looks like it is another, fresh account
    other = local_spawner(site, name[len(site.prefix) :])
    assert other.account_name() != name


@root_only
def test_an_account_afhub_did_not_make_is_not_adopted(site):
    site.useradd(site.prefix + "mallory", "-c", "Mallory, room 12")
    err = start_checks(local_spawner(site, "mallory"))
    assert err is not None and err.status_code == 403, err
    assert "belongs to no afhub user" in err.jupyterhub_message


@root_only
@pytest.mark.parametrize("name, why", [("root", "which is root"), ("daemon", "system account")])
def test_local_backend_refuses_system_accounts(site, name, why):
    """``account_prefix: ""`` (the spawner's trait; the values file asks for a prefix) maps hub
    users onto existing accounts: root (the hub's own here) and daemon are refused."""
    sp = local_spawner(site, name, prefix="")
    err = start_checks(sp)
    assert err is not None and err.status_code == 403, err
    assert (
        why in err.jupyterhub_message
        and "servers and Dask clusters never run" in err.jupyterhub_message
    )
    assert sp._afhub_account is None
    assert not (site.home_root / name).exists()
    assert pwd.getpwnam(name).pw_gecos == {"root": "root", "daemon": "daemon"}[name]


# -- slurm backend and Dask on Slurm: site accounts named as the hub users ----------------------

SYSTEM_USERS = {"root": "which is root", "daemon": "a system account (uid 1, below UID_MIN"}


@pytest.fixture(scope="module")
def slurm():
    from slurm import SlurmCluster, require, server_env, slurm_available

    require(slurm_available())
    require(None if server_env() else "no server environment with batchspawner (`make server-env`)")
    with SlurmCluster(cpus=2, memory_mb=2000, gpus=0, partitions=("cpu",)) as c, c.exported():
        yield c


@pytest.fixture(scope="module")
def batch_fac(slurm, tmp_path_factory):
    from facility import Facility, loopback_values
    from slurm import batch_hub_values

    # default account_prefix "": hub names are account names
    values = batch_hub_values(slurm, SYSTEM_USERS)
    values["dask"] = {"enabled": True, "slurm": {"partition": "cpu", "listen_ip": "127.0.0.1"}}
    values = loopback_values(values)
    f = Facility(values, tmp_path_factory.mktemp("account-mapping-slurm"), loopback=False)
    f.start()
    yield f
    f.stop()


def submitted_so_far(slurm) -> set[str]:
    """``slurm.submitted()``, known to see submissions (one finished job of the test's own)."""
    job = slurm.run("sbatch", "--parsable", "--output=/dev/null", "-p", "cpu", "--wrap", "true")
    seen = slurm.submitted()
    assert job.stdout.strip() in seen, (job.stdout, seen)
    return seen


@pytest.mark.integration
@root_only
@pytest.mark.parametrize("name", list(SYSTEM_USERS))
def test_batch_and_dask_on_slurm_refuse_system_accounts(batch_fac, slurm, name):
    """Hub users root (here also the hub's own account) and daemon: no server job, no cluster."""
    import requests

    before = submitted_so_far(slurm)
    offset = len(batch_fac.log_text())
    s = batch_fac.login(name)
    r = s.spawn({"profile": "cpu"})
    assert r.status_code == 403, (r.status_code, r.text)
    message = r.json()["message"]
    assert SYSTEM_USERS[name] in message and f"system account {name!r}" in message
    assert s.server_model() is None  # nothing half-started

    r = s.api("POST", f"users/{name}/tokens", json={"note": "dask test"})
    assert r.status_code == 201, r.text
    api = batch_fac.url + "services/dask-gateway/api/v1/clusters/"
    headers = {"Authorization": f"jupyterhub {r.json()['token']}"}
    r = requests.post(api, json={"cluster_options": {}}, headers=headers, timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert SYSTEM_USERS[name] in r.text
    assert requests.get(api, headers=headers, timeout=60).json() == {}  # no cluster recorded
    assert slurm.submitted() == before  # neither a server job nor a cluster job
    assert "Traceback" not in batch_fac.log_text()[offset:]
