"""``afhub up --ip/--port`` against values files meant for more than one host (issue 26): the
file's ``hub.ip``/``hub.port`` are what other hosts are told, so a flag changing them is refused
naming the key; files for this host alone (the embedded default) still take both flags."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from afhub.hub_config.addresses import up_override_problems
from facility import example_values


def _values(kind: str = "local", **hub) -> dict:
    return {"backend": {"type": kind}, "hub": hub}


@pytest.mark.parametrize(
    "values, ip, port, refused",
    [
        # one host: both flags override, as `make up` / `afhub up --port` always did
        (_values("local"), "0.0.0.0", 9000, []),
        (_values("local", ip="127.0.0.1", port=8000), "10.0.0.1", 1234, []),
        ({}, "127.0.0.2", 8001, []),
        # more than one host: a changed value is refused, naming the key
        (_values("slurm", node_address="hub.example.org"), None, 9000, ["hub.port"]),
        (_values("slurm", node_address="hub.example.org"), "10.0.0.1", None, ["hub.ip"]),
        (_values("slurm", ip="0.0.0.0", port=8443), "127.0.0.1", 8000, ["hub.ip", "hub.port"]),
        (_values("htcondor"), "0.0.0.0", None, ["hub.ip"]),
        (_values("kubernetes"), None, 80, ["hub.port"]),
        (_values("local", node_address="hub.example.org"), "0.0.0.0", None, ["hub.ip"]),
        # ... while a flag repeating the file's value (or its default) changes nothing
        (_values("slurm", ip="0.0.0.0", port=8443), "0.0.0.0", 8443, []),
        (_values("slurm"), "127.0.0.1", 8000, []),
        (_values("kubernetes"), None, None, []),
    ],
)
def test_override_rule(values, ip, port, refused):
    problems = up_override_problems(values, ip, port)
    assert [p.path for p in problems] == refused
    for p in problems:
        flag = "--ip" if p.path == "hub.ip" else "--port"
        assert flag in p.message and "instead" in p.message


def test_afhub_up_refuses_before_starting_anything(tmp_path):
    """The shipped Slurm example with ``--port``: exit 2, one line naming hub.port, no
    traceback, no data directory (nothing was started)."""
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(example_values("slurm")))
    data = tmp_path / "data"
    r = subprocess.run(
        [sys.executable, "-m", "afhub.hub_config", "up", "-f", str(path),
         "--port", "9999", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert r.stderr.startswith("hub.port: ") and "Traceback" not in r.stderr, r.stderr
    assert "--port 9999" in r.stderr and "hub.node_address" in r.stderr
    assert not data.exists()
