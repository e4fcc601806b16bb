"""One distribution, importable as afhub.<component>, with data files and entry points."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from afhub.hub_config.docs import render_values_doc
from kernels_helpers import purelib_of

REPO = Path(__file__).resolve().parent.parent


def test_values_doc_is_current():
    """docs/values.md is generated from the schema; regenerate with `make docs`."""
    assert (REPO / "docs" / "values.md").read_text() == render_values_doc()


def test_entry_points_resolve():
    spawners = {ep.name: ep for ep in entry_points(group="jupyterhub.spawners")}
    assert spawners["afhub-local"].load().__name__ == "LocalProfileSpawner"
    auths = {ep.name: ep for ep in entry_points(group="jupyterhub.authenticators")}
    assert auths["afhub"].load().__name__ == "AfhubOIDCAuthenticator"


LABEXT = "afhub-0.1.0.data/data/share/jupyter/labextensions/afhub-sidebar/"
#: what a clean clone does not have: the JS build's inputs are sources only
BUILD_OUTPUTS = {"node_modules", "lib", "dist", ".build-stamp", "coverage", ".yarn"}


def _clean_copy(src: Path, names: list[str]) -> set[str]:
    ignored = {n for n in names if n in (".git", ".venv", "node_modules", "build", ".afhub")}
    if Path(src).name == "labextension":
        ignored |= BUILD_OUTPUTS & set(names)
    return ignored


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds from a clean copy of the sources; the build runs the
    JupyterLab extension's JS build (jlpm install, jlpm build:prod) on the way."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: setuptools writes build/ into the tree it builds
    shutil.copytree(REPO, src, ignore=_clean_copy)
    assert not (src / "labextension" / "dist").exists()
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        timeout=900,
    )
    (whl,) = out.glob("afhub-*.whl")
    return whl


def test_wheel_contains_components(wheel):
    """`pip install .` (not editable) gets every component and its data files."""
    names = set(zipfile.ZipFile(wheel).namelist())
    components = ("hub_config", "spawner", "authenticator", "server_ext")
    for comp in components:  # every module and template of every component
        for f in (REPO / comp).rglob("*"):
            if (
                f.suffix in (".py", ".html", ".json", ".ipynb", ".css", ".mjs")
                and "__pycache__" not in f.parts
            ):
                assert f"afhub/{f.relative_to(REPO)}" in names, (
                    f"{f.relative_to(REPO)} missing from the wheel"
                )
    for required in (
        "afhub/hub_config/__init__.py",
        "afhub/hub_config/values.schema.json",
        "afhub/hub_config/proxy_guard.mjs",
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


def test_wheel_ships_the_prebuilt_labextension(wheel):
    """The JupyterLab extension is in the wheel, built: `pip install afhub` needs no Node."""
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    meta = json.loads(z.read(LABEXT + "package.json"))
    assert meta["name"] == "afhub-sidebar"
    entry = meta["jupyterlab"]["_build"]["load"]  # written by the builder, not in the sources
    assert LABEXT + entry in names
    assert json.loads(z.read(LABEXT + "install.json"))["packageName"] == "afhub"
    schema = json.loads(z.read(LABEXT + "schemas/afhub-sidebar/plugin.json"))
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"pollInterval", "sections"}
    bundle = b"".join(z.read(n) for n in names if n.startswith(LABEXT + "static/"))
    # the panel's code is in the bundle (not an empty build): its REST routes and sections
    for marker in (b"afhub", b"session", b"environments", b"Data access"):
        assert marker in bundle, marker
    assert not any(n.startswith(LABEXT) and "node_modules" in n for n in names)


def test_labextension_enabled_in_a_fresh_venv(wheel, tmp_path):
    """`jupyter labextension list` in a new venv with the wheel installed shows it enabled.

    The venv gets the wheel (no deps) and sees JupyterLab itself through a .pth file pointing
    at this test environment's site-packages (no network); its own prefix is what JupyterLab
    searches for share/jupyter/labextensions, so only the wheel can provide the extension."""
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    Path(purelib_of(py), "test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    assert (venv / "share/jupyter/labextensions/afhub-sidebar/package.json").is_file()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(HOME=str(tmp_path / "home"), JUPYTER_CONFIG_DIR=str(tmp_path / "home/.jupyter"))
    done = subprocess.run(
        [py, "-m", "jupyterlab.labextensions", "list"],  # what `jupyter labextension` runs
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    assert done.returncode == 0, text
    line = next((x for x in text.splitlines() if "afhub-sidebar" in x), None)
    assert line is not None, text
    assert re.search(r"afhub-sidebar v0\.1\.0 enabled\s+OK \(python, afhub\)", line), line
    assert str(venv) in text  # listed from the fresh venv's prefix
