"""Root acting on a user's behalf never follows a path the user can change (issue 19).

As root, with real unprivileged accounts (``useradd``; removed after): an owner of a local Dask
cluster (attacks run in a forked child that became the owner, ``as_user``) replaces ``logs`` by
a link, swaps or renames the cluster's directory, plants links while the gateway builds it
(a hook on the gateway's ``os`` calls, driven by hypothesis); another account pre-creates the
owner's Dask-on-Slurm staging directory; an earlier run's home tree is adopted. Every test
compares owners and modes of a root-owned sentinel tree before and after.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from afhub.hub_config.gateway.local import AfhubLocalBackend
from afhub.hub_config.gateway.process import gateway_config
from afhub.hub_config.gateway.slurm import AfhubSlurmBackend
from afhub.hub_config.values import load
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.jobqueue.slurm import SlurmClusterConfig
from dask_gateway_server.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting for other accounts needs root")

OWNER, OTHER = "afhubrp-owner", "afhubrp-other"
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


# ---- accounts, places, snapshots ------------------------------------------------------------


@pytest.fixture(scope="module")
def accounts():
    made = []
    for name in (OWNER, OTHER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name], check=True
            )
            made.append(name)
    yield {name: pwd.getpwnam(name) for name in (OWNER, OTHER)}
    for name in made:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def base():
    """A root-owned 0755 directory the accounts can enter (pytest's tmp_path is root's 0700):
    ``sentinel/`` (root's files an attacker points at), ``userland/`` (the owner's)."""
    path = tempfile.mkdtemp(prefix="afhub-rootpaths-")
    os.chmod(path, 0o755)
    os.makedirs(os.path.join(path, "sentinel", "d"))
    for p, mode in (("sentinel", 0o755), ("sentinel/d", 0o755)):
        os.chmod(os.path.join(path, p), mode)
    with open(os.path.join(path, "sentinel", "f"), "w") as f:
        f.write("root's\n")
    os.chmod(os.path.join(path, "sentinel", "f"), 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def userland(base: str, pw) -> str:
    path = os.path.join(base, "userland")
    os.makedirs(path, exist_ok=True)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def snapshot(top: str) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``top`` (links not followed): (uid, gid, mode)."""
    out = {}
    for root, dirs, files in os.walk(top):
        for n in [*dirs, *files, ""]:
            p = os.path.join(root, n)
            st_ = os.lstat(p)
            out[os.path.relpath(p, top)] = (st_.st_uid, st_.st_gid, st_.st_mode)
    return out


