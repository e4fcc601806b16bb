"""Dask workers in the kernel's own environment, on a real facility (issue 22): ``afhub up``
(hub, proxy, demo OIDC provider) with the real dask-gateway-server, local backend, real user
servers, kernels and workers. Nothing is faked.

alice's venv is made in her home from the server environment's Python (the packages of the
server environment through a ``.pth`` file, as ``--system-site-packages`` would: no network),
and a small package that is not in the analysis image is installed into it by her account,
with pip, from a wheel built here. It is her kernel (found by kernel discovery);
``new_cluster()`` from it gives a scheduler and workers whose ``sys.prefix`` is that venv, which
import the extra package, run as her account, and whose versions the version check finds equal
to the kernel's. bob, naming alice's venv, is refused with a clear message and gets no cluster.
Her conda environment (a conda-layout prefix, ``conda_prefix.make_conda_prefix``) does the same.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import zipfile

import pytest
from conda_prefix import make_conda_prefix
from facility import dask_values, wait_for
from kernel_ws import Kernel
from kernels_helpers import make_user_venv, remove_as_user, server_python, user_ids
from test_dask_plots_browser import open_panel

pytestmark = pytest.mark.integration

EXTRA = "afhub_probe_extra"  # not in the analysis image (asserted below)
MARK = "installed in alice's own venv"


def build_wheel(directory: str) -> str:
    """A pure-Python wheel of :data:`EXTRA` (zip, METADATA, WHEEL, RECORD), built by hand."""
    dist = f"{EXTRA}-1.0.dist-info"
    files = {
        f"{EXTRA}/__init__.py": f"MARK = {MARK!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: afhub-probe-extra\nVersion: 1.0\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: afhub-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = os.path.join(directory, f"{EXTRA}-1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    os.chmod(path, 0o644)
    return path


@pytest.fixture(scope="module")
def fac(start_facility):
    values = dask_values()
    facility = start_facility(values, name="dask-user-env")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice_venv(fac):
    return make_alice_venv(fac)


def make_alice_venv(fac, hs=None):
    """alice logged in with a server (``hs``, else a new login and server), and her venv with
    :data:`EXTRA` (``(session, prefix)``)."""
    hs = hs or fac.login_with_server("alice")
    uid = fac.uid("alice")
    home = fac.home("alice")
    venv = make_user_venv(home / "envs" / "agcextra", uid=uid, ipykernel=True)  # by her, ~/envs too
    wheels = tempfile.mkdtemp(prefix="afhub-wheel-")
    os.chmod(wheels, 0o755)
    try:
        wheel = build_wheel(wheels)
        # installed by her account, into her venv (pip comes from the server environment)
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PIP_NO_CACHE_DIR": "1"}
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-deps"]
        subprocess.run(
            [*cmd, "--disable-pip-version-check", wheel],
            check=True,
            capture_output=True,
            env=env,
            cwd=str(home),
            **user_ids(uid),
        )
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    # not in the analysis image: only her venv has it
    python, _ = server_python()
    assert subprocess.run([python, "-c", f"import {EXTRA}"], capture_output=True).returncode
    return hs, str(venv)


def venv_kernel(hs, prefix: str) -> Kernel:
    """A kernel of the environment at ``prefix``, by the name kernel discovery gave it."""

    def find():
        specs = hs.server_api("GET", "api/kernelspecs").json()["kernelspecs"]
        for name, spec in specs.items():
            argv = (spec.get("spec") or {}).get("argv") or []
            if argv and argv[0].startswith(prefix + "/"):
                return name
        return None

    name = wait_for(find, timeout=30, interval=1, what=f"a kernel of {prefix}")
    r = hs.server_api("POST", "api/kernels", json={"name": name})
    assert r.status_code == 201, r.text
    kernel = Kernel.__new__(Kernel)
    kernel.hs, kernel.id = hs, r.json()["id"]
    return kernel


RUN = """
import json, os, sys, warnings
from afhub.server_ext.dask import new_cluster
from afhub.server_ext.dask_client import DaskVersionWarning, cluster_versions, version_mismatches
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cluster = new_cluster(workers=2)
client = cluster.get_client()
def probe():
    import os, sys, EXTRA
    return {"prefix": sys.prefix, "mark": EXTRA.MARK, "uid": os.getuid()}
