"""Benchmark: the AGC ttbar processor (``spawner/samples/agc-ttbar.ipynb``'s own cell) on the
same 1M+ events three ways, same run:

    python bench/analysis.py [--events 1000000] [--per-file 100000] [--workers N] [--rounds 3]
                             [--smoke]

``--workers`` defaults to one less than the machine's cores (at least 1): a worker core is
measured as a facility has it, to itself, with a core left for the scheduler, the kernel, the
XCache and the gateway's proxy.

- (a) the peer, what a physicist does on a laptop: a dask ``LocalCluster`` of ``--workers``
  single-threaded worker processes reading the files from local disk;
- (b) afhub: alice's gateway cluster from ``new_cluster(workers=N)`` in a kernel of her server
  on the embedded default facility, reading the same files over ``root://`` through the XCache
  with her delivered token, the cache warm (a first run, not timed, fills it and warms the
  workers as (a)'s first run does);
- (c) one process (dask's synchronous scheduler) on the local files: the per-core rate.

It also prints how much of each time is ``preprocess`` (reading the files' metadata to cut
them into chunks) and the per-core ratios of the analysis proper.

All three run coffea's dask mode as the notebook does (``preprocess`` into chunks of the same
size, ``apply_to_fileset`` with the same processor: dask-awkward arrays, hist.dask histograms,
then ``dask.compute``), timed from ``preprocess`` to the histograms in hand; (c) computes with
dask's synchronous scheduler. Each round runs (a), (b), (c) in turn and the median of the rounds is printed, with the ratios time (b) /
time (a) (goal <= 1.15) and (b)'s events per second per worker core / (c)'s (goal >= 0.80).
``--smoke`` (``tests/test_bench_smoke.py``): 4 files of 5,000 events, 1 round; its figures mean
nothing. Not a test. The files are made by ``afhub data fileset`` on the facility's origin.
Figures: docs/dask.md "How fast". With as many workers as the machine has cores, (b)'s
per-core figure also pays for the scheduler, the kernel, the XCache and the gateway's proxy,
which then run on the workers' cores (a note says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from common import shared_tempdir, smoke_arg, use_checkout

use_checkout()
from afhub.spawner.home_seed import SAMPLES_DIR  # noqa: E402
from afhub.spawner.local import server_environment  # noqa: E402
from facility import Facility, example_values  # noqa: E402
from kernel_ws import Kernel  # noqa: E402

# one script for (a) and (c), run by the analysis environment's Python (coffea lives there):
# argv: mode (local-cluster | single), workers, chunksize, rounds, files...; the processor's
# source on stdin; prints one JSON line {"seconds": [...], "events": N}
LOCAL = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)
import dask
from coffea.dataset_tools import DataGroupSpec, apply_to_fileset, preprocess
from coffea.nanoevents import NanoAODSchema

def main():
    mode, workers, chunksize, rounds = sys.argv[1], *map(int, sys.argv[2:5])
    files = sys.argv[5:]
    ns = {}
    exec(IMPORTS + sys.stdin.read(), ns)
    fileset = DataGroupSpec.model_validate({"ttbar": {"files": {f: "Events" for f in files}}})

    def timed(scheduler=None):
        t = time.perf_counter()
        runnable, _ = preprocess(fileset, step_size=chunksize, scheduler=scheduler)
        pre = time.perf_counter() - t
        graph = apply_to_fileset(ns["TtbarProcessor"](), runnable, schemaclass=NanoAODSchema)
        (out,) = dask.compute(graph, scheduler=scheduler)
        return time.perf_counter() - t, int(out["ttbar"]["cutflow"]["events"]), pre

    if mode == "single":
        timed("sync")  # imports, first reads: as the clusters' first runs
        runs = [timed("sync") for _ in range(rounds)]
    else:
        from distributed import LocalCluster
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, cluster.get_client():
            timed()
            runs = [timed() for _ in range(rounds)]
    print(json.dumps({"seconds": [r[0] for r in runs], "events": runs[-1][1],
                      "preprocess": [r[2] for r in runs]}))

if __name__ == "__main__":
    main()
"""

# what the notebook imports before its processor cell (the names the cell uses)
IMPORTS = "import awkward as ak\nimport hist.dask as hda\nfrom coffea import processor\n"
LOCAL = LOCAL.replace("IMPORTS", repr(IMPORTS))

# (b), in alice's kernel: the notebook's processor is defined there first
GATEWAY_SETUP = """
import json, time, warnings
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)
import dask
from coffea.dataset_tools import DataGroupSpec, apply_to_fileset, preprocess
from coffea.nanoevents import NanoAODSchema
from afhub.server_ext.dask import new_cluster
cluster = new_cluster(workers={workers})
client = cluster.get_client()
client.wait_for_workers({workers})
fileset = DataGroupSpec.model_validate({{"ttbar": {{"files": {{u: "Events" for u in {urls!r}}}}}}})

def timed():
    t = time.perf_counter()
    runnable, _ = preprocess(fileset, step_size={chunksize})
    pre = time.perf_counter() - t
    graph = apply_to_fileset(TtbarProcessor(), runnable, schemaclass=NanoAODSchema)
    (out,) = dask.compute(graph)
    return time.perf_counter() - t, int(out["ttbar"]["cutflow"]["events"]), pre

timed()  # fills the cache, warms the workers
"""


