"""EnvKernelSpecManager over real environments on disk, in-process (no Jupyter server).

Covers: every source kind (roots with venvs, pixi projects and project .venv; conda envs dirs;
environments.txt; image prefixes in the BNL layout), no subprocess on the listing path (audit
hook), broken environments skipped with reasons without hiding others, mtime-based cache
invalidation, get_kernel_spec served from the cache, stable names, and linking into ServerApp.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from afhub.server_ext.kernel_discovery import EnvKernelSpecManager, link_kernel_spec_manager
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from kernels_helpers import make_conda_prefix, make_venv, python_spec

_SPAWN_EVENTS = {
    "subprocess.Popen",
    "os.system",
    "os.posix_spawn",
    "os.fork",
    "os.exec",
    "os.spawn",
}
_audit = {"on": False, "events": []}


def _hook(event, args):
    if _audit["on"] and event in _SPAWN_EVENTS:
        _audit["events"].append((event, args))


sys.addaudithook(_hook)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A HOME with one environment of every kind, plus an image prefix in the BNL layout."""
    home = tmp_path_factory.mktemp("home")
    envs = home / "envs"
    envs.mkdir()
    make_venv(envs / "withk", ipykernel=True)
    make_venv(envs / "nok", ipykernel=False)
    proj = home / "projects" / "higgs"
    proj.mkdir(parents=True)
    make_conda_prefix(proj / ".pixi" / "envs" / "default", kernels={})
    make_conda_prefix(proj / ".pixi" / "envs" / "gpu", ipykernel=False)
    make_venv(home / "projects" / "ttbar" / ".venv", ipykernel=True)
    make_conda_prefix(
        home / ".conda" / "envs" / "cms",
        kernels={"cms-py": python_spec("python", "CMS Python")},
    )
    make_conda_prefix(home / "elsewhere" / "atlas")
    (home / ".conda" / "environments.txt").write_text(
        f"{home / 'elsewhere' / 'atlas'}\n{home / 'gone'}\n"
    )
    image = home / "image" / "opt" / "micromamba" / "envs"
    make_conda_prefix(
        image / "analysis-systems",
        kernels={"python3": python_spec("python", "Python (analysis-systems)")},
    )
    return home


def manager(home, **kw):
    kw.setdefault("roots", [str(home / "envs"), str(home / "projects")])
    kw.setdefault("image_prefixes", [str(home / "image" / "opt" / "micromamba" / "envs")])
    return EnvKernelSpecManager(**kw)