workers = client.run(probe)
scheduler = client.run_on_scheduler(lambda: __import__("sys").prefix)
versions = cluster_versions(client)
print(json.dumps({
    "name": cluster.name,
    "prefix": sys.prefix,
    "uid": os.getuid(),
    "workers": list(workers.values()),
    "scheduler": scheduler,
    "mismatches": version_mismatches(versions),
    "worker_versions": [w["packages"] for w in versions["workers"].values()],
    "client_versions": versions["client"]["packages"],
    "warned": [str(w.message) for w in caught if issubclass(w.category, DaskVersionWarning)],
}))
cluster.shutdown()
""".replace("EXTRA", EXTRA)


def test_new_cluster_from_her_venv_runs_the_workers_in_it(alice_venv):
    check_workers_in_venv(*alice_venv)


def check_workers_in_venv(hs, prefix: str) -> None:
    k = venv_kernel(hs, prefix)
    out = k.json(RUN, timeout=300)
    assert out["prefix"] == prefix  # the kernel is her venv
    assert out["scheduler"] == prefix
    assert len(out["workers"]) == 2
    for w in out["workers"]:
        assert w == {"prefix": prefix, "mark": MARK, "uid": out["uid"]}
    # the version check proves notebook and workers match (and it did not warn)
    assert out["mismatches"] == [] and out["warned"] == []
    assert len(out["worker_versions"]) == 2
    for theirs in out["worker_versions"]:
        for pkg in ("python", "dask", "distributed", "cloudpickle", "msgpack"):
            assert theirs[pkg] == out["client_versions"][pkg]


def test_bob_cannot_point_a_cluster_at_alices_venv(fac, alice_venv):
    _, prefix = alice_venv
    hs = fac.login_with_server("bob")
    k = Kernel(hs)
    out = k.json(
        "import json\n"
        "from afhub.server_ext.dask import new_cluster, clusters\n"
        "try:\n"
        f"    new_cluster(workers=1, environment={prefix!r})\n"
        "    error = None\n"
        "except Exception as e:\n"
        "    error = str(e)\n"
        "print(json.dumps({'error': error, 'clusters': [c.name for c in clusters()]}))",
        timeout=120,
    )
    assert out["error"] is not None
    assert out["error"].startswith("environment: ") or "environment: " in out["error"]
    assert prefix in out["error"] and "not inside your home" in out["error"]
    assert "Traceback" not in out["error"]
    assert out["clusters"] == []  # nothing started


# -- the sidebar's new-cluster form (its REST routes, as the panel calls them) ----------------


def with_server(fac, username: str):
    """``username`` logged in, with a ready server (started unless one runs already)."""
    hs = fac.login(username)
    model = hs.server_model()
    if model is None:
        r = hs.spawn()
        assert r.status_code in (201, 202), r.text
    if not (model and model.get("ready")):
        hs.wait_ready()
    return hs


def form_environments(hs) -> dict[str, str]:
    """The sidebar form's ``environment`` choices: value -> label."""
    r = hs.server_api("GET", "afhub/api/dask/options")
    assert r.status_code == 200, r.text
    (field,) = [f for f in r.json()["fields"] if f["name"] == "environment"]
    assert field["type"] == "select" and field["default"] == ""  # the image unless chosen
    return {c["value"]: c["label"] for c in field["choices"]}


def test_the_sidebar_form_offers_her_venv_and_its_cluster_runs_in_it(fac, alice_venv):
    hs, prefix = alice_venv
    choices = form_environments(hs)
    assert prefix in choices and "agcextra" in choices[prefix]
    home = str(fac.home("alice"))
    assert all(v == "" or v.startswith(home + "/") for v in choices)  # only her own
    r = hs.server_api(
        "POST",
        "afhub/api/dask/clusters",
        json={"options": {"environment": prefix}, "workers": 2},
        timeout=300,
    )
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    assert r.json()["options"]["environment"] == prefix
    try:
        wait_for(
            lambda: hs.server_api("GET", f"afhub/api/dask/clusters/{name}").json()["workers"] == 2,
            timeout=180,
            what="2 workers",
        )
        out = Kernel(hs).json(
            "import json\n"
            "from afhub.server_ext.dask import connect\n"
            f"client = connect({name!r}, check_versions=False).get_client()\n"
            "def probe():\n"
            f"    import sys, {EXTRA}\n"
            f"    return [sys.prefix, {EXTRA}.MARK]\n"
            "workers = list(client.run(probe).values())\n"
            "scheduler = client.run_on_scheduler(lambda: __import__('sys').prefix)\n"
            "client.close()\n"
            "print(json.dumps({'workers': workers, 'scheduler': scheduler}))",
            timeout=180,
        )
        assert out == {"workers": [[prefix, MARK]] * 2, "scheduler": prefix}
    finally:
        r = hs.server_api("DELETE", f"afhub/api/dask/clusters/{name}", timeout=120)
        assert r.status_code == 204, r.text


