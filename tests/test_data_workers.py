"""Data on Dask workers and across token renewals, on the embedded default: real ``afhub up``
with its XRootD origin and XCache, dask-gateway (local backend), alice's real server, kernel
and workers; tokens living ``LIFETIME`` seconds.

- A cluster made with the stock ``dask_gateway.Gateway()`` (which the server only finds by
  listing clusters) has the token, the CA and the endpoints on every worker before its first
  task: the scheduler holds joining workers until the server registered the token plugin.
- A reader that opens and reads through the cache for more than three token lifetimes (and
  past the storage's 60 s authorization cache, where a connection kept from the first token
  starts failing) never fails, in the kernel and on both workers: each token generation gets
  its own XRootD connection (server_ext/xrootd_sessions.py).
"""

from __future__ import annotations

import pytest
from facility import example_values
from kernel_ws import Kernel

pytestmark = pytest.mark.integration

LIFETIME = 20
MARGIN = 6
# more than three lifetimes, and more than the scitokens plugin's 60 s cache of the first token
READ_SECONDS = 80
SAMPLE = "/public/samples/uproot-HZZ.root"


def _values() -> dict:
    values = example_values("local")
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["tokens"] = {"refresh_margin": MARGIN}
    values["culling"] = {"enabled": False}
    values["dask"]["server_check_interval"] = 1
    values["backend"]["local"] = {"account_prefix": "afdata-"}
    return values


@pytest.fixture(scope="module")
def fac(start_facility):
    import shutil

    if not shutil.which("xrootd"):
        pytest.fail("xrootd is not installed, but `make test` installs it (make system-deps)")
    facility = start_facility(_values(), name="data-workers")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    hs = fac.login_with_server("alice")
    assert hs.get("user/alice/lab").status_code == 200
    return hs, Kernel(hs)


STOCK_CLUSTER = """
import json, os
from dask_gateway import Gateway

def open_through_the_cache(path):
    import os, uproot
    env = {k: os.environ.get(k) for k in ("BEARER_TOKEN_FILE", "X509_CERT_FILE",
                                          "AFHUB_DATA_CACHE", "AFHUB_DATA_ORIGIN")}
    try:
        with uproot.open(os.environ["AFHUB_DATA_CACHE"] + "/" + path) as f:
            return {"entries": f["events"].num_entries, "env": env}
    except Exception as e:
        return {"error": repr(e)[:300], "env": env}

cluster = Gateway().new_cluster()
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2)
workers = sorted(client.scheduler_info()["workers"])
futures = [client.submit(open_through_the_cache, PATH, workers=[w], allow_other_workers=False,
                         pure=False) for w in workers]
print(json.dumps({"name": cluster.name, "results": client.gather(futures),
                  "kernel": {k: os.environ.get(k) for k in ("X509_CERT_FILE",
                             "AFHUB_DATA_CACHE", "AFHUB_DATA_ORIGIN")}}))
""".replace("PATH", repr(SAMPLE))


@pytest.fixture(scope="module")
def stock_cluster(alice):
    hs, k = alice
    return k.json(STOCK_CLUSTER, timeout=240)


def test_stock_client_workers_read_at_once(stock_cluster):
    results = stock_cluster["results"]
    assert len(results) == 2
    for r in results:
        assert r.get("entries") == 2421, r
        assert r["env"]["BEARER_TOKEN_FILE"], r
    # the contract reached the workers: the kernel's CA trust and endpoints
    for r in results:
        for name in ("X509_CERT_FILE", "AFHUB_DATA_CACHE", "AFHUB_DATA_ORIGIN"):
            assert r["env"][name] == stock_cluster["kernel"][name], name


READER = """
import hashlib, json, os, threading, time

def read_for(seconds, path):
    # open, read and close, again and again (every open a new one: the XRootD client's own
    # File, and uproot's XRootD source; fsspec's handle cache would reuse one open file);
    # note every failure and every token seen
    import os, time, hashlib, uproot
    from XRootD import client
    url = os.environ["AFHUB_DATA_CACHE"] + "/" + path
    t0, reads, failures, tokens = time.time(), 0, [], set()
    while time.time() - t0 < seconds:
        try:
            tokens.add(hashlib.sha256(open(os.environ["BEARER_TOKEN_FILE"], "rb").read())
                       .hexdigest()[:12])
            f = client.File()
            st, _ = f.open(url)
            assert st.ok, st.message
            st, head = f.read(0, 4096)
            assert st.ok and len(head) == 4096, st.message
            f.close()
            with uproot.open(url, handler=uproot.source.xrootd.XRootDSource) as f:
                px = f["events"]["Muon_Px"].array(library="np")
            assert len(px) == 2421
            reads += 1
        except Exception as e:
            failures.append([round(time.time() - t0, 1), repr(e)[:200]])
        time.sleep(0.5)
    return {"reads": reads, "failures": failures, "tokens": len(tokens)}

workers = sorted(client.scheduler_info()["workers"])
futures = [client.submit(read_for, SECONDS, PATH, workers=[w], allow_other_workers=False,
                         pure=False) for w in workers]
kernel = read_for(SECONDS, PATH)
print(json.dumps({"kernel": kernel, "workers": client.gather(futures)}))
"""


def test_reads_survive_token_renewals_in_the_kernel_and_on_workers(alice, stock_cluster):
    hs, k = alice
    code = READER.replace("SECONDS", str(READ_SECONDS)).replace("PATH", repr(SAMPLE))
    out = k.json(code, timeout=READ_SECONDS + 120)
    for where, r in [("kernel", out["kernel"])] + [("worker", w) for w in out["workers"]]:
        assert r["failures"] == [], (where, r)
        assert r["reads"] >= READ_SECONDS // 4, (where, r)  # up to two a second
        # the reads spanned at least three token generations
        assert r["tokens"] >= 3, (where, r)
    assert len(out["workers"]) == 2
