"""Benchmark: a ready 2-worker cluster through afhub's ``new_cluster`` against the plain
dask-gateway client on the same gateway, and scaling 2 -> 8 workers, same run.

    python bench/dask_cluster.py [--rounds 6] [--smoke]

``--smoke`` (``tests/test_bench_smoke.py``): one round, scaling 2 -> 3 workers.

Starts the embedded default facility (``afhub up``: hub, proxy, demo OIDC provider, the real
dask-gateway-server, local backend), logs alice in through the provider, starts her server
and a kernel in it, and times inside that kernel, interleaving the two clients each round:

- create, baseline: ``Gateway().new_cluster(); cluster.scale(2)`` until 2 workers are up;
- create, afhub:    ``new_cluster(workers=2)`` (options checked against the limits, the data
  token put on the workers, versions compared) until 2 workers are up;
- scale: ``cluster.scale(8)`` until 8 workers are up, on each of the two clusters.

Each cluster is shut down and the next one started only once the gateway reports it stopped
(otherwise whichever client goes second in a round starts while 9 processes exit, which made
the second one ~20% slower); the order alternates per round, and the default round count is
even, so each client goes first equally often.

The baseline's workers join once alice's server has put the data-access token on the
scheduler, which holds joining workers until then (``server_ext/dask_token_gate.py``); the
server finds a cluster made with the stock client by listing her clusters every ~6 s. A
baseline near 30 s (the gate's timeout, ``contract.DEFAULT_DASK_TOKEN_WAIT``) means that sync
stopped: it did while the server's gateway clients could deadlock its loop thread when garbage
collected there (``server_ext/dask_gateway_compat.py``).

Prints the median of the rounds for each and the ratios afhub / baseline (goal <= 1.10).
Not a test. Run it from a ``pip install .`` venv in the checkout (``make setup`` installs the
proxy into ``node_modules``, which this puts on ``PATH``).

Measured 2026-12-07 (a ``pip install .`` venv, 2 shared cores under load 3.6-6.3, one run of 6
rounds, median): ready 2-worker cluster 0.91x (5.78 / 6.31 s), scale 2 -> 8 1.00x (12.02 /
12.01 s). Details: docs/operators-dask.md "How long a cluster takes".
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import smoke_arg, use_checkout

# tests/ helpers and configurable-http-proxy from the checkout (``afhub up`` finds the proxy
# there only when afhub is installed editable; a ``pip install .`` venv looks on PATH)
use_checkout()
from facility import Facility, example_values  # noqa: E402
from kernel_ws import Kernel  # noqa: E402

CODE = """
import json, statistics, time
from dask_gateway import Gateway
from afhub.server_ext.dask import new_cluster

def ready(cluster, n):
    client = cluster.get_client(set_as_default=False)
    client.wait_for_workers(n, timeout=600)
    return client

def baseline():
    t = time.perf_counter()
    cluster = Gateway().new_cluster()
    cluster.scale(2)
    client = ready(cluster, 2)
    return cluster, client, time.perf_counter() - t

def afhub():
    t = time.perf_counter()
    cluster = new_cluster(workers=2)
    client = ready(cluster, 2)
    return cluster, client, time.perf_counter() - t

def stopped(gw, name):
    # the next cluster starts when this one's processes are gone, not while they exit
    t = time.monotonic()
    while True:
        try:
            if gw.get_cluster(name).status.name in ("STOPPED", "FAILED"):
                return
        except ValueError:  # no longer known to the gateway: gone
            return
        if time.monotonic() - t > 120:
            raise TimeoutError(f"cluster {name} still stopping after 120 s")
        time.sleep(0.1)

def scale(cluster, client):
    t = time.perf_counter()
    cluster.scale({scale_to})
    client.wait_for_workers({scale_to}, timeout=600)
    return time.perf_counter() - t

res = {"create_baseline": [], "create_afhub": [], "scale_baseline": [], "scale_afhub": []}
for i in range({rounds}):
    order = [("baseline", baseline), ("afhub", afhub)]
    if i % 2:
        order.reverse()
    for label, make in order:
        cluster, client, dt = make()
        res["create_" + label].append(dt)
        res["scale_" + label].append(scale(cluster, client))
        client.close()
        name = cluster.name
        cluster.shutdown()
        stopped(Gateway(), name)
print(json.dumps(res))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="even: each goes first as often")
    smoke_arg(ap)
    args = ap.parse_args()
    scale_to = 3 if args.smoke else 8
    if args.smoke:
        args.rounds = 1
    values = example_values("local")
    values["culling"] = {"enabled": False}
    values["dask"]["max_workers"] = 8
    values["backend"]["local"] = {"account_prefix": "aftbench-"}  # own accounts, removed at stop
    with tempfile.TemporaryDirectory(prefix="afhub-bench-dask-") as tmp:
        fac = Facility(values, Path(tmp)).start()
        try:
            hs = fac.login("alice")
            assert hs.spawn().status_code in (201, 202)
            hs.wait_ready(timeout=180)
            hs.get("user/alice/lab")
            kernel = Kernel(hs)
            code = CODE.replace("{rounds}", str(args.rounds)).replace("{scale_to}", str(scale_to))
            out = kernel.run(code, timeout=3600)
            res = json.loads(out.strip().splitlines()[-1])
        finally:
            fac.stop()
    import statistics

    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"rounds: {args.rounds} (median of each)")
    for what in ("create", "scale"):
        b, a = med[f"{what}_baseline"], med[f"{what}_afhub"]
        label = "ready 2-worker cluster" if what == "create" else f"scale 2 -> {scale_to} workers"
        print(
            f"{label}: dask-gateway {b:.2f} s, afhub {a:.2f} s, ratio {a / b:.2f}x (goal <= 1.10x)"
        )
    print("raw:", json.dumps({k: [round(x, 2) for x in v] for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