def as_user(pw, fn) -> int:
    """Run ``fn()`` in a forked child that became ``pw``'s account; its exit status (0: ``fn``
    returned, 1: it raised)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            fn()
            code = 0
        except BaseException:
            pass
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def exchange(a: str, b: str) -> None:
    if _libc.renameat2(-100, a.encode(), -100, b.encode(), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


# ---- the local backend -----------------------------------------------------------------------


class Backend(AfhubLocalBackend):
    """The local backend with hub users named as their accounts (the mapping is
    test_accounts.py's business)."""

    def account(self, username: str) -> str:
        return username


def cluster(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, username=OWNER, tls_cert=b"CERT\n", tls_key=b"KEY\n", state={}
    )


def start(backend, c, cmd: list[str], name: str):
    """``start_process`` as the gateway calls it; the pid, or the exception of a refused start."""
    try:
        return asyncio.run(backend.start_process(c, cmd, {"PATH": "/usr/bin:/bin"}, name))
    except Exception as e:
        return e


def wait_for_text(path: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().endswith("\n"):
            return open(path).read()
        time.sleep(0.05)
    raise AssertionError(f"{path}: nothing written")


def test_logs_replaced_by_a_link_is_not_followed(accounts, base):
    """The owner points ``logs`` at a root directory (as at /etc/logrotate.d) and scales: no
    file appears there, and a log is only ever made by the owner's uid in the cluster's
    directory."""
    owner = accounts[OWNER]
    backend = Backend(run_as_owner=True, clusters_directory=os.path.join(base, "clusters"))
    target = os.path.join(base, "sentinel", "d")
    before = snapshot(os.path.join(base, "sentinel"))

    good = cluster("c0ffee01")
    good.state["workdir"] = workdir = backend.setup_working_directory(good)
    assert not isinstance(start(backend, good, ["/usr/bin/id", "-u"], "scheduler"), Exception)
    log = os.path.join(workdir, "logs", "scheduler.log")
    assert wait_for_text(log).strip() == str(owner.pw_uid)
    assert (os.lstat(log).st_uid, stat.S_IMODE(os.lstat(log).st_mode)) == (owner.pw_uid, 0o600)

    logs = os.path.join(workdir, "logs")

    def plant():
        os.rename(logs, logs + ".old")
        os.symlink(target, logs)

    assert as_user(owner, plant) == 0  # the owner's own directory: allowed
    result = start(backend, good, ["/usr/bin/id", "-u"], "worker-0123abcd")
    assert os.listdir(target) == []  # refused (or made as the owner): nothing in the target
    assert isinstance(result, Exception)
    assert snapshot(os.path.join(base, "sentinel")) == before
    backend.cleanup_working_directory(workdir)
    assert not os.path.lexists(workdir)
    assert snapshot(os.path.join(base, "sentinel")) == before  # cleanup did not follow it


def test_cluster_directory_cannot_be_renamed_or_swapped_by_its_owner(accounts, base):
    """By default (as root) clusters live under a root-owned 0711 non-sticky parent, not in
    /tmp: the owner may not rename or exchange their cluster's directory."""
    owner = accounts[OWNER]
    backend = Backend(run_as_owner=True)
    assert not backend.clusters_directory.startswith("/tmp")
    c = cluster("c0ffee02" + os.urandom(4).hex())
    workdir = backend.setup_working_directory(c)
    try:
        parent = os.lstat(os.path.dirname(workdir))
        assert (parent.st_uid, stat.S_IMODE(parent.st_mode)) == (0, 0o711)
        top = os.lstat(workdir)
        assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (owner.pw_uid, 0o700)
        for sub, mode in ((".certs", 0o700), (".certs/dask.crt", 0o600), (".certs/dask.pem", 0o600), ("logs", 0o700)):  # fmt: skip
            st_ = os.lstat(os.path.join(workdir, sub))
            assert (st_.st_uid, stat.S_IMODE(st_.st_mode)) == (owner.pw_uid, mode), sub
        mine = os.path.join(userland(base, owner), "mine")
        assert as_user(owner, lambda: os.mkdir(mine)) == 0
        assert as_user(owner, lambda: os.rename(workdir, workdir + ".x")) == 1
        assert as_user(owner, lambda: exchange(workdir, mine)) == 1
        assert as_user(owner, lambda: os.listdir(os.path.dirname(workdir))) == 1
        assert os.lstat(workdir).st_ino == top.st_ino
    finally:
        backend.cleanup_working_directory(workdir)
    assert not os.path.lexists(workdir)


def test_a_wrong_clusters_directory_is_refused(accounts, base):
    owner = accounts[OWNER]
    for how in ("0777", "owner", "link"):
        path = os.path.join(base, f"clusters-{how}")
        if how == "link":
            os.symlink(userland(base, owner), path)
        else:
            os.mkdir(path)
            os.chmod(path, 0o777 if how == "0777" else 0o711)
            if how == "owner":
                os.chown(path, owner.pw_uid, owner.pw_gid)
        backend = Backend(run_as_owner=True, clusters_directory=path)
        with pytest.raises(PublicException, match="working directory could not be prepared"):
            backend.setup_working_directory(cluster("c0ffee03"))
        assert os.listdir(userland(base, owner)) == []


def test_concurrent_owner_swapping_and_linking_while_the_gateway_builds(accounts, base):
    """The owner races the gateway: for every cluster name it keeps trying to rename, exchange
    and link the cluster's directory and what is in it (pointing at root's files). Nothing of
    root's changes and every directory the gateway made is whole."""
    owner = accounts[OWNER]
    backend = Backend(run_as_owner=True)  # the default place (dask-gateway's: mkdtemp in /tmp)
    clusters = backend.clusters_directory
    tag = os.urandom(3).hex()
    names = [f"race{tag}{i:04d}" for i in range(200)]
    sentinel = os.path.join(base, "sentinel")
    before = snapshot(sentinel)
    mine = os.path.join(userland(base, owner), "mine")
    stop = os.path.join(userland(base, owner), "stop")
    os.makedirs(os.path.join(mine, ".certs"))
    os.symlink(os.path.join(sentinel, "f"), os.path.join(mine, ".certs", "dask.crt"))
    os.symlink(os.path.join(sentinel, "d"), os.path.join(mine, "logs"))
    subprocess.run(["chown", "-hR", f"{owner.pw_uid}:{owner.pw_gid}", mine], check=True)

    def attack():
        while not os.path.exists(stop):
            found = [
                e.path for e in os.scandir("/tmp") if e.name.startswith("dask") and tag in e.name
            ]
            for w in found + [os.path.join(clusters, n) for n in names if clusters]:
                for fn in (
                    lambda w=w: exchange(w, mine),
                    lambda w=w: os.rename(w, w + ".x"),
                    lambda w=w: os.symlink(os.path.join(sentinel, "f"), w + "/.certs/dask.pem"),
                    lambda w=w: exchange(w + "/logs", mine + "/logs"),
                ):
                    try:
                        fn()
                    except OSError:
                        pass

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the attacker
        try:
            os.setgroups([])
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)
            attack()
        finally:
            os._exit(0)
    try:
        made = []
        for n in names:
            try:
                made.append(backend.setup_working_directory(cluster(n)))
            except PublicException:
                pass
        assert made  # the owner cannot stop every start
        for w in made:
            assert os.lstat(w).st_uid == owner.pw_uid
            assert stat.S_ISDIR(os.lstat(w).st_mode)
    finally:
        open(stop, "w").close()
        os.waitpid(pid, 0)
    for w in made:
        backend.cleanup_working_directory(w)
    assert snapshot(sentinel) == before
    assert os.listdir(os.path.join(sentinel, "d")) == []


# ---- hypothesis: a hostile tree and swaps between the gateway's steps ------------------------

PATCHED = ("open", "mkdir", "makedirs", "chown", "fchown", "lchown", "fchmod", "chmod")
ROOT_STATES = ["missing", "root-0711", "root-0777", "root-1777", "owner-0755", "link-to-userland"]
ENTRY_STATES = ["none", "dir-of-owner", "link-to-sentinel-dir", "link-to-sentinel-file"]
ACTIONS = [
    "link-logs-to-sentinel",
    "link-certs-to-sentinel",
    "link-crt-to-sentinel-file",
    "exchange-top-with-own",
    "rename-top-and-link-sentinel",
    "link-top-to-sentinel",
    "hardlink-sentinel-file-as-key",
]


def act(action: str, workdir: str, sentinel: str, own: str) -> None:
    """One thing the owner tries (as the owner; failures ignored)."""

    def replace(path: str, target: str):
        try:
            os.rename(path, path + f".{os.urandom(3).hex()}")
        except OSError:
            pass
        os.symlink(target, path)

    steps = {
        "link-logs-to-sentinel": lambda: replace(workdir + "/logs", sentinel + "/d"),
        "link-certs-to-sentinel": lambda: replace(workdir + "/.certs", sentinel + "/d"),
        "link-crt-to-sentinel-file": lambda: replace(workdir + "/.certs/dask.crt", sentinel + "/f"),
        "exchange-top-with-own": lambda: exchange(workdir, own),
        "rename-top-and-link-sentinel": lambda: replace(workdir, sentinel + "/d"),
        "link-top-to-sentinel": lambda: os.symlink(sentinel + "/d", workdir),
        "hardlink-sentinel-file-as-key": lambda: os.link(
            sentinel + "/f", workdir + "/.certs/dask.pem"
        ),
    }
    try:
        steps[action]()
    except OSError:
        pass


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    root_state=st.sampled_from(ROOT_STATES),
    entry_state=st.sampled_from(ENTRY_STATES),
    during=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(ACTIONS)), max_size=4),
    after=st.lists(st.sampled_from(ACTIONS), max_size=3),
)
def test_hostile_trees_and_swaps_never_give_root_files_away(
    accounts, root_state, entry_state, during, after
):
    """Whatever the tree looks like before (clusters directory missing, open to writes, the
    owner's, a link; an entry already under the cluster's name) and whatever the owner does
    between the gateway's calls (``os`` calls of setup, hooked) and before the log is opened
    and the directory removed: nothing outside the cluster's directory is created by root or
    changes owner or mode."""
    owner = accounts[OWNER]
    top = tempfile.mkdtemp(prefix="afhub-hostile-")
    try:
        os.chmod(top, 0o755)
        sentinel = os.path.join(top, "sentinel")
        os.makedirs(os.path.join(sentinel, "d"))
        with open(os.path.join(sentinel, "f"), "w") as f:
            f.write("root's\n")
        own = userland(top, owner)
        os.mkdir(os.path.join(own, "own"))
        os.chown(os.path.join(own, "own"), owner.pw_uid, owner.pw_gid)
        clusters = os.path.join(top, "clusters")
        if root_state == "link-to-userland":
            os.symlink(own, clusters)
        elif root_state != "missing":
            os.mkdir(clusters)
            os.chmod(clusters, {"root-0711": 0o711, "root-0777": 0o777, "root-1777": 0o1777,
                                "owner-0755": 0o755}[root_state])  # fmt: skip
            if root_state == "owner-0755":
                os.chown(clusters, owner.pw_uid, owner.pw_gid)
        name = "c0ffee" + os.urandom(4).hex()
        workdir = os.path.join(clusters, name)
        if entry_state != "none" and os.path.isdir(clusters):
            target = {"dir-of-owner": None, "link-to-sentinel-dir": sentinel + "/d",
                      "link-to-sentinel-file": sentinel + "/f"}[entry_state]  # fmt: skip
            if target is None:
                os.mkdir(workdir)
                os.lchown(workdir, owner.pw_uid, owner.pw_gid)
            else:
                os.symlink(target, workdir)
                os.lchown(workdir, owner.pw_uid, owner.pw_gid)
        before = {"sentinel": snapshot(sentinel), "own": snapshot(own)}

        calls = [0]
        hooked = {n: getattr(os, n) for n in PATCHED}
        busy = [False]

        def hook(fn):
            def wrapper(*a, **kw):
                if not busy[0]:
                    busy[0] = True
                    try:
                        for at, action in during:
                            if at == calls[0]:
                                as_user(
                                    owner, lambda a=action: act(a, workdir, sentinel, own + "/own")
                                )
                        calls[0] += 1
                    finally:
                        busy[0] = False
                return fn(*a, **kw)

            return wrapper

        backend = Backend(run_as_owner=True, clusters_directory=clusters)
        c = cluster(name)
        try:
            for n, fn in hooked.items():
                setattr(os, n, hook(fn))
            try:
                c.state["workdir"] = backend.setup_working_directory(c)
            except PublicException:
                c.state["workdir"] = None
        finally:
            for n, fn in hooked.items():
                setattr(os, n, fn)
        if c.state["workdir"]:
            for action in after:
                as_user(owner, lambda a=action: act(a, workdir, sentinel, own + "/own"))
            start(backend, c, ["/bin/true"], "worker-" + os.urandom(4).hex())
            backend.cleanup_working_directory(c.state["workdir"])
        assert snapshot(sentinel) == before["sentinel"]
        now = snapshot(own)
        for path, (uid, _, mode) in now.items():  # the owner's area: nothing of root's appeared
            assert path in before["own"] or uid != 0, path
            if path in before["own"]:
                was_uid, _, was_mode = before["own"][path]
                assert uid == was_uid, path  # nothing re-owned
                # the same object keeps its mode; another type there is the owner's own
                # exchange (e.g. their directory swapped with a link they planted), not root's
                if stat.S_IFMT(mode) == stat.S_IFMT(was_mode):
                    assert mode == was_mode, path
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---- Dask on Slurm: the staging directory ----------------------------------------------------


