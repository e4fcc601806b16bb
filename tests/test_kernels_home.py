"""Where people make environments: one level under HOME, project .venv and pixi envs, .condarc.

Table tests over real directory layouts in a temporary HOME (no Jupyter server): each row builds
the files a tool would leave (`python3 -m venv`, `pixi install`, conda) and says which
environment the listing must show, under which name and kind, or which path must be skipped and
why. Environments are minimal on-disk layouts (pyvenv.cfg / conda-meta, bin/python linked to
this interpreter, an `ipykernel` package directory), which is all the scanner reads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from afhub.server_ext.kernel_discovery import EnvKernelSpecManager

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def _python_and_site(path: Path, ipykernel: bool) -> None:
    (path / "bin").mkdir(parents=True, exist_ok=True)
    (path / "bin" / "python").symlink_to(sys.executable)
    site = path / "lib" / PYVER / "site-packages"
    site.mkdir(parents=True)
    if ipykernel:
        (site / "ipykernel").mkdir()
        (site / "ipykernel" / "__init__.py").write_text("")


def venv(path: Path, *, ipykernel: bool = True) -> None:
    path.mkdir(parents=True)
    (path / "pyvenv.cfg").write_text(f"home = {os.path.dirname(sys.executable)}\n")
    _python_and_site(path, ipykernel)


def conda(path: Path, *, ipykernel: bool = True) -> None:
    (path / "conda-meta").mkdir(parents=True)
    (path / "conda-meta" / "history").write_text("")
    _python_and_site(path, ipykernel)


def old_style(path: Path) -> None:
    """A directory with bin/python but neither marker (e.g. a copied or hand-built prefix)."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)