def test_the_form_offers_bob_no_venv_of_alices_and_the_gateway_refuses_it(fac, alice_venv):
    _, prefix = alice_venv
    hs = with_server(fac, "bob")
    assert prefix not in form_environments(hs)
    # posted anyway (not a choice of his form): the gateway refuses, the route says why
    r = hs.server_api(
        "POST",
        "afhub/api/dask/clusters",
        json={"options": {"environment": prefix}, "workers": 1},
        timeout=120,
    )
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "environment: " in message and "not inside your home" in message
    assert hs.server_api("GET", "afhub/api/dask/clusters").json()["clusters"] == []


def test_new_cluster_from_her_conda_env_runs_the_workers_in_it(fac, alice_venv):
    """A conda environment is handled as a venv is: alice's conda-layout prefix in conda's own
    place (``~/.conda/envs``, found by kernel discovery as a conda env) has its own dask,
    distributed and dask-gateway (``conda_prefix.make_conda_prefix``), and she installs
    :data:`EXTRA` into it with its ``python -m pip``; the workers run in it and import it."""
    hs, _ = alice_venv
    uid, home = fac.uid("alice"), fac.home("alice")
    prefix = home / ".conda" / "envs" / "agcconda"
    remove_as_user(prefix, uid)
    make_conda_prefix(prefix, uid=uid)  # by her account, ~/.conda/envs too
    wheels = tempfile.mkdtemp(prefix="afhub-wheel-")
    os.chmod(wheels, 0o755)
    try:
        subprocess.run(
            [str(prefix / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-deps",
             "--disable-pip-version-check", build_wheel(wheels)],
            check=True, capture_output=True, cwd=str(home),
            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "PIP_NO_CACHE_DIR": "1"},
            **user_ids(uid),
        )  # fmt: skip
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    assert list(prefix.glob(f"lib/python3*/site-packages/{EXTRA}"))  # conda's place for it
    check_workers_in_venv(hs, str(prefix))
    specs = hs.server_api("GET", "api/kernelspecs").json()["kernelspecs"].values()
    kinds = [
        s["spec"]["metadata"]["afhub"]["kind"]
        for s in specs
        if s["spec"]["argv"][0].startswith(f"{prefix}/")
    ]
    assert kinds == ["conda"]  # kernel discovery took it for what it looks like


@pytest.mark.browser
def test_in_chromium_she_chooses_her_venv_in_the_sidebar(fac, browser, alice_venv):
    hs, prefix = alice_venv
    hs.server_api("GET", "afhub/api/session")  # the server's OAuth cookie, as Lab has it
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_cookies(
        [
            {"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": c.path or "/"}
            for c in hs.session.cookies
        ]
    )
    try:
        page = context.new_page()
        page.goto(fac.url + "user/alice/lab")
        page.locator(".jp-LauncherCard").first.wait_for(timeout=90_000)
        dask = open_panel(page).locator('[data-section="dask"]')
        create = dask.get_by_role("button", name="Create Dask cluster")
        create.wait_for(timeout=60_000)
        # no cluster listed (a change of the list renders the form again, with its defaults)
        wait_for(lambda: dask.locator("[data-cluster]").count() == 0, 60, what="no clusters")
        image = dask.locator("#afhub-dask-opt-image")
        assert image.is_enabled()  # the facility's image, until she chooses her venv
        dask.locator("#afhub-dask-opt-environment").select_option(prefix)
        assert image.is_disabled()
        dask.locator("#afhub-dask-workers").fill("1")
        create.click()
        cluster = dask.locator("[data-cluster]").first
        wait_for(
            lambda: cluster.count() and "running · 1 worker" in cluster.inner_text(),
            240,
            what="a running 1-worker cluster in the panel",
        )
        name = cluster.get_attribute("data-cluster")
        model = hs.server_api("GET", f"afhub/api/dask/clusters/{name}").json()
        assert model["options"]["environment"] == prefix
        cluster.get_by_role("button", name=re.compile("^Shut down cluster")).click()
        wait_for(
            lambda: dask.locator(f'[data-cluster="{name}"]').count() == 0,
            120,
            what="the cluster gone from the panel",
        )
        assert not dask.locator("[role=alert]").count(), dask.inner_text()
    finally:
        context.close()
