"""The AGC ttbar fileset's layout (hub_config/fileset.py): pure rules, no files."""

from __future__ import annotations

import pytest
from afhub.hub_config.fileset import kept_branch, manifest, plan


@pytest.mark.parametrize(
    "branch, kept",
    [
        ("Jet_pt", True),
        ("Jet_btagCSVV2", True),
        ("Electron_cutBased", True),
        ("Muon_pfRelIso04_all", True),
        ("nJet", False),  # uproot writes the counters itself
        ("event", True),
        ("MET_pt", True),
        ("Jet_muonIdx1", True),  # an index into a copied collection
        ("Electron_jetIdx", True),
        ("Jet_genJetIdx", False),  # into a collection left out
        ("Muon_fsrPhotonIdx", False),
        ("Electron_genPartIdx", False),
        ("Electron_genPartFlav", True),
        ("Photon_pt", False),
        ("HLT_IsoMu24", False),
        ("Jet", False),
    ],
)
def test_kept_branches(branch, kept):
    assert kept_branch(branch) is kept


@pytest.mark.parametrize(
    "events, per_file, files",
    [
        (1_000_000, 100_000, [(f"ttbar-100000-{i:03d}.root", 100_000) for i in range(10)]),
        (20_000, 5_000, [(f"ttbar-5000-{i:03d}.root", 5_000) for i in range(4)]),
        # whole copies of the 200-event source per file, whole files in all
        (250, 300, [("ttbar-400-000.root", 400)]),
        (1_000_001, 100_000, [(f"ttbar-100000-{i:03d}.root", 100_000) for i in range(11)]),
    ],
)
def test_plan(events, per_file, files):
    assert plan(events, per_file, 200) == files


@pytest.mark.parametrize("events, per_file", [(0, 100), (100, 0), (-1, 100)])
def test_plan_refuses_empty_sizes(events, per_file):
    with pytest.raises(ValueError, match="must be positive"):
        plan(events, per_file, 200)


def test_manifest_counts_every_file():
    m = manifest(files=plan(20_000, 5_000, 200), source_sha256="ab")
    assert m["events"] == 20_000 and [f["events"] for f in m["files"]] == [5_000] * 4
    assert (m["tree"], m["source_sha256"]) == ("Events", "ab")