@pytest.fixture
def in_home(home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    for var in ("MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        monkeypatch.delenv(var, raising=False)
    return home


EXPECTED = {
    "env-withk-python3": ("venv", "envs/withk"),
    "env-higgs-python3": ("pixi", "projects/higgs/.pixi/envs/default"),
    "env-ttbar-python3": ("venv", "projects/ttbar/.venv"),
    "env-cms-cms-py": ("conda", ".conda/envs/cms"),
    "env-atlas-python3": ("conda", "elsewhere/atlas"),
    "env-analysis-systems-python3": ("conda", "image/opt/micromamba/envs/analysis-systems"),
}


def test_every_source_kind_is_listed(in_home):
    specs = manager(in_home).get_all_specs()
    for name, (kind, rel) in EXPECTED.items():
        meta = specs[name]["spec"]["metadata"]["afhub"]
        assert (meta["kind"], meta["prefix"]) == (kind, str(in_home / rel)), name
    assert not any(n.startswith(("env-nok", "env-higgs-gpu")) for n in specs)
    assert "python3" in specs  # stock kernels stay


def test_environments_report_not_runnable_with_reason(in_home):
    envs = {e["name"]: e for e in manager(in_home).environments()["environments"]}
    assert envs["nok"]["runnable"] is False
    assert envs["nok"]["reason"].startswith("no ipykernel: run `")
    assert envs["higgs-gpu"]["kind"] == "pixi" and not envs["higgs-gpu"]["runnable"]
    assert envs["analysis-systems"]["kernels"][0]["built"] is False
    assert envs["withk"]["kernels"][0]["built"] is True


def test_listing_path_starts_no_subprocess(in_home):
    ksm = manager(in_home)
    _audit["events"].clear()
    _audit["on"] = True
    try:
        ksm.get_all_specs()  # cold
        ksm.get_all_specs()  # warm
        ksm.find_kernel_specs()
        ksm.get_kernel_spec("env-analysis-systems-python3")
        ksm.get_kernel_spec("conda-env-cms-py")
        ksm.environments()
    finally:
        _audit["on"] = False
    assert _audit["events"] == []


def test_corrupt_environments_do_not_hide_others(in_home, tmp_path):
    roots = tmp_path / "roots"
    make_venv(roots / "good", ipykernel=True)
    bad = make_conda_prefix(roots / "badjson", ipykernel=False, kernels={"k": {"argv": []}})
    (bad / "share" / "jupyter" / "kernels" / "k2").mkdir()
    (bad / "share" / "jupyter" / "kernels" / "k2" / "kernel.json").write_text("{not json")
    (roots / "dangling").symlink_to(tmp_path / "nowhere")
    nopy = make_conda_prefix(roots / "nopython")
    (nopy / "bin" / "python").unlink()
    (nopy / "bin" / "python").symlink_to(tmp_path / "nowhere-python")
    (tmp_path / "a-file").write_text("")
    ksm = manager(in_home, roots=[str(roots), str(tmp_path / "a-file")])
    specs = ksm.get_all_specs()
    assert "env-good-python3" in specs
    assert "env-analysis-systems-python3" in specs
    model = ksm.environments()
    skipped = {s["path"]: s["reason"] for s in model["skipped"]}
    assert skipped[str(roots / "dangling")] == "dangling symlink"
    assert skipped[str(tmp_path / "a-file")] == "not a directory"
    assert skipped[str(in_home / "gone")].startswith("listed in ")
    envs = {e["name"]: e for e in model["environments"]}
    assert envs["badjson"]["runnable"] is False
    assert any("`argv` must be a non-empty list" in p for p in envs["badjson"]["problems"])
    assert any("invalid JSON" in p for p in envs["badjson"]["problems"])
    assert "bin/python is a dangling symlink" in envs["nopython"]["reason"]


def test_cache_is_invalidated_by_mtimes(in_home, tmp_path):
    roots = tmp_path / "r"
    spec = python_spec("python", "First")
    env = make_conda_prefix(roots / "one", kernels={"py": spec})
    ksm = manager(in_home, roots=[str(roots)])
    assert ksm.get_all_specs()["env-one-py"]["spec"]["display_name"] == "First [one]"
    misses = ksm._scanner.stats["misses"]
    ksm.get_all_specs()
    assert ksm._scanner.stats["misses"] == misses  # warm: stat only, nothing re-read

    kjson = env / "share" / "jupyter" / "kernels" / "py" / "kernel.json"
    kjson.write_text(json.dumps(python_spec("python", "Second")))
    st = kjson.stat()
    os.utime(kjson, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert ksm.get_all_specs()["env-one-py"]["spec"]["display_name"] == "Second [one]"

    make_venv(roots / "two", ipykernel=True)
    assert "env-two-python3" in ksm.get_all_specs()


def test_get_kernel_spec_is_served_from_the_cache(in_home, monkeypatch):
    ksm = manager(in_home)
    ksm.get_all_specs()

    def no_scan(*a, **k):
        raise AssertionError("rescanned")

    monkeypatch.setattr(ksm._scanner, "scan", no_scan)
    spec = ksm.get_kernel_spec("env-analysis-systems-python3")
    prefix = str(in_home / "image" / "opt" / "micromamba" / "envs" / "analysis-systems")
    assert spec.argv[0] == f"{prefix}/bin/python"
    assert spec.env["CONDA_PREFIX"] == prefix
    assert ksm.get_kernel_spec("conda-env-analysis-systems-py").argv == spec.argv


def test_unknown_kernel_raises_no_such_kernel(in_home):
    with pytest.raises(NoSuchKernel):
        manager(in_home).get_kernel_spec("env-does-not-exist-python3")


def test_names_do_not_depend_on_root_order(in_home):
    a = manager(in_home, roots=[str(in_home / "envs"), str(in_home / "projects")])
    b = manager(in_home, roots=[str(in_home / "projects"), str(in_home / "envs")])
    assert sorted(a.get_all_specs()) == sorted(b.get_all_specs())


def test_disabled_is_the_stock_manager(in_home):
    ksm = manager(in_home, enabled=False)
    assert sorted(ksm.get_all_specs()) == sorted(KernelSpecManager().get_all_specs())


def test_roots_from_environment_variables(in_home, monkeypatch):
    monkeypatch.setenv("AFHUB_KERNEL_ROOTS", os.pathsep.join(["/a", "~/b"]))
    monkeypatch.setenv("AFHUB_IMAGE_PREFIXES", "/img/envs")
    monkeypatch.setenv("AFHUB_KERNELS_ENABLED", "false")
    ksm = EnvKernelSpecManager()
    assert ksm.roots == ["/a", "~/b"]
    assert ksm.image_prefixes == ["/img/envs"]
    assert ksm.enabled is False


@pytest.mark.parametrize(
    "configured, expected",
    [
        (None, EnvKernelSpecManager),
        ("jupyter_client.kernelspec.KernelSpecManager", KernelSpecManager),
    ],
)
def test_link_selects_manager_unless_configured(configured, expected):
    from jupyter_server.serverapp import ServerApp
    from traitlets.config import Config

    config = Config()
    if configured:
        config.ServerApp.kernel_spec_manager_class = configured
    from jupyter_server.gateway.gateway_client import GatewayClient

    app = ServerApp(config=config)
    try:
        link_kernel_spec_manager(app)
        assert app.kernel_spec_manager_class is expected
    finally:
        GatewayClient.clear_instance()


def test_condarc_envs_dirs_and_mamba_root_prefix(in_home, tmp_path, monkeypatch):
    other = tmp_path / "shared-envs"
    make_conda_prefix(other / "lhcb")
    mamba_root = make_conda_prefix(tmp_path / "mamba")
    make_conda_prefix(mamba_root / "envs" / "belle2")
    condarc = in_home / ".condarc"
    condarc.write_text(f"envs_dirs:\n  - {other}\n")
    monkeypatch.setenv("MAMBA_ROOT_PREFIX", str(mamba_root))
    try:
        ksm = manager(in_home)
        specs = ksm.get_all_specs()
        assert specs["env-lhcb-python3"]["spec"]["metadata"]["afhub"]["prefix"] == str(
            other / "lhcb"
        )
        assert "env-belle2-python3" in specs
        assert specs["env-base-python3"]["spec"]["env"]["CONDA_DEFAULT_ENV"] == "base"
        assert ksm.get_kernel_spec("conda-root-py").argv[0] == f"{mamba_root}/bin/python"
        assert "env-lhcb-python3" not in manager(in_home, conda_defaults=False).get_all_specs()
    finally:
        condarc.unlink()
