"""Every bench in ``bench/`` still runs: each one's ``--smoke`` mode (a few rounds at small
sizes through the same code path as a real run) must exit 0 and print its figures. No ratio is
judged here: benches measure, tests assert behaviour. A bench added without a smoke mode fails
``test_every_bench_has_a_smoke_run``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slurm import require, server_env, slurm_available

BENCH = Path(__file__).resolve().parent.parent / "bench"

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


def test_every_bench_has_a_smoke_run():
    benches = {p.name for p in BENCH.glob("*.py") if p.name != "common.py"}
    assert benches == set(SMOKE), "add the new bench's --smoke run to SMOKE"


def run_smoke(name: str) -> str:
    expect, timeout, _ = SMOKE[name]
    r = subprocess.run(
        [sys.executable, str(BENCH / name), "--smoke"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{name} --smoke exited {r.returncode}:\n{out[-4000:]}"
    assert expect in r.stdout, f"{name} --smoke printed no {expect!r}:\n{out[-4000:]}"
    return r.stdout


@pytest.mark.parametrize("name", [n for n, (_, _, fac) in SMOKE.items() if not fac])
def test_in_process_bench_runs(name):
    run_smoke(name)


@pytest.mark.integration
def test_token_broker_bench_runs():
    """As root the stub servers run as per-user accounts: the stub must be readable by them
    (it sat in a 0700 temporary directory, and every start answered 500)."""
    out = run_smoke("token_broker.py")
    assert "errors 0" in out


@pytest.mark.integration
def test_dask_cluster_bench_runs():
    run_smoke("dask_cluster.py")


@pytest.mark.integration
def test_analysis_bench_runs():
    run_smoke("analysis.py")


@pytest.mark.integration
def test_spawn_storm_bench_runs():
    """Both hubs, 2 users over a spawn limit of 1: every start succeeds after its 429s."""
    out = run_smoke("spawn_storm.py")
    assert "failures 0" in out
    assert "2/2 ready" in out


@pytest.mark.integration
def test_slurm_spawn_bench_runs():
    require(slurm_available())
    require(None if server_env() else "no server environment (make server-env)")
    run_smoke("slurm_spawn.py")