class SlurmBackend(AfhubSlurmBackend):
    def account(self, username: str) -> str:
        return username


@pytest.fixture
def staging(accounts, base):
    """A Slurm backend whose launcher (the real one, as the owner, through sudo) records every
    request, a fake ``sbatch`` that accepts everything, and a shared scratch area
    (``<base>/scratch``, root's, 1777) holding ``{username}`` staging directories."""
    launcher = "/opt/afhub/envs/analysis/bin/dask-gateway-jobqueue-launcher"
    if not os.path.exists(launcher) or not os.path.exists("/usr/bin/sudo"):
        pytest.skip(f"needs {launcher} (`make server-env`) and sudo")
    log = os.path.join(base, "launcher.log")
    open(log, "w").close()
    os.chmod(log, 0o666)
    recorder = os.path.join(base, "launcher")
    with open(recorder, "w") as f:
        f.write(f"#!/bin/sh\ntee -a {log} | {launcher}\n")
    sbatch = os.path.join(base, "sbatch")
    with open(sbatch, "w") as f:
        f.write("#!/bin/sh\necho 'Submitted batch job 7'\n")
    os.chmod(recorder, 0o755)
    os.chmod(sbatch, 0o755)
    scratch = os.path.join(base, "scratch")
    os.mkdir(scratch)
    os.chmod(scratch, 0o1777)
    values = load({"backend": {"type": "slurm"}, "dask": {"enabled": True}})
    settings_ = {
        "dask": values["dask"], "backend": "slurm", "images": [], "data_dir": base, "port": 1,
        "scheduler_port": 2, "prefix": "/services/dask-gateway", "server_check_interval": 0,
        "accounts": "system", "account_prefix": "",
        "default_prefix": "/opt/afhub/envs/analysis",
    }  # fmt: skip
    settings_["dask"]["slurm"] = {
        "launcher": recorder,
        "staging_directory": scratch + "/{username}",
    }
    backend = SlurmBackend(config=gateway_config(settings_), submit_command=sbatch)
    return SimpleNamespace(backend=backend, log=log, scratch=scratch)


