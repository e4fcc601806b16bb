"""Benchmark: the token broker against the hub's own ``GET /hub/api/users/{name}``, same run.

    python bench/token_broker.py [--users 200] [--requests 2000] [--concurrency 16] [--smoke]

Starts a real facility (``afhub up``: hub, proxy, demo OIDC provider) with ``--users`` demo
users, logs each in through the provider (real auth_state), starts one server per user and
then times, through the proxy, with the same client and concurrency:

- baseline: ``GET /hub/api/users/{name}`` with the user's own API token;
- broker:   ``GET /hub/api/afhub/users/{name}/token`` with the user's server API token.

Users' servers are a stub (a few lines of asyncio answering 200) installed as the local
backend's ``bin/jupyterhub-singleuser``: 200 JupyterLab processes do not fit on a laptop, and
the broker only needs the server's API token, which the hub issues the same way. Tokens live
an hour here, so this measures the broker's steady state (decrypting auth_state, checks);
refreshes are merged and counted by ``afhub_token_refresh_total`` (printed). Not a test.

As root each user's stub runs as that user's system account: the stub and the interpreter it
names must be readable by every account (``common.shared_tempdir``, ``common.system_python``;
a stub under a 0700 temporary directory made every start answer 500). As a plain user every
stub runs as the caller (``common.local_accounts``: ``shared-uid``). ``--smoke``: 2 users,
40 requests, the same path (``tests/test_bench_smoke.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import requests
from common import local_accounts, shared_tempdir, smoke_arg, system_python, use_checkout

use_checkout()
from facility import Facility  # noqa: E402

STUB = textwrap.dedent(
    """\
    #!{python}
    # stand-in for jupyterhub-singleuser: answers 200 to anything on JUPYTERHUB_SERVICE_URL
    import asyncio, os, urllib.parse
    url = urllib.parse.urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
            await writer.drain()
        finally:
            writer.close()
    async def main():
        server = await asyncio.start_server(handle, url.hostname, url.port)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
    """
)


def stub_prefix(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "jupyterhub-singleuser"
    exe.write_text(STUB.format(python=system_python()))
    exe.chmod(0o755)
    return root


def values(n_users: int, prefix: Path) -> dict:
    return {
        "hub": {"ip": "127.0.0.1", "concurrent_spawn_limit": 200},
        "auth": {
            "provider": "dev",
            "admin_groups": ["afhub-admins"],
            "dev": {
                "port": 0,
                "token_lifetime": 3600,
                "users": [{"name": "admin0", "groups": ["afhub-admins"]}]
                + [{"name": f"u{i:03d}"} for i in range(n_users)],
            },
        },
        "backend": {"type": "local", "local": {"default_prefix": str(prefix), **local_accounts()}},
        "culling": {"enabled": False},
    }


def timed(calls, concurrency: int) -> tuple[list[float], float, int]:
    local = threading.local()

    def one(call):
        if not hasattr(local, "s"):
            local.s = requests.Session()
        method, url, token = call
        t0 = time.perf_counter()
        r = local.s.request(method, url, headers={"Authorization": f"token {token}"}, timeout=60)
        return time.perf_counter() - t0, r.status_code

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, calls))
    wall = time.perf_counter() - t0
    bad = sum(1 for _, code in results if code != 200)
    return [d for d, _ in results], wall, bad


def summary(name: str, lat: list[float], wall: float, bad: int) -> dict:
    q = statistics.quantiles(lat, n=100)
    out = {"p50": q[49] * 1000, "p95": q[94] * 1000, "rps": len(lat) / wall, "errors": bad}
    print(
        f"{name:9s} p50 {out['p50']:7.1f} ms  p95 {out['p95']:7.1f} ms  "
        f"{out['rps']:7.1f} req/s  errors {bad}"
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    smoke_arg(ap)
    args = ap.parse_args()
    if args.smoke:
        args.users, args.requests, args.concurrency = 2, 40, 4

    work = Path(tempfile.mkdtemp(prefix="afhub-bench-tokens-"))  # the hub's state: private
    stub = shared_tempdir("afhub-bench-stub-")  # what the users' accounts run: readable
    fac = Facility(values(args.users, stub_prefix(stub / "env")), work / "facility")
    try:
        fac.start()
        names = [f"u{i:03d}" for i in range(args.users)]
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            sessions = dict(zip(names, pool.map(fac.login, names), strict=True))
        print(
            f"logged in {len(sessions)} users through the provider in {time.perf_counter() - t0:.1f}s"
        )
        for hs in sessions.values():
            r = hs.spawn()
            if r.status_code not in (201, 202):
                raise SystemExit(f"start of {hs.username}: {r.status_code} {r.text[:300]}")
        for hs in sessions.values():
            hs.wait_ready(timeout=300)
        print(f"{len(sessions)} servers ready after {time.perf_counter() - t0:.1f}s")
        home = str(fac.home("u000").parent)  # the users' home root (per-user accounts or not)
        server_tokens = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                env = p.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if env.get("HOME", "").startswith(home) and env.get("JUPYTERHUB_USER") in sessions:
                server_tokens[env["JUPYTERHUB_USER"]] = env["JUPYTERHUB_API_TOKEN"]
        assert len(server_tokens) == len(names), f"found {len(server_tokens)} server tokens"
        user_tokens = {
            n: hs.api("POST", f"users/{n}/tokens", json={"note": "bench"}).json()["token"]
            for n, hs in sessions.items()
        }
        base = fac.url + "hub/api/"
        order = [names[i % len(names)] for i in range(args.requests)]
        baseline_calls = [("GET", base + f"users/{n}", user_tokens[n]) for n in order]
        broker_calls = [("GET", base + f"afhub/users/{n}/token", server_tokens[n]) for n in order]
        timed(baseline_calls[:200], args.concurrency)  # warm up both paths
        timed(broker_calls[:200], args.concurrency)
        print(f"{args.requests} requests each, concurrency {args.concurrency}, {args.users} users")
        results = {}
        for name, calls in (("baseline", baseline_calls), ("broker", broker_calls)):
            results[name] = summary(name, *timed(calls, args.concurrency))
            if results[name]["errors"]:
                raise SystemExit(f"{name}: {results[name]['errors']} requests did not answer 200")
        b, k = results["baseline"], results["broker"]
        print(
            f"ratio broker/baseline: p50 {k['p50'] / b['p50']:.2f}x  p95 {k['p95'] / b['p95']:.2f}x  "
            f"throughput {k['rps'] / b['rps']:.2f}x"
        )
        metrics = fac.login("admin0").get("hub/metrics").text
        refreshes = [
            line for line in metrics.splitlines() if line.startswith("afhub_token_refresh_total")
        ]
        print("upstream refreshes during the run:", refreshes[0].split()[-1] if refreshes else "?")
    finally:
        fac.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stub, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
