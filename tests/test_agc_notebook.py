"""The second sample notebook, ``agc-ttbar.ipynb``, end to end on the embedded default.

A real ``afhub up`` (hub, demo provider, XRootD origin and XCache, Dask Gateway); ``afhub data
fileset`` puts a small AGC ttbar fileset on its origin (4 files of 5,000 events: the notebook
reads ``AFHUB_AGC_*`` for sizes, so the test stays quick on 2 cores). alice finds the notebook
in her home and every code cell runs, in order, on a kernel of her server driven over its
websocket through the hub's proxy as JupyterLab drives it: a 2-worker cluster made with
``new_cluster()`` reads the files over ``root://`` through the cache with her delivered token.

Then the same processor (the notebook's own cell) runs in one process of the analysis
environment, on the same files read from the origin's disk, and every histogram must equal the
notebook's bin by bin; the workers' analysis packages must be the kernel's, which are the lock's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from afhub.spawner.home_seed import SAMPLES_DIR
from afhub.spawner.local import server_environment
from facility import REPO, env_flag, example_values
from kernel_ws import Kernel

pytestmark = pytest.mark.integration

NOTEBOOK = "agc-ttbar.ipynb"
EVENTS, PER_FILE, CHUNKSIZE, WORKERS = 20_000, 5_000, 5_000, 2
HISTOGRAMS = ("njet", "nbtag", "jet_pt", "lepton_pt", "ht", "mbjj")

LOCAL_RUN = r"""
import json, sys
import warnings
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)
from coffea import processor
from coffea.nanoevents import NanoAODSchema
namespace = {}
exec("import awkward as ak\nimport hist\nfrom coffea import processor\n" + sys.stdin.read(), namespace)
files = sys.argv[1:]
run = processor.Runner(
    executor=processor.IterativeExecutor(status=False),
    pre_executor=processor.IterativeExecutor(status=False),
    schema=NanoAODSchema,
    chunksize=CHUNKSIZE,
    savemetrics=True,
)
fileset = {"ttbar": {"files": {f: "Events" for f in files}}}
out = run.run(fileset, namespace["TtbarProcessor"](), treename="Events")["out"]
print(json.dumps({k: (v if k == "cutflow" else v.values().tolist()) for k, v in out.items()}))
""".replace("CHUNKSIZE", str(CHUNKSIZE))


def cells() -> dict[str, str]:
    with open(os.path.join(SAMPLES_DIR, NOTEBOOK), encoding="utf-8") as f:
        nb = json.load(f)
    return {c["id"]: "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"}


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


def test_agc_notebook_on_two_workers_equals_one_local_process(fac, analysis_python):
    storage = fac.values["data"]["embedded_root"]
    on_disk = os.path.join(storage, "export", "public", "samples", "agc-ttbar")
    with open(os.path.join(on_disk, "fileset.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    names = [entry["name"] for entry in manifest["files"]]
    assert manifest["events"] == EVENTS and len(names) == EVENTS // PER_FILE

    hs = fac.login_with_server("alice")
    code = cells()
    try:
        st = (fac.home("alice") / NOTEBOOK).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (fac.uid("alice"), 0o644)
        kernel = Kernel(hs)
        kernel.run(
            "import os\nos.environ.update("
            f"AFHUB_AGC_WORKERS='{WORKERS}', AFHUB_AGC_CHUNKSIZE='{CHUNKSIZE}')"
        )
        printed = {}
        for cell_id, source in code.items():
            if cell_id != "agc-shutdown":  # after the checks below
                printed[cell_id] = kernel.run(source, timeout=600)
        assert f"{EVENTS:,} events in" in printed["agc-run"], printed["agc-run"]
        assert "signal strength mu = 1.000" in printed["agc-fit"], printed["agc-fit"]
        seen = kernel.json(
            "import json\nprint(json.dumps({'hists': {k: out[k].values().tolist() for k in "
            + repr(HISTOGRAMS)
            + "}, 'cutflow': out['cutflow'], 'versions': versions, 'files': sorted(fileset"
            "['ttbar']['files']), 'workers': len(client.scheduler_info()['workers']),"
            " 'cache': os.environ['AFHUB_DATA_CACHE']}))"
        )
        kernel.run(code["agc-shutdown"])
    finally:
        hs.stop_server()

    # read over root:// through the cache, by a cluster of WORKERS workers
    assert seen["files"] == [f"{seen['cache']}//public/samples/agc-ttbar/{n}" for n in names]
    assert seen["cache"].startswith("root://") and seen["workers"] == WORKERS
    cached = os.path.join(storage, "cache", "public", "samples", "agc-ttbar")
    assert sorted(n for n in os.listdir(cached) if n.endswith(".root")) == names

    # the workers run the kernel's analysis packages, which are the lock's
    kernel_versions = seen["versions"]["notebook"]
    assert len(seen["versions"]["workers"]) == WORKERS
    for worker, versions in seen["versions"]["workers"].items():
        assert versions == kernel_versions, worker
    for name in ("coffea", "awkward", "uproot"):
        assert kernel_versions[name] == locked_version(name)

    # the same processor in one local process on the same events, bin by bin
    local = subprocess.run(
        [analysis_python, "-c", LOCAL_RUN] + [os.path.join(on_disk, n) for n in names],
        input=code["agc-processor"],
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
