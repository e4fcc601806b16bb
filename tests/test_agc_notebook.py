"""The second sample notebook, ``agc-ttbar.ipynb``, end to end on the embedded default.

A real ``afhub up`` (hub, demo provider, XRootD origin and XCache, Dask Gateway); ``afhub data
fileset`` puts a small AGC ttbar fileset on its origin (4 files of 5,000 events: the notebook
reads ``AFHUB_AGC_*`` for sizes, so the test stays quick on 2 cores). alice finds the notebook
in her home and nbclient runs it headless, every cell in order, on a kernel of her own server
(started, driven and shut down through the hub's proxy with her API token: tests/
remote_notebook.py): coffea's dask mode (dask-awkward, hist.dask) computed on a 2-worker cluster
made with ``new_cluster()``, reading the files over ``root://`` through the cache with her
delivered token, under distributed's progress bar, then the pyhf fit.

Then the same processor (the notebook's own cell) runs in one process of the analysis
environment (dask's synchronous scheduler), on the same files read from the origin's disk, and
every histogram must equal the notebook's bin by bin; the workers' coffea and dask-awkward must
be the kernel's, which are the lock's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from afhub.spawner.home_seed import SAMPLES_DIR
from afhub.spawner.local import server_environment
from facility import REPO, env_flag, example_values
from remote_notebook import cell_text, execute_on_server

pytestmark = pytest.mark.integration

NOTEBOOK = "agc-ttbar.ipynb"
EVENTS, PER_FILE, CHUNKSIZE, WORKERS = 20_000, 5_000, 5_000, 2
HISTOGRAMS = ("njet", "nbtag", "jet_pt", "lepton_pt", "ht", "mbjj")
WIDGET = "application/vnd.jupyter.widget-view+json"

# the test's parameters, a first cell (as papermill injects them)
PARAMETERS = f"import os\nos.environ.update(AFHUB_AGC_WORKERS='{WORKERS}', AFHUB_AGC_CHUNKSIZE='{CHUNKSIZE}')"
# what the kernel computed, a cell before the notebook's last (which stops the cluster)
PROBE = (
    "import json\nprint(json.dumps({'hists': {k: out[k].values().tolist() for k in "
    + repr(HISTOGRAMS)
    + "}, 'cutflow': cutflow, 'versions': versions, 'files': sorted(files),"
    " 'workers': len(client.scheduler_info()['workers']), 'cache': os.environ['AFHUB_DATA_CACHE'],"
    " 'prefixes': sorted(client.run_on_scheduler("
    "lambda dask_scheduler: list(dask_scheduler.task_prefixes))),"
    " 'frozen': list(client.run(__import__('gc').get_freeze_count).values())}))"
)

LOCAL_RUN = r"""
import json, sys
import warnings
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)
import dask
from coffea.dataset_tools import DataGroupSpec, apply_to_fileset, preprocess
from coffea.nanoevents import NanoAODSchema
namespace = {}
exec("import awkward as ak\nimport hist.dask as hda\nfrom coffea import processor\n" + sys.stdin.read(), namespace)
files = sys.argv[1:]
fileset = DataGroupSpec.model_validate({"ttbar": {"files": {f: "Events" for f in files}}})
runnable, _ = preprocess(fileset, step_size=CHUNKSIZE, scheduler="sync")
graph = apply_to_fileset(namespace["TtbarProcessor"](), runnable, schemaclass=NanoAODSchema)
(out,) = dask.compute(graph, scheduler="sync")
out = out["ttbar"]
print(json.dumps({k: ({s: int(n) for s, n in v.items()} if k == "cutflow" else v.values().tolist())
                  for k, v in out.items()}))