def plain_dir(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("not an environment\n")


# (case id, {path under HOME: builder}, expected environments {name: (kind, source, path)},
#  expected skipped {path: reason start}, manager keyword arguments)
CASES = [
    ("venv under home", {"myenv": venv}, {"myenv": ("venv", "home", "myenv")}, {}, {}),
    (
        "conda prefix under home",
        {"miniforge3": conda},
        {"miniforge3": ("conda", "home", "miniforge3")},
        {},
        {},
    ),
    (
        "project .venv",
        {"analysis/.venv": venv},
        {"analysis": ("venv", "home", "analysis/.venv")},
        {},
        {},
    ),
    ("home's own .venv", {".venv": venv}, {"venv": ("venv", "home", ".venv")}, {}, {}),
    (
        "pixi environments of a project",
        {"higgs/.pixi/envs/default": conda, "higgs/.pixi/envs/gpu": conda},
        {
            "higgs": ("pixi", "home", "higgs/.pixi/envs/default"),
            "higgs-gpu": ("pixi", "home", "higgs/.pixi/envs/gpu"),
        },
        {},
        {},
    ),
    (
        "configured root wins over the home scan",
        {"envs/fit": venv},
        {"fit": ("venv", "root", "envs/fit")},
        {},
        {"roots": ["~/envs"]},
    ),
    (
        "plain directories are neither listed nor skipped",
        {"Documents": plain_dir, "data/run1": plain_dir},
        {},
        {},
        {},
    ),
    (
        "hidden directories are not entered",
        {".cache/tool-env": venv, ".local/x/.venv": venv},
        {},
        {},
        {},
    ),
    ("home scan off", {"myenv": venv}, {}, {}, {"scan_home": False}),
    (
        ".venv that is not a venv",
        {"broken/.venv": plain_dir},
        {},
        {"broken/.venv": "not a virtual environment: no pyvenv.cfg"},
        {},
    ),
    (
        "pixi environment not installed",
        {"ttbar/.pixi/envs/default": plain_dir},
        {},
        {"ttbar/.pixi/envs/default": "not a pixi environment: no conda-meta/"},
        {},
    ),
    (
        "bin/python without pyvenv.cfg or conda-meta",
        {"oldenv": old_style},
        {},
        {"oldenv": "has bin/python but neither pyvenv.cfg nor conda-meta/"},
        {},
    ),
]


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDA_ENVS_DIRS", "AFHUB_KERNEL_ROOTS"):
        monkeypatch.delenv(var, raising=False)
    return home


def listing(home: Path, **kw) -> dict:
    kw.setdefault("roots", [])
    kw.setdefault("image_prefixes", [])
    return EnvKernelSpecManager(**kw).environments()


@pytest.mark.parametrize(
    "layout, envs, skipped, kw", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_discovery_locations(home, layout, envs, skipped, kw):
    for rel, build in layout.items():
        build(home / rel)
    model = listing(home, **kw)
    got = {e["name"]: (e["kind"], e["source"], e["prefix"]) for e in model["environments"]}
    assert got == {n: (k, s, str(home / p)) for n, (k, s, p) in envs.items()}
    reasons = {s["path"]: s["reason"] for s in model["skipped"]}
    assert set(reasons) == {str(home / p) for p in skipped}
    for rel, start in skipped.items():
        assert reasons[str(home / rel)].startswith(start), reasons


def test_found_under_home_gets_a_kernel(home):
    venv(home / "myenv")
    specs = EnvKernelSpecManager(roots=[], image_prefixes=[]).get_all_specs()
    spec = specs["env-myenv-python3"]["spec"]
    assert spec["argv"][0] == str(home / "myenv" / "bin" / "python")
    assert spec["env"]["VIRTUAL_ENV"] == str(home / "myenv")


def test_environment_without_ipykernel_is_listed_with_reason_and_action(home):
    venv(home / "bare", ipykernel=False)
    (env,) = listing(home)["environments"]
    python = str(home / "bare" / "bin" / "python")
    assert env["runnable"] is False
    assert env["reason"] == f"no ipykernel: run `{python} -m pip install ipykernel`"
    assert env["install_action"] == {
        "label": "Install ipykernel",
        "method": "POST",
        "path": f"afhub/api/environments/{env['id']}/kernel",
        "command": f"{python} -m pip install ipykernel",
    }


def test_install_action_follows_the_configured_command(home):
    conda(home / "cms", ipykernel=False)
    cmd = ["micromamba", "install", "-y", "-p", "{prefix}", "ipykernel"]
    (env,) = listing(home, install_command=cmd)["environments"]
    prefix = str(home / "cms")
    assert env["install_action"]["command"] == f"micromamba install -y -p {prefix} ipykernel"
    assert env["reason"] == f"no ipykernel: run `micromamba install -y -p {prefix} ipykernel`"


def test_condarc_envs_dirs(home, tmp_path):
    conda(tmp_path / "group-envs" / "lhcb")
    (home / ".condarc").write_text(f"envs_dirs:\n  - {tmp_path / 'group-envs'}\n")
    (env,) = listing(home)["environments"]
    assert (env["name"], env["source"]) == ("lhcb", "conda")


def test_new_environment_in_home_appears_on_the_next_listing(home):
    ksm = EnvKernelSpecManager(roots=[], image_prefixes=[])
    assert not any(n.startswith("env-") for n in ksm.get_all_specs())
    venv(home / "late")
    assert "env-late-python3" in ksm.get_all_specs()
    assert ksm._scanner.stats["unchanged"] == 0
    ksm.get_all_specs()
    assert ksm._scanner.stats["unchanged"] == 1  # nothing changed: one flat stat pass


NOBODY = 65534


def listing_as_nobody(home: Path) -> dict:
    """:func:`listing` in a forked child running as ``nobody`` (root reads every directory, so
    a permission refusal can only be shown by another account); the result comes back as JSON."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, list, report, exit without pytest's teardown
        code = 1
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write, "w") as out:
                json.dump(listing(home), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "listing as nobody failed"
    return json.loads(data)


def test_unreadable_directory_is_skipped_with_reason(monkeypatch):
    # a home every account can reach (pytest's tmp dirs are private to root)
    base = Path(tempfile.mkdtemp(prefix="afhub-test-kernels-home-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDA_ENVS_DIRS", "AFHUB_KERNEL_ROOTS"):
        monkeypatch.delenv(var, raising=False)
    # IPython's directory (the kernel spec manager asks for it): one nobody may write, or
    # IPython makes a temporary one that nothing removes
    (base / "ipython").mkdir(mode=0o777)
    (base / "ipython").chmod(0o777)
    monkeypatch.setenv("IPYTHONDIR", str(base / "ipython"))
    venv(home / "locked")
    (home / "locked").chmod(0)
    try:
        if os.geteuid() == 0:
            result = listing_as_nobody(home)
        else:
            result = listing(home)
    finally:
        (home / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
    reasons = {s["path"]: s["reason"] for s in result["skipped"]}
    assert reasons[str(home / "locked")] == "not readable (permission denied)"
