"""Applying a KubeSpawner ``profile_list`` at start: afhub's KubeProfileSpawner against stock
KubeSpawner, in this process.

For each start both spawners get the same ``c.KubeSpawner.profile_list`` (the
jupyterhub-fancy-profiles demo list from tests/profile_lists/) and the same ``user_options``, and
go through JupyterHub's order: ``_run_apply_user_options`` then ``load_user_options`` (afhub:
group filtering, validation, translation, overrides; KubeSpawner: initialise the list, validate,
apply overrides). Spawner construction and pod rendering are outside the timed part. Prints the
median time per start of each and the ratio afhub / KubeSpawner (above 1: afhub is slower).

No Kubernetes API server is contacted (``_mock=True``, KUBECONFIG at https://127.0.0.1:1).

    python bench/profile_list_start.py [--repeat 200] [--smoke]

``--smoke`` (``tests/test_bench_smoke.py``): 4 starts per round, the same path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: not-a-secret}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""
LIST = Path(__file__).resolve().parent.parent / "tests/profile_lists/fancy-profiles-demo.yaml"
STARTS = [
    {"profile": "profile-without-any-options"},
    {"profile": "cpu-only-usage", "image": "scipy", "resources": "mem_10_8"},
    {"profile": "gpu-only-usage", "image--unlisted-choice": "jupyter/base-notebook:2024"},
    {"profile": "custom", "image--unlisted-choice": "jupyter/r-notebook:latest"},
]


async def one_round(cls, config, repeat: int) -> float:
    times = []
    for i in range(repeat):
        user_options = dict(STARTS[i % len(STARTS)])
        sp = cls(config=config, _mock=True)
        sp.user_options = user_options
        t0 = time.perf_counter()
        await sp._run_apply_user_options(sp.user_options)
        await sp.load_user_options()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def main(repeat: int) -> None:
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    c = Config()
    c.KubeSpawner.profile_list = yaml.safe_load(LIST.read_text())
    runs = []
    for _ in range(3):  # interleaved, so load changes hit both alike
        stock = await one_round(KubeSpawner, c, repeat)
        ours = await one_round(KubeProfileSpawner, c, repeat)
        runs.append((stock, ours, ours / stock))
    for n, (stock, ours, ratio) in enumerate(runs, 1):
        print(
            f"run {n}: KubeSpawner {stock * 1e3:.3f} ms, afhub {ours * 1e3:.3f} ms, ratio {ratio:.2f}"
        )
    stock, ours, ratio = sorted(runs, key=lambda r: r[2])[1]
    print(
        f"median of 3: KubeSpawner {stock * 1e3:.3f} ms/start, afhub {ours * 1e3:.3f} ms/start, "
        f"ratio afhub/KubeSpawner {ratio:.2f}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--smoke", action="store_true", help="4 starts per round; figures mean nothing")
    args = p.parse_args()
    if args.smoke:
        args.repeat = len(STARTS)
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
        f.write(KUBECONFIG)
    os.environ["KUBECONFIG"] = f.name
    try:
        asyncio.run(main(args.repeat))
    finally:
        os.unlink(f.name)