""".replace("CHUNKSIZE", str(CHUNKSIZE))


def notebook() -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(SAMPLES_DIR, NOTEBOOK), as_version=4)


def locked_version(name: str) -> str:
    text = (REPO / "images" / "analysis" / "requirements.txt").read_text()
    return re.search(rf"^{name}==(\S+)", text, re.M).group(1)


@pytest.fixture(scope="module")
def analysis_python():
    python = os.path.join(server_environment(), "bin", "python")
    probe = subprocess.run([python, "-c", "import coffea, pyhf, uproot"], capture_output=True)
    if probe.returncode != 0:
        msg = f"{python} has no coffea (run `make server-env`)"
        if env_flag("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return python


@pytest.fixture(scope="module")
def fac(tmp_path_factory, analysis_python):
    from facility import Facility

    facility = Facility(example_values("local"), tmp_path_factory.mktemp("agc"))
    facility.start(timeout=120)
    try:
        placed = subprocess.run(
            [sys.executable, "-m", "afhub.hub_config", "data", "fileset"]
            + ["-f", str(facility.values_path), "--data-dir", str(facility.data_dir)]
            + ["--events", str(EVENTS), "--per-file", str(PER_FILE)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert placed.returncode == 0, placed.stderr
        assert "/public/samples/agc-ttbar" in placed.stdout
        yield facility
    finally:
        facility.stop()


def test_agc_notebook_run_by_nbclient_on_two_workers_equals_one_local_process(fac, analysis_python):
    storage = fac.values["data"]["embedded_root"]
    on_disk = os.path.join(storage, "export", "public", "samples", "agc-ttbar")
    with open(os.path.join(on_disk, "fileset.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    names = [entry["name"] for entry in manifest["files"]]
    assert manifest["events"] == EVENTS and len(names) == EVENTS // PER_FILE

    hs = fac.login_with_server("alice")
    nb = notebook()
    processor_cell = next(c.source for c in nb.cells if c.get("id") == "agc-processor")
    last = next(i for i, c in enumerate(nb.cells) if c.get("id") == "agc-shutdown")
    nb.cells.insert(last, nbformat.v4.new_code_cell(PROBE, id="test-probe"))
    nb.cells.insert(0, nbformat.v4.new_code_cell(PARAMETERS, id="test-parameters"))
    try:
        st = (fac.home("alice") / NOTEBOOK).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (fac.uid("alice"), 0o644)
        execute_on_server(hs, nb, timeout=600)
    finally:
        hs.stop_server()
    cells = {c.get("id"): c for c in nb.cells}
    printed = {cid: cell_text(c) for cid, c in cells.items() if c.cell_type == "code"}
    assert f"{EVENTS:,} events in" in printed["agc-run"], printed["agc-run"]
    assert "signal strength mu = 1.000" in printed["agc-fit"], printed["agc-fit"]
    # distributed's progress bar: a widget shown while the cluster computed
    shown = [(o.output_type, sorted(o.get("data", {}))) for o in cells["agc-run"].outputs]
    assert any(WIDGET in data for _, data in shown), shown
    seen = json.loads(printed["test-probe"].strip().splitlines()[-1])

    # read over root:// through the cache, by a cluster of WORKERS workers
    assert seen["files"] == [f"{seen['cache']}//public/samples/agc-ttbar/{n}" for n in names]
    assert seen["cache"].startswith("root://") and seen["workers"] == WORKERS
    cached = os.path.join(storage, "cache", "public", "samples", "agc-ttbar")
    assert sorted(n for n in os.listdir(cached) if n.endswith(".root")) == names

    # one task per chunk on the cluster (server_ext/dask_fuse.py, installed by new_cluster()):
    # the reads, selections and fills ran inside the chunk tasks
    assert "chunk-from-uproot" in seen["prefixes"], seen["prefixes"]
    assert not {"from-uproot", "hist-on-block"} & set(seen["prefixes"]), seen["prefixes"]
    # and every worker froze its imports out of the garbage collector's scans (dask_worker_gc)
    assert len(seen["frozen"]) == WORKERS and all(n > 0 for n in seen["frozen"]), seen["frozen"]

    # the workers run the kernel's analysis packages, which are the lock's
    kernel_versions = seen["versions"]["notebook"]
    assert len(seen["versions"]["workers"]) == WORKERS
    for worker, versions in seen["versions"]["workers"].items():
        assert versions == kernel_versions, worker
    for name in ("coffea", "dask-awkward", "dask-histogram", "dask", "awkward", "uproot"):
        assert kernel_versions[name] == locked_version(name), name

    # the same processor in one local process on the same events, bin by bin
    local = subprocess.run(
        [analysis_python, "-c", LOCAL_RUN] + [os.path.join(on_disk, n) for n in names],
        input=processor_cell,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    expected = json.loads(local.stdout.strip().splitlines()[-1])
    assert expected["cutflow"]["events"] == EVENTS
    assert expected["cutflow"]["1 lepton, >= 3 jets, >= 1 b-tag"] > 0  # not empty by accident
    assert seen["cutflow"] == expected["cutflow"]
    for name in HISTOGRAMS:
        assert seen["hists"][name] == expected[name], name
