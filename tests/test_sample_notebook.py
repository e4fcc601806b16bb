"""The embedded default runs real HEP code: the sample notebook through a user's kernel.

A demo user logs in to the embedded default (``hub_config/examples/local.yaml``: real hub, proxy
and demo IdP), starts the default profile, finds ``hzz-dimuon.ipynb`` in their home, and every
code cell of it runs on a kernel of their server (the analysis environment `make server-env`
builds). The histogram it fills is then compared bin by bin with one this test computes on its
own: the same ROOT file read into plain per-event NumPy arrays (no awkward, vector or hist) and
the pair mass summed and binned by hand, in the same environment's interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from afhub.spawner.home_seed import SAMPLES_DIR
from afhub.spawner.local import server_environment
from facility import env_flag
from kernel_ws import Kernel

pytestmark = pytest.mark.integration

SAMPLE = "hzz-dimuon.ipynb"

# The test's own computation: explicit loops, no awkward/vector/hist.
INDEPENDENT = r"""
import json, math
import uproot
from skhep_testdata import data_path
t = uproot.open(data_path("uproot-HZZ.root"))["events"]
b = t.arrays(["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge"], library="np")
counts = [0] * 60
pairs = 0
for px, py, pz, e, q in zip(b["Muon_Px"], b["Muon_Py"], b["Muon_Pz"], b["Muon_E"], b["Muon_Charge"]):
    if len(px) != 2 or q[0] == q[1]:
        continue
    pairs += 1
    E, X, Y, Z = e[0] + e[1], px[0] + px[1], py[0] + py[1], pz[0] + pz[1]
    m = math.sqrt(max(E * E - X * X - Y * Y - Z * Z, 0.0))
    if 0.0 <= m < 120.0:
        counts[int(m // 2.0)] += 1
print(json.dumps({"pairs": pairs, "counts": counts}))
"""


@pytest.fixture(scope="module")
def analysis_python():
    python = os.path.join(server_environment(), "bin", "python")
    probe = subprocess.run([python, "-c", "import uproot, awkward, hist, vector, skhep_testdata"])
    if probe.returncode != 0:
        msg = f"{python} is not the analysis environment (run `make server-env`)"
        if env_flag("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return python


def _code_cells() -> list[str]:
    with open(os.path.join(SAMPLES_DIR, SAMPLE), encoding="utf-8") as f:
        nb = json.load(f)
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_sample_notebook_runs_on_a_users_kernel(facility, analysis_python):
    s = facility.login("bob")
    r = s.spawn()
    assert r.status_code in (201, 202), r.text
    s.wait_ready()
    try:
        # the sample is in the new user's home, as shipped, owned by the account the server
        # runs as (a per-user system account when the hub is root)
        st = (facility.home("bob") / SAMPLE).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (facility.uid("bob"), 0o644)
        r = s.server_api("GET", f"api/contents/{SAMPLE}")
        assert r.status_code == 200, r.text
        assert [c["source"] for c in r.json()["content"]["cells"] if c["cell_type"] == "code"] == (
            _code_cells()
        )

        kernel = Kernel(s)  # the server's default kernel, over its websocket through the proxy
        prefix = os.path.dirname(os.path.dirname(analysis_python))
        out = kernel.run("import sys, uproot, awkward, hist\nprint(sys.prefix)")
        assert out.strip() in (prefix, os.path.realpath(prefix))  # the analysis environment
        for code in _code_cells():
            printed = kernel.run(code)
        assert "the fullest bin is at 91 GeV (the Z)" in printed
        notebook_counts = kernel.json(
            "import json; print(json.dumps(h.values().astype(int).tolist()))"
        )
    finally:
        s.stop_server()

    own = json.loads(
        subprocess.run(
            [analysis_python, "-c", INDEPENDENT], capture_output=True, text=True, check=True
        ).stdout
    )
    assert own["pairs"] > 1000  # the selection is not empty by accident
    assert notebook_counts == own["counts"]
