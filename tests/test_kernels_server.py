"""Kernel discovery through a real `jupyter server` and its REST API, as JupyterLab uses it.

One server (module scope) with HOME in a temporary directory, the afhub extension enabled by the
shipped `jupyter_server_config.d/afhub.json` (no kernel_spec_manager_class on the command line:
linking the extension selects EnvKernelSpecManager), and these environments:

- ~/envs/withk     venv with ipykernel, no kernelspec (afhub builds one)
- ~/envs/nok       venv without ipykernel (not runnable until POST .../kernel)
- ~/envs/broken    conda-style prefix whose only kernel.json is invalid
- ~/envs/data      conda-meta only: no python, no kernelspec (nothing to run)
- ~/.conda/envs/cms                conda prefix shipping `cms-py` (relative `python` argv)
- <image>/opt/micromamba/envs/analysis-systems   the BNL layout: shipped `python3` kernelspec
  and an activate.d script
Kernels are started through /api/kernels and run code over the kernel websocket.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import requests
from kernels_helpers import (
    JupyterServer,
    make_conda_prefix,
    make_venv,
    python_spec,
    this_site_packages,
)

# The install command afhub runs for "make runnable" defaults to `pip install ipykernel`; tests
# have no network, so the same step is done offline: make ipykernel importable in the env.
_OFFLINE_INSTALL = (
    "import site, sys, pathlib; "
    "p = pathlib.Path(site.getsitepackages()[0]) / '_afhub_test_ipykernel.pth'; "
    "p.write_text(sys.argv[1] + '\\n'); print('installed ipykernel (offline)')"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    image = tmp_path_factory.mktemp("image") / "opt" / "micromamba" / "envs"
    make_venv(home / "envs" / "withk", ipykernel=True)
    make_venv(home / "envs" / "nok", ipykernel=False)
    make_conda_prefix(home / "envs" / "broken", ipykernel=False, kernels={"bad": {"argv": 3}})
    (home / "envs" / "data" / "conda-meta").mkdir(parents=True)  # no python, no kernelspec
    make_conda_prefix(
        home / ".conda" / "envs" / "cms", kernels={"cms-py": python_spec("python", "HEP Python")}
    )
    make_conda_prefix(
        image / "analysis-systems",
        kernels={"python3": python_spec("python", "Python (analysis-systems)")},
        activate_script="export AFHUB_TEST_ACTIVATED=analysis-systems\n",
    )
    config = {
        "EnvKernelSpecManager": {
            "install_command": ["{python}", "-c", _OFFLINE_INSTALL, this_site_packages()[0]]
        }
    }
    env = {"AFHUB_KERNEL_ROOTS": str(home / "envs"), "AFHUB_IMAGE_PREFIXES": str(image)}
    srv = JupyterServer(home, config=config, env=env).start()
    srv.image = image
    yield srv
    srv.stop()


async def run_in_kernel(server, name: str, code: str) -> str:
    r = server.post("api/kernels", {"name": name})
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    try:
        return await server.execute(kid, code)
    finally:
        server.delete(f"api/kernels/{kid}")


PROBE = "import os, sys; print(sys.prefix); print(os.environ.get({var!r}))"


def test_kernelspecs_lists_environment_kernels(server):
    specs = server.get("api/kernelspecs").json()["kernelspecs"]
    assert specs["env-analysis-systems-python3"]["spec"]["display_name"] == (
        "Python (analysis-systems)"
    )
    assert specs["env-withk-python3"]["spec"]["display_name"] == "Python 3 (ipykernel) [withk]"
    assert specs["env-cms-cms-py"]["spec"]["display_name"] == "HEP Python [cms]"
    assert not any(name.startswith(("env-nok", "env-broken")) for name in specs)
    # built specs get ipykernel's logos, like the stock python3 kernel
    assert "logo-64x64" in specs["env-withk-python3"]["resources"]


def test_kernelspec_by_nb_conda_alias(server):
    r = server.get("api/kernelspecs/conda-env-analysis-systems-py")
    assert r.status_code == 200
    assert r.json()["spec"]["display_name"] == "Python (analysis-systems)"


async def test_bnl_image_kernel_runs_inside_its_environment(server):
    prefix = str(server.image / "analysis-systems")
    out = await run_in_kernel(
        server,
        "env-analysis-systems-python3",
        PROBE.format(var="CONDA_PREFIX") + "; print(os.environ.get('AFHUB_TEST_ACTIVATED'))",
    )
    assert out.split() == [prefix, prefix, "analysis-systems"]


async def test_venv_kernel_runs_inside_its_environment(server):
    out = await run_in_kernel(server, "env-withk-python3", PROBE.format(var="VIRTUAL_ENV"))
    prefix = str(server.home / "envs" / "withk")
    assert out.split() == [prefix, prefix]


async def test_notebook_with_nb_conda_kernel_name_starts_the_right_env(server):
    out = await run_in_kernel(server, "conda-env-cms-py", PROBE.format(var="CONDA_PREFIX"))
    prefix = str(server.home / ".conda" / "envs" / "cms")
    assert out.split() == [prefix, prefix]


def test_environments_api(server):
    body = server.get("afhub/api/environments").json()
    assert body["enabled"] is True
    envs = {e["name"]: e for e in body["environments"]}
    assert envs["analysis-systems"]["runnable"] is True
    assert envs["analysis-systems"]["source"] == "image"
    assert [k["name"] for k in envs["analysis-systems"]["kernels"]] == [
        "env-analysis-systems-python3"
    ]
    assert "conda-env-analysis-systems-py" in envs["analysis-systems"]["kernels"][0]["aliases"]
    assert envs["broken"]["runnable"] is False
    assert "kernel.json: `argv` must be a non-empty list of strings" in envs["broken"]["reason"]
    nok = envs["nok"]
    assert nok["runnable"] is False and nok["can_install_ipykernel"] is True
    # the reason and the action name the configured install command (this server's is offline)
    assert nok["reason"] == f"no ipykernel: run `{nok['install_action']['command']}`"
    assert nok["install_action"]["command"].startswith(f"{nok['python']} -c ")
    assert nok["install_action"]["path"] == f"afhub/api/environments/{nok['id']}/kernel"
    one = server.get(f"afhub/api/environments/{nok['id']}").json()
    assert one["prefix"] == nok["prefix"]


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("get", "afhub/api/environments/not-an-id", 400, "invalid environment id 'not-an-id'"),
        ("get", "afhub/api/environments/0123456789ab", 404, "no environment with id"),
        ("post", "afhub/api/environments/0123456789ab/kernel", 404, "no environment with id"),
        ("post", "afhub/api/environments/..%2Fx/kernel", 400, "invalid environment id"),
    ],
)
def test_bad_input_gives_json_errors(server, method, path, status, message):
    r = getattr(server, method)(path)
    assert r.status_code == status
    assert message in r.json()["message"]
    assert "Traceback" not in r.text


def test_requires_authentication(server):
    r = requests.get(server.url + "afhub/api/environments", timeout=10)
    assert r.status_code == 403
    assert "environments" not in r.json()


def test_post_make_runnable_on_runnable_env_and_env_without_python(server):
    envs = {e["name"]: e for e in server.get("afhub/api/environments").json()["environments"]}
    r = server.post(f"afhub/api/environments/{envs['analysis-systems']['id']}/kernel")
    assert r.status_code == 200 and r.json()["runnable"] is True
    data = envs["data"]
    assert data["runnable"] is False and data["can_install_ipykernel"] is False
    r = server.post(f"afhub/api/environments/{data['id']}/kernel")
    assert r.status_code == 409
    assert r.json()["message"].endswith("no kernelspec in share/jupyter/kernels and no bin/python")


async def test_make_environment_runnable_on_request(server):
    envs = {e["name"]: e for e in server.get("afhub/api/environments").json()["environments"]}
    eid = envs["nok"]["id"]
    r = server.post(f"afhub/api/environments/{eid}/kernel")
    assert r.status_code == 202, r.text
    assert r.json()["install"]["state"] == "running"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        env = server.get(f"afhub/api/environments/{eid}").json()
        if env["install"]["state"] != "running":
            break
        await asyncio.sleep(0.2)
    assert env["install"]["state"] == "succeeded", env["install"]
    assert "installed ipykernel (offline)" in env["install"]["output"]
    assert env["runnable"] is True
    assert "env-nok-python3" in server.get("api/kernelspecs").json()["kernelspecs"]
    out = await run_in_kernel(server, "env-nok-python3", "import sys; print(sys.prefix)")
    assert out.strip() == env["prefix"]


def test_server_log_names_the_manager(server):
    log = server.log.read_text()
    assert "EnvKernelSpecManager" in log
    assert sys.executable  # the server ran on this interpreter, environments on their own
