"""Every bench in ``bench/`` still runs, from a ``pip install .`` venv, as root and as a plain
user: each one's ``--smoke`` mode (a few rounds at small sizes through the same code path as a
real run) must exit 0 and print its figures. No ratio is judged here: benches measure, tests
assert behaviour. A bench added without a smoke mode fails ``test_every_bench_has_a_smoke_run``.

The venv (``bench_venv``) is made once per session from ``/usr/bin/python3`` in a
world-readable place (the hub venv's interpreter may live under ``/root``, which a plain account
cannot run): the hub lock (``--require-hashes --no-deps``, wheels from pip's cache after
``make setup``), then ``pip install --no-deps .`` of this checkout. The plain account
(``plain_account``) is made here and removed after; it runs each bench with a minimal
environment (``runuser``, ``env -i``). Benches that need root (:data:`ROOT_ONLY`) must say so
in one line and exit 0 as a plain user, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from slurm import require, server_env, slurm_available

CHECKOUT = Path(__file__).resolve().parent.parent
BENCH = CHECKOUT / "bench"
SYSTEM_PYTHON = "/usr/bin/python3"
UV = str(Path(sys.executable).parent / "uv")  # pinned in the test extra

# bench -> (what its output must contain, timeout in seconds, needs a facility)
SMOKE = {
    "kernel_discovery.py": ("cold listing", 60, False),
    "profile_list_start.py": ("ratio afhub/KubeSpawner", 60, False),
    "spawn_page.py": ("ratio afhub / KubeSpawner", 60, False),
    "token_broker.py": ("ratio broker/baseline", 240, True),
    "dask_cluster.py": ("ready 2-worker cluster", 300, True),
    "slurm_spawn.py": ("spawn-to-ready", 300, True),
    "analysis.py": ("ratio time (b)/(a)", 600, True),
    "spawn_storm.py": ("ratio afhub/plain", 600, True),
    "data_read.py": ("ratio warm/local", 120, False),  # its own XRootD origin and cache
}
# benches that need root -> what they print as a plain user (and why they need root)
ROOT_ONLY = {
    # slurmd runs jobs as their users; the bench starts its own Slurm and makes an account
    "slurm_spawn.py": "not run: slurmd needs root",
}


def test_every_bench_has_a_smoke_run():
    benches = {p.name for p in BENCH.glob("*.py") if p.name != "common.py"}
    assert benches == set(SMOKE), "add the new bench's --smoke run to SMOKE"


@pytest.fixture(scope="module")
def bench_venv() -> Path:
    """A ``pip install .`` venv of this checkout from the system Python, every account may run."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        require(f"{SYSTEM_PYTHON} is missing (make system-deps)")
    root = Path(tempfile.mkdtemp(prefix="afhub-test-bench-venv-"))
    root.chmod(0o755)
    venv = root / "venv"
    steps = [
        [SYSTEM_PYTHON, "-m", "venv", str(venv)],
        # the lock's packages by uv (the hub environment's; hashes checked, from its cache: a
        # minute less than pip), then afhub itself by the venv's own pip
        [UV, "pip", "install", "--quiet", "--python", str(venv / "bin/python"), "--no-deps",
         "--require-hashes", "-r", str(CHECKOUT / "requirements-hub.txt")],
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", str(CHECKOUT)],
    ]  # fmt: skip
    try:
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=900)
            assert r.returncode == 0, f"{' '.join(argv)}:\n{(r.stdout + r.stderr)[-3000:]}"
        # an installed afhub, not the checkout
        r = subprocess.run(
            [str(venv / "bin/python"), "-c", "import afhub.hub_config as m; print(m.__file__)"],
            capture_output=True, text=True, cwd="/",
        )  # fmt: skip
        assert r.stdout.startswith(str(venv)), r.stdout + r.stderr
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def plain_account():
    """A plain account made for these runs (removed after, with anything it left running)."""
    name = f"afbench{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        import psutil

        uid = pwd.getpwnam(name).pw_uid
        for p in psutil.process_iter(["uids"]):
            if p.info["uids"] and p.info["uids"].real == uid:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def run_smoke(name: str, venv: Path, account: pwd.struct_passwd | None = None) -> str:
    """``<venv>/bin/python bench/<name> --smoke``, as root or as ``account`` (minimal environment:
    no variable of root's, the session's TMPDIR so the leak check sees what it leaves)."""
    expect, timeout, _ = SMOKE[name]
    argv = [str(venv / "bin/python"), str(BENCH / name), "--smoke"]
    if account is not None:
        keep = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": account.pw_dir,
            "LANG": "C.UTF-8",
            "TMPDIR": tempfile.gettempdir(),
            **{k: os.environ[k] for k in ("AFHUB_SERVER_ENV", "CI") if k in os.environ},
        }
        argv = ["runuser", "-u", account.pw_name, "--", "env", "-i",
                *(f"{k}={v}" for k, v in keep.items()), *argv]  # fmt: skip
    if (account is not None or os.geteuid() != 0) and name in ROOT_ONLY:
        expect = ROOT_ONLY[name]
    r = subprocess.run(
        argv,
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout + r.stderr
    who = account.pw_name if account else "root"
    assert r.returncode == 0, f"{name} --smoke as {who} exited {r.returncode}:\n{out[-4000:]}"
    assert expect in r.stdout, f"{name} --smoke as {who} printed no {expect!r}:\n{out[-4000:]}"
    assert "Traceback" not in out, f"{name} --smoke as {who}:\n{out[-4000:]}"
    return r.stdout


def run_as_everyone(name: str, venv: Path, request) -> list[str]:
    """The bench's smoke run as root and as the plain account, side by side (two processes that
    share nothing but the machine: the suite waits for the slower one, not for both in turn).
    Run without root, the caller's run is the plain-user run and the only one. Returns each
    run's output."""
    accounts = [None]
    if os.geteuid() == 0:
        accounts.append(request.getfixturevalue("plain_account"))
    with ThreadPoolExecutor(len(accounts)) as pool:
        runs = [pool.submit(run_smoke, name, venv, account) for account in accounts]
        return [run.result() for run in runs]


@pytest.mark.parametrize("name", [n for n, (_, _, fac) in SMOKE.items() if not fac])
def test_in_process_bench_runs(name, bench_venv, request):
    run_as_everyone(name, bench_venv, request)


@pytest.mark.integration
def test_token_broker_bench_runs(bench_venv, request):
    """As root the stub servers run as per-user accounts: the stub must be readable by them
    (it sat in a 0700 temporary directory, and every start answered 500); as a plain user they
    run as that user (single-user mode would refuse all but the first)."""
    for out in run_as_everyone("token_broker.py", bench_venv, request):
        assert "errors 0" in out


@pytest.mark.integration
def test_dask_cluster_bench_runs(bench_venv, request):
    run_as_everyone("dask_cluster.py", bench_venv, request)


@pytest.mark.integration
def test_analysis_bench_runs(bench_venv, request):
    run_as_everyone("analysis.py", bench_venv, request)


@pytest.mark.integration
def test_spawn_storm_bench_runs(bench_venv, request):
    """Both hubs, 2 users over a spawn limit of 1: every start succeeds after its 429s."""
    for out in run_as_everyone("spawn_storm.py", bench_venv, request):
        assert "failures 0" in out
        assert "2/2 ready" in out


@pytest.mark.integration
def test_slurm_spawn_bench_runs(bench_venv, request):
    """Root only (it starts its own Slurm, whose slurmd runs jobs as their users): as a plain
    user it says so and exits 0."""
    if os.geteuid() == 0:
        require(slurm_available())
        require(None if server_env() else "no server environment (make server-env)")
    run_as_everyone("slurm_spawn.py", bench_venv, request)