def requests_made(log: str) -> str:
    return open(log).read()


@pytest.mark.parametrize("planted", ["dir-0777", "dir-0755", "link-to-their-dir"])
def test_a_staging_directory_another_user_created_is_refused_and_nothing_submitted(
    accounts, staging, planted
):
    other = accounts[OTHER]
    mine = os.path.join(staging.scratch, OWNER)

    def plant():
        if planted == "link-to-their-dir":
            theirs = os.path.join(staging.scratch, "theirs")
            os.mkdir(theirs, 0o700)
            os.symlink(theirs, mine)
        else:
            os.mkdir(mine)
            os.chmod(mine, 0o777 if planted == "dir-0777" else 0o755)

    assert as_user(other, plant) == 0
    user = User(OWNER, groups=[])
    with pytest.raises(PublicException, match=f"staging directory {mine} .*not safe"):
        asyncio.run(staging.backend.process_cluster_options(user, {}))
    assert requests_made(staging.log) == ""  # no sbatch, not even --test-only
    # and just before submission, whatever happened since the options were checked
    c = SimpleNamespace(
        name="c0ffee", username=OWNER, config=SlurmClusterConfig(staging_directory=staging.scratch + "/{username}"),
        tls_key=b"KEY", tls_cert=b"CERT", token="t", state={},
    )  # fmt: skip

    async def first_state():
        return await staging.backend.do_start_cluster(c).__anext__()

    with pytest.raises(PublicException, match="not safe"):
        asyncio.run(first_state())
    assert requests_made(staging.log) == ""


