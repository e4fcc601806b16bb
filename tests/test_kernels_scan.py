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


def manager(home, cls=None, **kw):
    kw.setdefault("roots", [str(home / "envs"), str(home / "projects")])
    kw.setdefault("image_prefixes", [str(home / "image" / "opt" / "micromamba" / "envs")])
    return (cls or EnvKernelSpecManager)(**kw)


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


def test_a_subclass_find_kernel_specs_governs_get_all_specs(in_home, tmp_path):
    """As with jupyter_client's KernelSpecManager: a subclass that lists kernels itself
    (find_kernel_specs, get_kernel_spec) gets exactly those from get_all_specs."""
    native = KernelSpecManager().get_kernel_spec("python3")

    class Mine(EnvKernelSpecManager):
        def find_kernel_specs(self):
            return {"fake": str(tmp_path), "python3": native.resource_dir}

        def get_kernel_spec(self, kernel_name):
            if kernel_name not in ("fake", "python3"):
                raise NoSuchKernel(kernel_name)
            return native

    specs = manager(in_home, cls=Mine).get_all_specs()
    assert sorted(specs) == ["fake", "python3"]
    assert specs["fake"]["resource_dir"] == str(tmp_path)
    # the class itself still adds environment kernels
    assert "env-withk-python3" in manager(in_home).get_all_specs()


# -- trust: who owns what the scan reads ------------------------------------------------------


def _st(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode | 0o040000, 1, 1, 2, uid, gid, 4096, 0, 0, 0))


@pytest.mark.parametrize(
    "mode, uid, gid, reason",
    [
        (0o755, 0, 0, None),
        (0o700, 1000, 1000, None),  # the account's own
        (0o1777, 0, 0, None),  # sticky: others' entries are refused one by one
        (0o775, 1000, 1000, None),  # group write by the account's private group
        (0o755, 1001, 1001, "owned by another account (uid 1001)"),
        (0o777, 0, 0, "writable by everyone (mode 0o777) without the sticky bit"),
        (0o775, 0, 50, "writable by group 50 (mode 0o775) without the sticky bit"),
        (0o775, 1000, 50, "writable by group 50 (mode 0o775) without the sticky bit"),
    ],
)
def test_untrusted_directories(mode, uid, gid, reason):
    from afhub.server_ext.env_scan import untrusted

    got = untrusted(_st(mode, uid, gid), uid=1000, private_gid=1000)
    assert (got if reason is None else got.split(";")[0]) == reason


@pytest.fixture
def other_account():
    """A real unprivileged account (another user of a shared file system), removed after."""
    import pwd
    import secrets
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("creating an account and chown need root")
    name = "afks" + secrets.token_hex(4)
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


def _chown_tree(path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for n in [dirpath, *(os.path.join(dirpath, x) for x in dirnames + filenames)]:
            os.lchown(n, uid, gid)


def test_a_shared_root_another_account_can_write_does_not_shadow_the_users_kernel(
    tmp_path, monkeypatch, other_account
):
    """Kernel names rank roots above the home: a root (or an environment in one) that another
    account owns or may write must not take the name of the user's own ``analysis``."""
    uid, gid = other_account.pw_uid, other_account.pw_gid
    home = tmp_path / "home"
    home.mkdir()
    make_venv(home / "analysis", ipykernel=True)  # the user's (this process's account)
    theirs = tmp_path / "theirs"  # a root the other account owns
    make_venv(theirs / "analysis", ipykernel=True)
    _chown_tree(theirs, uid, gid)
    open_root = tmp_path / "open"  # root's, writable by everyone, no sticky bit
    make_venv(open_root / "analysis", ipykernel=True)
    open_root.chmod(0o777)
    sticky = tmp_path / "sticky"  # like /tmp: root's environments there still count
    make_venv(sticky / "analysis", ipykernel=True)
    _chown_tree(sticky / "analysis", uid, gid)
    make_venv(sticky / "tools", ipykernel=True)
    (sticky / "tools-link").symlink_to(sticky / "tools")  # a name for root's env, by them
    os.lchown(sticky / "tools-link", uid, gid)
    sticky.chmod(0o1777)
    for p in (tmp_path, home):
        p.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    for var in ("MAMBA_ROOT_PREFIX", "CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        monkeypatch.delenv(var, raising=False)
    m = EnvKernelSpecManager(
        roots=[str(theirs), str(open_root), str(sticky)], image_prefixes=[], conda_defaults=False
    )
    model = m.environments()
    by_kernel = {k["name"]: e["prefix"] for e in model["environments"] for k in e["kernels"]}
    assert by_kernel["env-analysis-python3"] == str(home / "analysis")
    assert by_kernel["env-tools-python3"] == str(sticky / "tools")
    assert sorted(e["prefix"] for e in model["environments"]) == [
        str(home / "analysis"),
        str(sticky / "tools"),
    ]
    skipped = {s["path"]: s["reason"] for s in model["skipped"]}
    assert skipped[str(theirs)].startswith(f"owned by another account (uid {uid})")
    assert skipped[str(open_root)].startswith("writable by everyone (mode 0o777)")
    assert skipped[str(sticky / "analysis")].startswith(f"owned by another account (uid {uid})")
    assert skipped[str(sticky / "tools-link")].startswith("a symlink owned by another account")
    spec = m.get_kernel_spec("env-analysis-python3")
    assert spec.argv[0].startswith(str(home / "analysis"))
    # a chmod alone (no mtime change) is seen by the next listing
    sticky.chmod(0o777)
    assert str(sticky / "tools") not in {e["prefix"] for e in m.environments()["environments"]}


def test_the_server_environments_kernel_carries_the_facilitys_name(in_home, monkeypatch):
    """The kernel of the server's own environment (the facility's: the image, or the local
    backend's server environment) is named for it, and the environments listing offers it as
    the facility's environment, also on a fresh account with no environments of its own."""
    monkeypatch.setenv("AFHUB_IMAGE_NAME", "analysis")
    ksm = manager(in_home)
    assert ksm.get_all_specs()["python3"]["spec"]["display_name"] == "Python 3 (facility: analysis)"
    assert ksm.get_kernel_spec("python3").display_name == "Python 3 (facility: analysis)"
    facility = ksm.environments()["facility"]
    assert facility["facility"] and facility["runnable"] and facility["prefix"] == sys.prefix
    assert facility["kernels"] == [
        {
            "name": "python3",
            "display_name": "Python 3 (facility: analysis)",
            "language": "python",
            "built": False,
            "aliases": [],
        }
    ]
    fresh = manager(in_home, roots=[], image_prefixes=[], scan_home=False, conda_defaults=False)
    listing = fresh.environments()
    assert listing["environments"] == [] and listing["facility"]["name"] == "analysis"
    # without a session image: the environment's directory name; disabled: the stock manager
    monkeypatch.delenv("AFHUB_IMAGE_NAME")
    expected = f"Python 3 (facility: {os.path.basename(sys.prefix)})"
    assert manager(in_home).get_kernel_spec("python3").display_name == expected
    stock = KernelSpecManager().get_kernel_spec("python3").display_name
    assert manager(in_home, enabled=False).get_kernel_spec("python3").display_name == stock