def processor_source() -> str:
    with open(os.path.join(SAMPLES_DIR, "agc-ttbar.ipynb"), encoding="utf-8") as f:
        nb = json.load(f)
    return "".join(next(c["source"] for c in nb["cells"] if c.get("id") == "agc-processor"))


def run_local(python: str, mode: str, workers: int, chunksize: int, files: list[str]) -> dict:
    r = subprocess.run(
        [python, "-c", LOCAL, mode, str(workers), str(chunksize), "1", *files],
        input=processor_source(),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-file", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--chunksize", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    smoke_arg(ap)
    args = ap.parse_args()
    if args.smoke:
        args.events, args.per_file, args.chunksize, args.rounds = 20_000, 5_000, 5_000, 1
    python = os.path.join(server_environment(), "bin", "python")
    workdir = shared_tempdir("afhub-bench-analysis-")
    fac = Facility(example_values("local"), workdir)
    fac.start(timeout=120)
    try:
        subprocess.run(
            [sys.executable, "-m", "afhub.hub_config", "data", "fileset", "-f"]
            + [str(fac.values_path), "--data-dir", str(fac.data_dir)]
            + ["--events", str(args.events), "--per-file", str(args.per_file)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        storage = fac.values["data"]["embedded_root"]
        on_disk = os.path.join(storage, "export", "public", "samples", "agc-ttbar")
        with open(os.path.join(on_disk, "fileset.json"), encoding="utf-8") as f:
            names = [e["name"] for e in json.load(f)["files"]]
        files = [os.path.join(on_disk, n) for n in names]

        hs = fac.login_with_server("alice")
        kernel = Kernel(hs)
        cache = kernel.json("import os, json; print(json.dumps(os.environ['AFHUB_DATA_CACHE']))")
        urls = [f"{cache}//public/samples/agc-ttbar/{n}" for n in names]
        kernel.run(IMPORTS + processor_source(), timeout=300)
        kernel.run(
            GATEWAY_SETUP.format(workers=args.workers, urls=urls, chunksize=args.chunksize),
            timeout=3600,
        )
        a, b, c = [], [], []
        pre = {"a": [], "b": [], "c": []}  # of which preprocess (the chunking: file metadata)
        events = None
        for _ in range(args.rounds):
            la = run_local(python, "local-cluster", args.workers, args.chunksize, files)
            a.append(la["seconds"][0])
            pre["a"].append(la["preprocess"][0])
            secs, events, p = kernel.json("print(json.dumps(timed()))", timeout=3600)
            assert events == la["events"], (events, la["events"])
            b.append(secs)
            pre["b"].append(p)
            lc = run_local(python, "single", 1, args.chunksize, files)
            c.append(lc["seconds"][0])
            pre["c"].append(lc["preprocess"][0])
        kernel.run("cluster.shutdown()", timeout=120)
        hs.stop_server()
    finally:
        fac.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    ta, tb, tc = (statistics.median(x) for x in (a, b, c))
    per_core_b = events / tb / args.workers
    per_core_c = events / tc
    print(
        f"{events:,} events in {len(files)} files, {args.workers} workers, chunks of "
        f"{args.chunksize:,}, median of {args.rounds} round(s)"
    )
    cores = os.cpu_count() or 1
    if args.workers >= cores:  # the per-core figure then counts the facility's own CPU too
        print(
            f"note: {args.workers} workers on {cores} cores: the workers share them with the "
            "scheduler, the kernel, the cache and the proxy (--workers below the core count "
            "leaves those a core)"
        )
    print(
        f"(a) LocalCluster, local files:       {ta:7.2f} s  {events / ta:10,.0f} events/s  "
        f"(rounds {', '.join(f'{x:.2f}' for x in a)})"
    )
    print(
        f"(b) afhub gateway, cache + token:    {tb:7.2f} s  {events / tb:10,.0f} events/s  "
        f"(rounds {', '.join(f'{x:.2f}' for x in b)})"
    )
    print(
        f"(c) one process, local files:        {tc:7.2f} s  {per_core_c:10,.0f} events/s  "
        f"(rounds {', '.join(f'{x:.2f}' for x in c)})"
    )
    print(f"ratio time (b)/(a): {tb / ta:.2f}x (goal <= 1.15)")
    print(f"ratio per-core rate (b)/(c): {per_core_b / per_core_c:.2f} (goal >= 0.80)")
    # where the time goes: preprocess (file metadata, chunking) and the analysis proper
    ana = {k: statistics.median(t - p for t, p in zip(x, pre[k], strict=True))
           for k, x in (("a", a), ("b", b), ("c", c))}  # fmt: skip
    print(
        "of which preprocess (median): "
        + ", ".join(f"({k}) {statistics.median(v):.2f} s" for k, v in pre.items())
    )
    print(
        f"analysis alone (apply + compute): (a) {ana['a']:.2f} s, (b) {ana['b']:.2f} s, "
        f"(c) {ana['c']:.2f} s; per-core rate (b)/(c): "
        f"{events / ana['b'] / args.workers / (events / ana['c']):.2f}, "
        f"(a)/(c): {events / ana['a'] / args.workers / (events / ana['c']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