def test_a_missing_staging_directory_is_made_by_the_owner_and_checked(accounts, staging):
    owner = accounts[OWNER]
    user = User(OWNER, groups=[])
    asyncio.run(staging.backend.process_cluster_options(user, {}))
    made = os.lstat(os.path.join(staging.scratch, OWNER))
    assert stat.S_ISDIR(made.st_mode)
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (owner.pw_uid, 0o700)
    assert '"--test-only"' in requests_made(staging.log)


# ---- homes: an earlier run's tree is adopted without following links -------------------------


def test_adopting_an_earlier_home_does_not_follow_links(accounts, base):
    from afhub.spawner.accounts import _adopt

    owner = accounts[OWNER]
    sentinel = os.path.join(base, "sentinel")
    before = snapshot(sentinel)
    home = os.path.join(base, "home")
    os.makedirs(os.path.join(home, "sub"))
    os.symlink(sentinel, os.path.join(home, "sub", "link-dir"))
    os.symlink(os.path.join(sentinel, "f"), os.path.join(home, "link-file"))
    with open(os.path.join(home, "sub", "notebook.ipynb"), "w") as f:
        f.write("{}")
    _adopt(home, owner.pw_uid, owner.pw_gid)
    assert snapshot(sentinel) == before
    for path, (uid, gid, _) in snapshot(home).items():
        assert (uid, gid) == (owner.pw_uid, owner.pw_gid), path


