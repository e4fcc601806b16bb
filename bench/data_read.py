"""Benchmark: reading the HZZ sample over ``root://`` through the XCache, cold and warm, against
reading the same file from local disk, same run:

    python bench/data_read.py [--rounds 20] [--smoke]

Starts the embedded storage exactly as ``afhub up`` does (``hub_config/xrootd.py``: an XRootD
origin and an XCache, TLS from a facility CA, tokens checked by the scitokens plugin, as the
``xrootd`` account when run as root) with ``--rounds`` copies of ``uproot-HZZ.root`` under
``/public/bench``, signs a WLCG token with a fresh demo key, and runs one reader process in the
analysis environment (the XRootD client and uproot users get; the token found through
``BEARER_TOKEN_FILE``). Each round, on copy *i*:

- local: the file from local disk (``open().read()``);
- cold:  ``root://`` through the cache, the copy never read before (the cache fetches it from
  the origin);
- warm:  the same copy through the cache again (served from the cache);

each an open, a read of the whole file and a close, on the reader's connection (one per token
generation, as in a kernel). Then uproot reads every branch of the tree, local and warm. The
medians are printed with the ratios cold/local and warm/local (time per file). ``--smoke``
(``tests/test_bench_smoke.py``): 2 rounds; its figures mean nothing. Not a test. Figures:
docs/operators-tokens.md "Read throughput".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import CHECKOUT, shared_tempdir, smoke_arg, use_checkout

use_checkout()
from afhub.hub_config import facility_ca, xrootd  # noqa: E402
from afhub.hub_config.secrets import write_file  # noqa: E402
from afhub.spawner.local import server_environment  # noqa: E402

HZZ = CHECKOUT / "images" / "analysis" / "data" / "uproot-HZZ.root"
ISSUER = "https://afhub-bench.invalid"
AUDIENCE = "afhub-storage"

# run by the analysis environment's Python: argv = local file, cache URL base, rounds;
# prints one JSON line of per-round seconds for each way
READER = r"""
import json, sys, time
from XRootD import client
from XRootD.client.flags import OpenFlags
import uproot

local, cache, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def read_remote(url):
    f = client.File()
    st, _ = f.open(url, OpenFlags.READ)
    assert st.ok, st.message
    st, info = f.stat()
    st, data = f.read(0, info.size)
    assert st.ok and len(data) == info.size, st.message
    f.close()
    return len(data)

def read_local(path):
    with open(path, "rb") as f:
        return len(f.read())

def timed(fn, *args):
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n

def arrays(where):
    with uproot.open(where) as f:
        return len(f["events"].arrays(library="np"))

out = {"local": [], "cold": [], "warm": [], "uproot_local": [], "uproot_warm": []}
read_remote(f"{cache}//public/samples/uproot-HZZ.root")  # the first login (TLS, token), untimed
for i in range(rounds):
    url = f"{cache}//public/bench/hzz-{i}.root"
    for key, fn, arg in (("local", read_local, local), ("cold", read_remote, url),
                         ("warm", read_remote, url)):
        s, n = timed(fn, arg)
        out[key].append(s)
    out["bytes"] = n
    out["uproot_local"].append(timed(arrays, local)[0])
    out["uproot_warm"].append(timed(arrays, url)[0])
print(json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mint(signing_key: str) -> str:
    from afhub.authenticator.wlcg import wlcg_claims
    from authlib.jose import JsonWebKey, jwt

    with open(signing_key, encoding="utf-8") as f:
        jwk = json.load(f)
    claims = wlcg_claims(
        issuer=ISSUER,
        subject="bench",
        audience=AUDIENCE,
        scope="storage.read:/public",
        now=time.time(),
        lifetime=3600,
    )
    header = {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}
    return jwt.encode(header, claims, JsonWebKey.import_key(jwk)).decode()


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    smoke_arg(ap)
    args = ap.parse_args()
    rounds = 2 if args.smoke else args.rounds
    python = os.path.join(server_environment(), "bin", "python")
    if not shutil.which(xrootd.XROOTD):
        print("data_read: xrootd is not installed (make system-deps)", file=sys.stderr)
        return 1
    root = shared_tempdir("afhub-bench-storage-")
    private = tempfile.mkdtemp(prefix="afhub-bench-data-")  # CA and signing key, 0700
    procs: list[subprocess.Popen] = []
    try:
        key = facility_ca.ensure_signing_key(private)
        ports = {"origin": free_port(), "cache": free_port()}
        storage = xrootd.prepare(
            root=str(root),
            data_dir=private,
            issuer=ISSUER,
            audience=AUDIENCE,
            origin_port=ports["origin"],
            cache_port=ports["cache"],
            signing_key=key,
            public_files={
                "samples/uproot-HZZ.root": str(HZZ),
                **{f"bench/hzz-{i}.root": str(HZZ) for i in range(rounds)},
            },
            users=[],
        )
        account = (
            {"user": storage.uid, "group": storage.gid, "extra_groups": []}
            if os.geteuid() == 0
            else {}
        )
        for name in ("origin", "cache"):
            procs.append(
                subprocess.Popen(
                    storage.commands[name],
                    env=storage.envs[name],
                    cwd=storage.root,
                    stdout=subprocess.DEVNULL,
                    **account,
                )
            )
        for port in ports.values():
            deadline = time.monotonic() + 30
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"xrootd did not listen on {port} (see {storage.logs})")
                time.sleep(0.05)
        token_dir = tempfile.mkdtemp(prefix="token-", dir=private)  # removed with it
        token_file = os.path.join(token_dir, "bt")
        write_file(token_file, mint(key).encode())
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": token_dir,
            "BEARER_TOKEN_FILE": token_file,
            "X509_CERT_DIR": storage.ca_dir,
        }
        r = subprocess.run(
            [python, "-c", READER, str(HZZ), f"root://127.0.0.1:{ports['cache']}", str(rounds)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            return 1
        out = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)

    size = out["bytes"]
    med = {k: median(v) for k, v in out.items() if isinstance(v, list)}
    print(f"data_read: uproot-HZZ.root ({size / 1e3:.0f} kB), {rounds} rounds, medians")
    for key, label in (
        ("local", "local disk          "),
        ("cold", "root:// cache, cold "),
        ("warm", "root:// cache, warm "),
    ):
        mbs = size / med[key] / 1e6
        print(f"  {label} {med[key] * 1e3:8.2f} ms/file  {mbs:8.1f} MB/s")
    print(f"  ratio cold/local (time per file) {med['cold'] / med['local']:.1f}")
    print(f"  ratio warm/local (time per file) {med['warm'] / med['local']:.1f}")
    print(
        f"  uproot, every branch: local {med['uproot_local'] * 1e3:.1f} ms, "
        f"cache warm {med['uproot_warm'] * 1e3:.1f} ms, "
        f"ratio warm/local {med['uproot_warm'] / med['uproot_local']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
