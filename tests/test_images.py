"""The images, built here from the project's Dockerfiles and run for real (slow).

What runs: podman (Debian) builds images/analysis/Dockerfile (CPU and GPU targets) and
images/hub/Dockerfile through images/build.py, the same code as ``make images``, on a Debian base
it makes with mmdebstrap (no registry). An image whose ``org.afhub.inputs`` label matches the
hash of its inputs (Dockerfile, locks, data, afhub's sources, base) is reused, so a second run
builds nothing. The analysis image is then started the way the rendered Kubernetes pod of a
profile says (tests/podman_pod.py: command, args, environment, user and group ids, home volume;
``--network host``) by a real ``afhub up`` hub with the demo provider, and checked from outside.

Skipped where podman is missing (``make test`` installs it: under CI=true that is a failure).
Figures: ``pytest -s tests/test_images.py`` prints build times and sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from facility import Facility, env_flag, example_values, free_port, wait_for
from kernel_ws import Kernel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "images"))

import build as images  # noqa: E402  (images/build.py)

pytestmark = pytest.mark.integration

IMPORTS = "import uproot, awkward, hist, dask_gateway, vector, dask, distributed, ipykernel"
DOCKERFILES = sorted(REPO.glob("images/**/Dockerfile"))


def _figure(what: str, built: images.Built) -> None:
    how = "reused" if built.reused else f"built in {built.seconds:.0f} s"
    print(f"\n[images] {what} {built.ref}: {how}, {built.size_bytes / 1e6:.0f} MB")


@pytest.fixture(scope="module")
def podman():
    if not shutil.which("podman"):
        if env_flag("CI"):
            pytest.fail("podman is not installed, but `make test` installs it")
        pytest.skip("podman is not installed (`make system-deps` or `make image-deps` installs it)")
    return "podman"


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    r = subprocess.run(list(args), env=images.engine_env(), **kw)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(args[:4])}... exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def analysis_image(podman) -> str:
    built = images.ensure_image("analysis")
    _figure("analysis", built)
    return built.ref


# -- every Dockerfile is lint-clean -----------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or "hadolint"
    r = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_dockerfile_is_built_here():
    assert {str(p.relative_to(REPO)) for p in DOCKERFILES} == {
        t.dockerfile for t in images.TARGETS.values()
    }


# -- the analysis image itself ------------------------------------------------------------------
def test_analysis_image_labels_user_and_no_demo_parts(analysis_image):
    info = images.inspect(analysis_image)
    labels = info["Config"]["Labels"]
    assert labels["org.afhub.version"] == images.afhub_version()
    assert labels["org.opencontainers.image.version"] == images.afhub_version()
    assert labels["org.afhub.lock-sha256"] == images.sha256_file(
        REPO / "images/analysis/requirements.txt"
    )
    config = info["Config"]
    assert config["User"] == "1000"
    assert not config.get("Entrypoint")  # the spawner's command runs as given
    assert config["Cmd"] == ["jupyterhub-singleuser"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert not {"PIP_CERT", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CRYPT_KEY"} & set(env)
    # no demo provider, no build inputs or secrets left behind, nothing only root can read
    script = (
        "import importlib.util, os, sys\n"
        "assert importlib.util.find_spec('oidc_provider_mock') is None, 'demo provider'\n"
        "assert importlib.util.find_spec('afhub.authenticator.dev_idp') is None, 'demo'\n"
        "import afhub.hub_config.demo  # its settings stay: plain configuration\n"
        "assert not os.path.exists('/tmp/afhub'), 'build leftovers'\n"
        "bad = [os.path.join(d, f) for d, _, fs in os.walk(sys.prefix) for f in fs\n"
        "       if not os.access(os.path.join(d, f), os.R_OK)]\n"
        "assert not bad, bad[:5]\n"
        "print(sys.prefix, os.getuid())\n"
    )
    r = run("podman", "run", "--rm", "--user", "4242:4242", analysis_image, "python", "-c", script)
    assert r.stdout.split() == ["/opt/afhub/venv", "4242"]
    history = run("podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", analysis_image)
    assert "BEGIN" not in history.stdout and "token" not in history.stdout.lower()


def test_apptainer_style_start(analysis_image, tmp_path):
    """What ``apptainer exec docker://…`` (or a SIF) needs: no entrypoint, a read-only image,
    any uid, HOME bound writable from the host, /tmp from the host; JupyterLab starts."""
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4242, 4242)
    port = free_port()
    name = f"afhub-test-apptainer-{port}"
    cmd = [
        "podman", "run", "--rm", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--user", "4242:4242",
        "--volume", f"{home}:{home}", "--env", f"HOME={home}", "--workdir", str(home),
        analysis_image,
        "jupyter-lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
    ]  # fmt: skip
    run(*cmd)
    try:
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{port}/api"), 60, what="JupyterLab on a SIF-like start"
        )
        r = run("podman", "exec", name, "python", "-c", f"{IMPORTS}; open('x', 'w').write('ok')")
        assert (home / "x").read_text() == "ok"
        assert r.returncode == 0
    finally:
        run("podman", "rm", "--force", "--ignore", name, check=False)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


# -- started by a real hub the way its rendered pod says ----------------------------------------
def _values(image: str) -> dict:
    local = example_values("local")
    return {
        "hub": {"ip": "127.0.0.1"},
        "auth": {
            **local["auth"],
            "dev": {"users": local["auth"]["dev"]["users"], "token_lifetime": 24},
        },
        "tokens": {"refresh_margin": 8},
        "backend": {
            "type": "kubernetes",
            # a home volume per user, as the chart's singleuser.storage gives
            "kubernetes": {"namespace": "afhub", "storage_class": "standard"},
        },
        "images": [
            {
                "name": "analysis",
                "image": image,
                "display_name": "HEP analysis (built by this test)",
                "archs": ["x86_64"],
            }
        ],
        "profiles": [
            {
                "display_name": "CPU",
                "slug": "cpu",
                "default": True,
                "image": "analysis",
                "resources": {"cpu": 1, "memory": "2G"},
            }
        ],
    }


@pytest.fixture(scope="module")
def pod_facility(analysis_image, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("image-facility")
    volume_root = workdir / "volumes"
    volume_root.mkdir()
    fac = Facility(_values(analysis_image), workdir)
    old = os.environ.get("AFHUB_TEST_VOLUME_ROOT")
    os.environ["AFHUB_TEST_VOLUME_ROOT"] = str(volume_root)
    try:
        cmd = [
            sys.executable, str(REPO / "tests" / "podman_pod.py"), "up",
            "-f", str(fac.values_path), "--ip", "127.0.0.1", "--port", str(fac.port),
            "--data-dir", str(fac.data_dir),
        ]  # fmt: skip
        fac.start(cmd=cmd)
        fac.volume_root = volume_root
        yield fac
    finally:
        fac.stop()
        if old is None:
            os.environ.pop("AFHUB_TEST_VOLUME_ROOT", None)
        else:
            os.environ["AFHUB_TEST_VOLUME_ROOT"] = old
        names = run("podman", "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        for n in names:
            if n.startswith("afhub-test-jupyter-"):
                run("podman", "rm", "--force", n, check=False)


def test_image_runs_as_the_rendered_pod_says(pod_facility):
    t0 = time.monotonic()
    hs = pod_facility.login("alice")
    r = hs.spawn({"profile": "cpu"})
    assert r.status_code in (201, 202), r.text
    hs.wait_ready(timeout=120)
    print(f"\n[images] spawn to ready through the hub: {time.monotonic() - t0:.1f} s")

    # podman runs exactly what KubeSpawner rendered: the image's environment, uid 1000
    (container,) = [
        n
        for n in run("podman", "ps", "--format", "{{.Names}}").stdout.split()
        if n == "afhub-test-jupyter-alice"
    ]
    r = run("podman", "exec", container, "python", "-c",
            f"{IMPORTS}; import os, sys; print(sys.prefix, os.getuid(), os.environ['HOME'])")  # fmt: skip
    assert r.stdout.split() == ["/opt/afhub/venv", "1000", "/home/jovyan"]

    # its kernel list has the image environment's kernel, named for the catalogue's image
    specs = hs.server_api("GET", "api/kernelspecs").json()["kernelspecs"]
    native = specs["python3"]["spec"]
    assert native["argv"][0] in ("python", "python3") or native["argv"][0].startswith(
        "/opt/afhub/venv/"
    ), native  # a bare python is the server's own: the image's venv
    assert "analysis" in native["display_name"], native
    r = run("podman", "exec", container, "jupyter", "kernelspec", "list", "--json")
    assert json.loads(r.stdout)["kernelspecs"]["python3"]["resource_dir"].startswith(
        "/opt/afhub/venv/"
    )
    # a cell in that kernel, driven over its websocket through the hub's proxy
    out = Kernel(hs).run(f"{IMPORTS}; import sys; print(sys.prefix, hist.__version__)", 120)
    assert "/opt/afhub/venv" in out, out

    # the sidebar extension is installed and enabled; the server extension answers
    page = hs.server_api("GET", "lab").text
    assert '"name": "afhub-sidebar"' in page or '"name":"afhub-sidebar"' in page, page[:2000]
    assert hs.server_api("GET", "afhub/api/environments").status_code == 200

    # the data token appears in the home volume, 0600 in a 0700 directory, and is renewed
    token = pod_facility.volume_root / "claim-alice" / ".afhub" / "tokens" / "bt_u1000"
    wait_for(token.exists, 60, what=f"{token}")
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert token.stat().st_uid == 1000
    first = token.read_text()
    wait_for(lambda: token.read_text() != first, 60, what="a renewed token")

    hs.stop_server()
    assert "afhub-test-jupyter-alice" not in run("podman", "ps", "-a", "--format", "{{.Names}}").stdout


# -- the GPU variant: built, and its CUDA runtime wheels load (no GPU here) --------------------
def test_gpu_image_loads_cuda_runtime(podman):
    built = images.ensure_image("analysis-gpu")
    _figure("analysis-gpu", built)
    labels = images.labels(built.ref)
    assert labels["org.afhub.gpu-lock-sha256"] == images.sha256_file(
        REPO / "images/analysis/requirements-gpu.txt"
    )
    script = (
        f"{IMPORTS}\n"
        "import ctypes, glob, os, cupy, nvidia.cuda_runtime\n"
        "lib = glob.glob(os.path.join(nvidia.cuda_runtime.__path__[0], 'lib', 'libcudart.so.*'))[0]\n"
        "ctypes.CDLL(lib)\n"
        "print(cupy.__version__, cupy.cuda.runtime.runtimeGetVersion())\n"
    )
    r = run("podman", "run", "--rm", built.ref, "python", "-c", script)
    version, runtime = r.stdout.split()
    assert int(runtime) // 1000 == 12  # CUDA 12.x runtime, loaded without a driver


# -- the hub image for Zero to JupyterHub, on a base made here ----------------------------------
def test_hub_image(podman):
    built = images.ensure_image("hub")
    _figure("hub", built)
    script = (
        "import importlib.util, kubespawner, jupyterhub, afhub.hub_config\n"
        "from afhub.hub_config import configure\n"
        "assert importlib.util.find_spec('oidc_provider_mock') is None, 'demo provider'\n"
        "assert importlib.util.find_spec('afhub.authenticator.dev_idp') is None, 'demo'\n"
        "import afhub.authenticator.auth_section  # reads auth.dev without the program\n"
        "print(jupyterhub.__version__)\n"
    )
    r = run("podman", "run", "--rm", built.ref, "python", "-c", script)
    assert r.stdout.strip()
    r = run("podman", "run", "--rm", built.ref, "jupyterhub", "--version")
    assert r.stdout.strip()
    info = images.inspect(built.ref)
    assert info["Config"]["User"] == "1000"
    assert info["Config"]["Labels"]["org.afhub.lock-sha256"] == images.sha256_file(
        REPO / "images/hub/requirements.txt"
    )
