"""One task per chunk (``server_ext/dask_fuse.py``): which tasks it groups, that a chunk's
intermediates are dropped after their last use, and, on the AGC processor of the sample
notebook (coffea, dask-awkward, hist.dask) over the shipped CMS ttbar file cut into chunks,
that the fused graph gives the same histograms and cutflow as the graph dask-awkward made, in
one process and on a real 2-worker distributed cluster, with one ``chunk-`` task per chunk.
Other graphs (dask.array, annotated layers) and the switch ``afhub.fuse-chunks: false`` leave
the graph as it was.

The real-graph part runs in the server environment (where coffea lives), as kernels do.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import weakref

import pytest
from afhub.server_ext.dask_fuse import _run_chunk, chunk_groups
from afhub.spawner.home_seed import SAMPLES_DIR
from facility import REPO
from kernels_helpers import server_python

# ---- which tasks belong to a chunk (pure) -----------------------------------------------------


def test_a_chunk_is_everything_that_depends_on_one_read_alone():
    deps = {
        "read-0": set(),
        "read-1": set(),
        "const": set(),
        "mask-0": {"read-0"},
        "sel-0": {"read-0", "mask-0", "const"},  # a diamond inside the chunk, and a constant
        "hist-0": {"sel-0"},
        "mask-1": {"read-1"},
        "hist-1": {"mask-1", "const"},
        "combine": {"hist-0", "hist-1"},  # two chunks: no chunk's
        "after": {"combine"},
        "plain": {"const"},  # no read at all
    }
    groups = chunk_groups(deps, {"read-0", "read-1"})
    assert set(groups) == {"read-0", "read-1"}
    assert set(groups["read-0"]) == {"read-0", "mask-0", "sel-0", "hist-0"}
    assert set(groups["read-1"]) == {"read-1", "mask-1", "hist-1"}
    for members in groups.values():  # in an order that runs every dependency first
        for i, k in enumerate(members):
            assert all(d not in members[i:] for d in deps[k]), members


def test_a_task_joining_two_chunks_ends_both():
    deps = {"r0": set(), "r1": set(), "a": {"r0", "r1"}, "b": {"a"}}
    assert chunk_groups(deps, {"r0", "r1"}) == {"r0": ["r0"], "r1": ["r1"]}


def test_a_chunk_drops_each_intermediate_after_its_last_use():
    from dask._task_spec import Task, TaskRef

    class Big:  # stands for an array of events
        pass

    alive = {}

    def make(name):
        obj = Big()
        alive[name] = weakref.ref(obj)
        return obj

    def gone(name, *_):
        gc.collect()
        return alive[name]() is None

    tasks = {
        "read": Task("read", make, "read"),
        "mask": Task("mask", lambda r: (r, make("mask"))[1], TaskRef("read")),
        "sel": Task("sel", lambda m: m, TaskRef("mask")),  # the read's last user: mask
        "check": Task("check", gone, "read", TaskRef("sel")),
        "check_mask": Task("check_mask", gone, "mask", TaskRef("check")),
    }
    order = ("read", "mask", "sel", "check", "check_mask")
    frees = {"mask": ("read",), "check": ("sel",)}
    out = _run_chunk(tasks, order, ("check", "check_mask"), frees, ())
    # the read was dropped once mask (its last user) had run; mask, never freed, is alive
    assert out == (True, False)


# ---- the AGC processor, fused and not (server environment) -------------------------------------

REAL = r"""
import json, os, sys, warnings
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)
import dask, dask.array as da
import dask_awkward as dak
from dask.base import collections_to_dsk, unpack_collections
from coffea.dataset_tools import DataGroupSpec, apply_to_fileset, preprocess
from coffea.nanoevents import NanoAODSchema
from afhub.server_ext import dask_fuse

ns = {}
exec("import awkward as ak\nimport hist.dask as hda\nfrom coffea import processor\n"
     + sys.stdin.read(), ns)
path, chunk = sys.argv[1], int(sys.argv[2])

def graph():
    fileset = DataGroupSpec.model_validate({"ttbar": {"files": {path: "Events"}}})
    runnable, _ = preprocess(fileset, step_size=chunk, scheduler="sync")
    return apply_to_fileset(ns["TtbarProcessor"](), runnable, schemaclass=NanoAODSchema)

def plain(out):
    out = out["ttbar"]
    return {k: ({s: int(n) for s, n in v.items()} if k == "cutflow" else v.values(flow=True).tolist())
            for k, v in out.items()}

def low_level(g):
    colls, _ = unpack_collections(g)
    return dict(collections_to_dsk(list(colls), optimize_graph=True))

