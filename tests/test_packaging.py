"""One distribution, importable as afhub.<component>, with data files and entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

from afhub.hub_config.docs import render_values_doc

REPO = Path(__file__).resolve().parent.parent


def test_values_doc_is_current():
    """docs/values.md is generated from the schema; regenerate with `make docs`."""
    assert (REPO / "docs" / "values.md").read_text() == render_values_doc()


def test_entry_points_resolve():
    spawners = {ep.name: ep for ep in entry_points(group="jupyterhub.spawners")}
    assert spawners["afhub-local"].load().__name__ == "LocalProfileSpawner"
    auths = {ep.name: ep for ep in entry_points(group="jupyterhub.authenticators")}
    assert auths["afhub"].load().__name__ == "AfhubOIDCAuthenticator"


def test_wheel_contains_components(tmp_path):
    """`pip install .` (not editable) gets every component and its data files."""
    # build from a copy: setuptools writes build/ into the tree it builds
    src = tmp_path / "src"
    shutil.copytree(
        REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "build", ".afhub")
    )
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("afhub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    components = ("hub_config", "spawner", "authenticator", "server_ext")
    for comp in components:  # every module and template of every component
        for f in (REPO / comp).rglob("*"):
            if f.suffix in (".py", ".html", ".json") and "__pycache__" not in f.parts:
                assert f"afhub/{f.relative_to(REPO)}" in names, (
                    f"{f.relative_to(REPO)} missing from the wheel"
                )
    for required in (
        "afhub/hub_config/__init__.py",
        "afhub/hub_config/values.schema.json",
        "afhub/hub_config/examples/local.yaml",
        "afhub/hub_config/schemas/z2jh-values.schema.yaml",
        "afhub/hub_config/schemas/z2jh-values.yaml",
        "afhub/hub_config/schemas/dask-gateway-values.schema.yaml",
        "afhub/hub_config/schemas/SOURCE.md",
        "afhub/spawner/__init__.py",
        "afhub/authenticator/oidc.py",
        "afhub/server_ext/__init__.py",
    ):
        assert required in names, f"{required} missing from the wheel"
    assert "afhub-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/afhub.json" in names
    assert not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "afhub = afhub.hub_config.cli:main" in text