@pytest.mark.skipif(os.geteuid() != 0, reason="the storage runs as its own account only as root")
def test_the_storage_layout_never_follows_the_service_accounts_links(tmp_path):
    """``afhub up`` lays out its XRootD storage again at every start. What lies in the service
    account's directories is written by a child running as that account: a link the account
    planted (here, the host certificate pointing at a root file) is replaced, never written
    through, and nothing under its directories belongs to root."""
    from afhub.hub_config import facility_ca, xrootd

    if not os.access(xrootd.XROOTD, os.X_OK):
        pytest.skip("xrootd is not installed (make system-deps)")
    shared = Path(tempfile.mkdtemp(prefix="afhub-test-storage-"))  # the account must enter it
    shared.chmod(0o755)
    try:
        _storage_layout(shared / "storage", tmp_path, xrootd, facility_ca)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _storage_layout(root, tmp_path, xrootd, facility_ca):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    sample = tmp_path / "sample.root"
    sample.write_bytes(b"root-only input\n")
    sample.chmod(0o600)  # read by root, written by the account
    key = facility_ca.ensure_signing_key(str(private))
    args = dict(
        root=str(root), data_dir=str(private), issuer="http://127.0.0.1:1", audience="a",
        origin_port=1, cache_port=2, signing_key=key,
        public_files={"samples/s.root": str(sample)}, users=["alice"],
    )  # fmt: skip
    storage = xrootd.prepare(**args)
    sentinel = tmp_path / "root-file"
    sentinel.write_text("root's\n")
    cert = root / "etc" / "hostcert.pem"
    cert.unlink()
    os.symlink(sentinel, cert)
    os.lchown(cert, storage.uid, storage.gid)
    xrootd.prepare(**args)
    assert sentinel.read_text() == "root's\n" and sentinel.stat().st_uid == 0
    assert not cert.is_symlink() and cert.stat().st_uid == storage.uid
    assert (root / "export" / "public" / "samples" / "s.root").read_bytes() == b"root-only input\n"
    for name in xrootd.SERVICE_DIRS:
        for path in [root / name, *(root / name).rglob("*")]:
            assert path.lstat().st_uid == storage.uid, path


@pytest.mark.skipif(os.geteuid() != 0, reason="the storage runs as its own account only as root")
def test_the_layout_child_reaped_by_afhub_ups_reaper_still_counts(tmp_path):
    """``afhub up`` reaps every child it does not track (``runner.reap_orphans``, a thread in
    ``waitpid(-1)``), so the child that lays the storage out as the account may be reaped before
    its parent waits for it: the start must go on when the child did its work (it said so) and
    fail when it did not, whoever collected the exit status."""
    import threading

    from afhub.hub_config import xrootd

    reaped = []
    stop = threading.Event()

    def reaper():
        while not stop.is_set():
            try:
                reaped.append(os.waitpid(-1, 0)[0])
            except ChildProcessError:
                time.sleep(0.01)

    thread = threading.Thread(target=reaper, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            out = tmp_path / f"made{len(reaped)}"
            xrootd._as_account(0, 0, lambda out=out: out.write_text("ok"))
            assert out.read_text() == "ok"
        with pytest.raises(RuntimeError, match="failed"):
            xrootd._as_account(0, 0, lambda: 1 / 0)
    finally:
        stop.set()
        thread.join(5)
    assert reaped  # the reaper did take the children: the case the start must survive