def names(dsk):
    return sorted({(k[0] if isinstance(k, tuple) else k).rsplit("-", 1)[0] for k in dsk})

def unchanged(g):
    # fuse_chunks itself on g's optimized graph returns it as it is
    colls, _ = unpack_collections(g)
    seen = {}
    def spy(dsk, keys, **kw):
        seen["in"] = dsk
        seen["out"] = dask_fuse.fuse_chunks(dsk, keys)
        return dsk
    with dask.config.set(optimizations=[spy]):
        collections_to_dsk(list(colls), optimize_graph=True)
    return seen["out"] is seen["in"]

report = {}
stock = graph()
report["stock_tasks"] = len(low_level(stock))
(expected,) = dask.compute(stock, scheduler="sync")
report["expected"] = plain(expected)

dask_fuse.install()
dask_fuse.install()  # once is enough: not twice in the list
report["installed"] = sum(o is dask_fuse.fuse_chunks for o in dask.config.get("optimizations"))
fused = graph()
dsk = low_level(fused)
report["fused_tasks"] = len(dsk)
report["fused_names"] = names(dsk)
report["chunk_tasks"] = sum(1 for k in dsk if str(k[0] if isinstance(k, tuple) else k).startswith("chunk-from-uproot"))
(out,) = dask.compute(fused, scheduler="sync")
report["sync"] = plain(out)

from distributed import LocalCluster
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, cl.get_client() as client:
    (out,) = dask.compute(graph())
    report["distributed"] = plain(out)
    report["prefixes"] = sorted(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))

report["array_unchanged"] = unchanged(da.ones((100, 100), chunks=10).sum())
with dask.annotate(retries=2):
    annotated = graph()
report["annotated_unchanged"] = unchanged(annotated)
with dask.config.set({dask_fuse.CONFIG_KEY: False}):
    report["switched_off_unchanged"] = unchanged(graph())
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def real():
    python, _ = server_python()
    probe = subprocess.run([python, "-c", "import coffea, dask_awkward"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"{python} has no coffea (make server-env)")
    with open(os.path.join(SAMPLES_DIR, "agc-ttbar.ipynb"), encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    processor = "".join(next(c["source"] for c in cells if c.get("id") == "agc-processor"))
    data = REPO / "images" / "analysis" / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    r = subprocess.run(
        [python, "-c", REAL, str(data), "50"],  # 200 events: 4 chunks
        input=processor,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_fused_agc_graph_has_one_task_per_chunk(real):
    assert real["installed"] == 1
    assert real["chunk_tasks"] == 4
    # what ran per chunk (the read, selections, fills, per-chunk sums) is inside those tasks
    for name in ("from-uproot", "hist-on-block", "getitem", "bitwise-and"):
        assert name not in real["fused_names"], real["fused_names"]
    assert real["fused_tasks"] < real["stock_tasks"] / 2, (real["fused_tasks"], real["stock_tasks"])


def test_the_fused_agc_graph_gives_the_same_histograms_and_cutflow(real):
    expected = real["expected"]
    assert expected["cutflow"]["events"] == 200
    assert expected["cutflow"]["1 lepton, >= 2 jets"] > 0  # not empty by accident
    assert real["sync"] == expected
    assert real["distributed"] == expected


def test_a_distributed_cluster_runs_the_chunk_tasks(real):
    assert "chunk-from-uproot" in real["prefixes"], real["prefixes"]
    assert "from-uproot" not in real["prefixes"], real["prefixes"]


def test_other_graphs_annotations_and_the_switch_leave_the_graph_alone(real):
    assert real["array_unchanged"]
    assert real["annotated_unchanged"]
    assert real["switched_off_unchanged"]


# ---- workers: the garbage collector stops scanning the imports (server_ext/dask_worker_gc.py) --


def test_a_worker_freezes_its_heap_once_after_its_first_task():
    from afhub.server_ext.dask_worker_gc import FreezeAfterFirstTask

    plugin = FreezeAfterFirstTask()
    gc.unfreeze()
    try:
        plugin.transition("x", "waiting", "ready")
        plugin.transition("x", "executing", "error")
        assert gc.get_freeze_count() == 0  # no task done yet
        plugin.transition("x", "executing", "memory")
        frozen = gc.get_freeze_count()
        assert frozen > 0
        kept = [object() for _ in range(10)]  # noqa: F841  (alive when it would freeze again)
        plugin.transition("y", "executing", "memory")
        assert gc.get_freeze_count() == frozen  # once only
    finally:
        gc.unfreeze()
