"""PEP 517 build backend of afhub: setuptools, after building the JupyterLab extension.

pyproject.toml names this module (``backend-path = ["labextension"]``). Every hook is
setuptools' own; ``build_wheel``, ``build_editable`` and ``build_sdist`` first make sure the
prebuilt extension in ``labextension/dist/`` matches its sources (``jlpm install`` and
``jlpm build:prod``), and pyproject's ``data-files`` then ship it to
``share/jupyter/labextensions/afhub-sidebar/``. So ``pip install afhub`` from a wheel needs no
Node, and a build from source always ships the extension of the sources it was built from.

Freshness: a digest of the extension's sources (``package.json``, ``yarn.lock``, ``src/``,
``style/``, ``schema/``, ...) is written to ``labextension/.build-stamp`` after a successful
build; an unchanged digest and an existing ``dist/`` skip the JS build (and the ``jupyterlab``
build requirement that provides ``jlpm``). A tree without the sources (an sdist made without
them) uses ``dist/`` as it is. No Node and no prebuilt extension: a clear error, no wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (hooks served unchanged)
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

EXT = Path(__file__).resolve().parent
OUT = EXT / "dist"
STAMP = EXT / ".build-stamp"
INPUTS = ("package.json", "yarn.lock", ".yarnrc.yml", "tsconfig.json", "install.json")
INPUT_DIRS = ("src", "style", "schema")
#: provides ``jlpm`` (JupyterLab's pinned yarn) in the isolated build environment
JLPM_REQUIREMENT = "jupyterlab>=4.6,<5"


class LabExtensionBuildError(RuntimeError):
    """The JupyterLab extension cannot be built (no Node.js, or the build failed)."""


def source_digest(root: Path = EXT) -> str | None:
    """SHA-256 over the extension's source files (names and contents); None without sources."""
    if not (root / "package.json").is_file() or not (root / "src").is_dir():
        return None
    h = hashlib.sha256()
    files = [root / f for f in INPUTS if (root / f).is_file()]
    for d in INPUT_DIRS:
        files += sorted(p for p in (root / d).rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def needs_build(root: Path = EXT) -> bool:
    digest = source_digest(root)
    if digest is None:
        return False
    built = (root / "dist" / "package.json").is_file()
    stamp = root / ".build-stamp"
    return not (built and stamp.is_file() and stamp.read_text().strip() == digest)


def _jlpm() -> list[str]:
    # the build environment's own jlpm first: with --no-build-isolation (make setup) pip runs
    # this backend with the venv's interpreter but not with the venv on PATH
    beside = Path(sys.executable).parent / "jlpm"
    exe = str(beside) if os.access(beside, os.X_OK) else shutil.which("jlpm")
    if exe:
        return [exe]
    try:
        import jupyterlab  # noqa: F401
    except ImportError as e:
        raise LabExtensionBuildError(
            f"building the JupyterLab extension needs jlpm (pip install '{JLPM_REQUIREMENT}')"
        ) from e
    return [sys.executable, "-m", "jupyterlab.jlpmapp"]


def build_labextension(root: Path = EXT) -> None:
    """``jlpm install --immutable && jlpm build:prod`` in ``root``, then write the stamp."""
    if not needs_build(root):
        if not (root / "dist" / "package.json").is_file():
            raise LabExtensionBuildError(
                f"{root}: neither the extension's sources nor a prebuilt dist/ to ship"
            )
        return
    if shutil.which("node") is None:
        raise LabExtensionBuildError(
            "building afhub from source needs Node.js >= 20 for its JupyterLab extension "
            "(or install a prebuilt afhub wheel, which needs no Node)"
        )
    digest = source_digest(root)  # before building: a source edited meanwhile rebuilds next time
    jlpm = _jlpm()
    env = dict(os.environ)
    if len(jlpm) == 1:  # package scripts call `jlpm` again by name
        env["PATH"] = os.pathsep.join([str(Path(jlpm[0]).parent), env.get("PATH", "")])
    for args in (["install", "--immutable"], ["build:prod"]):
        print(f"afhub: jlpm {' '.join(args)} in {root}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [*jlpm, *args], cwd=root, env=env, stdout=sys.stderr, stderr=subprocess.STDOUT
        )
        if done.returncode != 0:
            raise LabExtensionBuildError(
                f"`jlpm {' '.join(args)}` failed with exit code {done.returncode} in {root}"
            )
    (root / ".build-stamp").write_text(f"{digest}\n")


def _extra(config_settings=None) -> list[str]:
    return [JLPM_REQUIREMENT] if needs_build() else []


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _extra()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _extra()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build_labextension()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    build_labextension()
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_data_files(Path(wheel_directory) / name, data_files(EXT.parent))
    return name


def data_files(project: Path) -> list[tuple[str, Path]]:
    """``(install path under the prefix, source file)`` for pyproject's ``data-files``."""
    from setuptools.config.expand import canonic_data_files
    from setuptools.config.pyprojecttoml import read_configuration

    table = read_configuration(project / "pyproject.toml", expand=False)
    mapping = table.get("tool", {}).get("setuptools", {}).get("data-files", {})
    out = []
    for dest, sources in canonic_data_files(mapping, str(project)):
        for src in sources:
            out.append((f"{dest}/{Path(src).name}", project / src))
    return out


def add_data_files(wheel: Path, files: list[tuple[str, Path]]) -> None:
    """Add ``files`` to ``wheel``'s ``.data/data/`` (and its RECORD).

    setuptools leaves data files out of editable wheels; an editable afhub must still ship its
    JupyterLab extension and its server config to ``share/`` and ``etc/``, as a wheel does."""
    import base64
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    record = next(i for i, _ in entries if i.filename.endswith(".dist-info/RECORD"))
    data_dir = record.filename.split(".dist-info/")[0] + ".data/data/"
    lines = dict(entries)[record].decode().splitlines()
    added = []
    for dest, src in files:
        body = src.read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        arc = data_dir + dest
        added.append((zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0)), body))
        lines.insert(
            -1 if lines and lines[-1].endswith(",,") else len(lines),
            f"{arc},sha256={digest},{len(body)}",
        )
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, body in entries:
            if info is record:
                continue
            z.writestr(info, body)
        for info, body in added:
            z.writestr(info, body, zipfile.ZIP_DEFLATED)
        z.writestr(record, ("\n".join(lines) + "\n").encode())
    os.replace(tmp, wheel)


def build_sdist(sdist_directory, config_settings=None):
    build_labextension()
    return _setuptools.build_sdist(sdist_directory, config_settings)
