"""Dask on Slurm: the job scripts the gateway submits, from the values file's ``dask.slurm``.

The pure parts of the Slurm backend (the whole gateway on a real Slurm is
``test_dask_slurm_integration.py``): the sbatch arguments (partition, account, qos, cores,
memory, GPUs from the user's options), the job scripts (setup lines, then the scheduler or
worker of the user's environment prefix), the exported environment (names only in argv; no hub
token, no cluster token in argv or script), which account a cluster runs as and which
launcher sudo runs.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from types import SimpleNamespace

import pytest
from afhub.hub_config.dask_section import owner_accounts
from afhub.hub_config.gateway.options import cluster_options
from afhub.hub_config.gateway.process import gateway_config
from afhub.hub_config.gateway.slurm import (
    ROUTE_PROBE,
    AfhubSlurmBackend,
    route_probe,
    slurm_job_args,
    slurm_job_script,
)
from afhub.hub_config.values import load
from dask_gateway_server.backends.jobqueue.slurm import SlurmClusterConfig
from dask_gateway_server.models import User
from slurm import require

PREFIX = "/cvmfs/sw.example.org/envs/analysis"


@pytest.fixture
def settings(tmp_path):
    values = load(
        {
            "images": [{"name": "analysis", "image": "a:1", "local_prefix": PREFIX}],
            "backend": {"type": "slurm"},
            "dask": {
                "enabled": True,
                "max_worker_cores": 4,
                "slurm": {
                    "partition": "interactive",
                    "account": "cms",
                    "qos": "short",
                    "setup": "module load apptainer",
                    "staging_directory": str(tmp_path) + "/{username}/dg",
                },
            },
        }
    )
    return {
        "dask": values["dask"],
        "backend": "slurm",
        "images": values["images"],
        "default_prefix": "/opt/afhub/envs/analysis",
        "data_dir": str(tmp_path),
        "port": 1,
        "scheduler_port": 2,
        "prefix": "/services/dask-gateway",
        "server_check_interval": 0,
        # as gateway_settings gives them for backend.type slurm: site accounts named as the hub
        # users (root exists on this machine)
        "accounts": "system",
        "account_prefix": "",
    }


# an ordinary account of this run (clusters never run as root or a system account)
OWNER = f"dgo{os.getpid()}"


@pytest.fixture(scope="module", autouse=True)
def owner_account():
    """:data:`OWNER`'s system account, made for this module when the tests run as root."""
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["useradd", "--shell", "/usr/sbin/nologin", OWNER], check=True)
    yield
    if os.geteuid() == 0:
        subprocess.run(["userdel", OWNER], capture_output=True)
        subprocess.run(["groupdel", OWNER], capture_output=True)


def submissions(settings, options: dict) -> list[tuple[list[str], dict, str]]:
    """``(sbatch argv, environment, script)`` of the scheduler, then of a worker, of a cluster
    of :data:`OWNER` (an ordinary account on this machine) made with ``options``."""
    import pwd

    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        pytest.skip(f"no account {OWNER} (made by the tests when run as root)")
    config = gateway_config(settings)
    assert config.AfhubDaskGateway.backend_class is AfhubSlurmBackend
    backend = AfhubSlurmBackend(config=config, api_url="http://10.0.0.1:8000/api")
    user = User(OWNER, groups=["physicists"])
    opts = cluster_options(settings)(user)
    conf = opts.get_configuration(opts.parse_options(options), user)
    cluster = SimpleNamespace(
        name="c0ffee",
        username=OWNER,
        token="CLUSTER-TOKEN-VALUE",
        config=SlurmClusterConfig(config=config, **conf),
        scheduler_address="tls://10.0.0.2:8786",
        state={},
    )
    return [
        backend.get_submit_cmd_env_stdin(cluster, worker)
        for worker in (None, SimpleNamespace(name="w1"))
    ]


def job(settings, worker: bool):
    return submissions(settings, {"worker_cores": 2, "worker_memory": 3})[worker]


PRELOAD = ["--preload", "afhub.server_ext.dask_preload"]  # the dashboard guard


def dask_call(line: str, program: str) -> tuple[list[str], str, list[str]]:
    """A job script's command line as (what runs before ``program``, the dask subcommand, its
    arguments); the arguments always load the dashboard guard."""
    argv = shlex.split(line)
    at = argv.index(program)
    before, sub, args = argv[:at], argv[at + 1], argv[at + 2 :]
    i = args.index("--preload")
    assert args[i : i + 2] == PRELOAD, args
    return before, sub, args[:i] + args[i + 2 :]


@pytest.mark.parametrize("worker", [False, True], ids=["scheduler", "worker"])
def test_job_scripts(settings, worker, tmp_path):
    cmd, env, script = job(settings, worker)
    assert cmd[0].endswith("sbatch")
    for arg in ("--partition=interactive", "--account=cms", "--qos=short"):
        assert arg in cmd
    staging = f"{tmp_path}/{OWNER}/dg/c0ffee"
    assert f"--chdir={staging}" in cmd
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/sh", "module load apptainer"]
    before, sub, args = dask_call(lines[-1], f"{PREFIX}/bin/dask")
    assert before == []
    if worker:
        assert len(lines) == 3
        assert "--cpus-per-task=2" in cmd and "--mem=3072M" in cmd
        assert sub == "worker" and args[0] == "tls://10.0.0.2:8786"
        assert "--nthreads 2" in lines[2] and f"--memory-limit {3 * 2**30}" in lines[2]
    else:
        # listen_ip 0.0.0.0, the gateway on another host (api_url): the scheduler listens on,
        # and reports, the node's address toward the gateway, found by the environment's Python
        assert sub == "scheduler" and len(lines) == 4
        assert lines[2].startswith(f"AFHUB_NODE_IP=$({PREFIX}/bin/python -c ")
        assert lines[2].endswith(" 10.0.0.1) || AFHUB_NODE_IP=0.0.0.0")
        assert '--host "$AFHUB_NODE_IP" ' in lines[3]
        assert '--dashboard-address "$AFHUB_NODE_IP":0 ' in lines[3]
        assert "0.0.0.0" not in lines[3]
    # secrets travel in the job's environment (exported by name), never in argv or the script
    export = next(a for a in cmd if a.startswith("--export="))
    assert "DASK_GATEWAY_API_TOKEN" in export.split("=", 1)[1].split(",")
    assert env["DASK_GATEWAY_API_TOKEN"] == "CLUSTER-TOKEN-VALUE"
    assert "CLUSTER-TOKEN-VALUE" not in " ".join(cmd) + script
    assert not any(k.startswith("JUPYTERHUB") for k in env)
    assert env["PATH"].startswith(f"{PREFIX}/bin:")


@pytest.mark.parametrize("dirname", ["my envs", "envs;touch pwned;x"], ids=["space", "semicolon"])
@pytest.mark.parametrize("worker", [False, True], ids=["scheduler", "worker"])
def test_job_scripts_run_an_operators_path_with_a_space_or_semicolon_as_one_command(
    settings, tmp_path, dirname, worker
):
    """The job script, run by a real shell: the environment prefix stays one argument (quoted),
    the intended ``dask`` gets the gateway's arguments, and nothing of the path runs as shell."""
    import shlex
    import subprocess

    prefix = tmp_path / dirname / "analysis"
    (prefix / "bin").mkdir(parents=True)
    argv_file = tmp_path / "argv.json"
    dask = prefix / "bin" / "dask"
    dask.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv, open({str(argv_file)!r}, 'w'))\n"
    )
    dask.chmod(0o755)
    (prefix / "bin" / "python").symlink_to(sys.executable)  # the scheduler's address probe
    settings["images"][0]["local_prefix"] = str(prefix)
    settings["dask"]["slurm"]["setup"] = "true"
    _, _, script = job(settings, worker)
    cwd = tmp_path / "job"
    cwd.mkdir()
    done = subprocess.run(["/bin/sh", "-c", script], cwd=cwd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (cwd / "pwned").exists() and list(cwd.iterdir()) == []
    argv = json.loads(argv_file.read_text())
    assert argv[0] == str(dask)
    # what dask-gateway asked, the scheduler's wildcard as this host's address toward the
    # gateway (api_url 10.0.0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.0.0.1", 9))
            node_ip = s.getsockname()[0]
        except OSError:
            node_ip = "0.0.0.0"
    asked = shlex.split(script.splitlines()[-1].replace('"$AFHUB_NODE_IP"', node_ip))
    assert argv[1:] == asked[1:]
    assert argv[1] == ("worker" if worker else "scheduler")


def test_bind_address_and_launcher_from_values(settings):
    settings["dask"]["slurm"]["listen_ip"] = "127.0.0.1"
    config = gateway_config(settings)
    backend = AfhubSlurmBackend(config=config, api_url="http://10.0.0.1:8000/api")
    assert backend.dask_gateway_jobqueue_launcher == (
        "/opt/afhub/envs/analysis/bin/dask-gateway-jobqueue-launcher"
    )
    cmd, _, script = job(settings, worker=False)
    assert "--host 127.0.0.1 " in script and "--dashboard-address 127.0.0.1:0" in script
    settings["dask"]["slurm"]["launcher"] = "/usr/local/bin/dask-gateway-jobqueue-launcher"
    backend = AfhubSlurmBackend(config=gateway_config(settings), api_url="http://x/api")
    assert backend.dask_gateway_jobqueue_launcher == settings["dask"]["slurm"]["launcher"]


def test_the_schedulers_address_probe_runs_the_python_beside_dask():
    """The node's address toward the gateway is found by the cluster environment's Python:
    the prefix's, or the image's through the same ``apptainer exec``."""
    run = ["apptainer", "exec", "--bind", "/cvmfs", "docker://r/c:1"]
    assert route_probe([*run, "dask", "scheduler"], "hub.example.org") == [
        *run, "python", "-c", ROUTE_PROBE, "hub.example.org"
    ]  # fmt: skip
    assert route_probe([f"{PREFIX}/bin/dask", "scheduler"], "10.0.0.1")[:2] == [
        f"{PREFIX}/bin/python", "-c"
    ]  # fmt: skip
    # the gateway on this host (no hub.node_address): Dask's own choice, as before
    script = slurm_job_script(setup="", command=["dask", "scheduler", "--host", "0.0.0.0"])
    assert script.splitlines()[-1] == "dask scheduler --host 0.0.0.0"


def test_fractional_cores_become_whole_cpus_and_gpus_gres():
    cmd = ["sbatch", "--parsable", "--cpus-per-task=0", "--mem=1024M"]
    assert slurm_job_args(cmd, cores=0.5, gpus=0) == [
        "sbatch", "--parsable", "--cpus-per-task=1", "--mem=1024M"
    ]  # fmt: skip
    assert slurm_job_args(cmd, cores=2.5, gpus=2) == [
        "sbatch", "--gres=gpu:2", "--parsable", "--cpus-per-task=3", "--mem=1024M"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "backend, name, account",
    [
        ({"type": "local"}, "alice", "afhub-alice"),
        ({"type": "local", "local": {"account_prefix": "jh-"}}, "Alice.B", None),
        ({"type": "slurm"}, "alice", "alice"),
        ({"type": "slurm", "slurm": {"account_prefix": "hpc_"}}, "alice", "hpc_alice"),
        ({"type": "slurm"}, "a.b@example.org", None),
        ({"type": "htcondor", "htcondor": {"account_prefix": "x"}}, "bob", "xbob"),
    ],
)
def test_clusters_run_as_the_account_servers_run_as(settings, backend, name, account):
    """The gateway names the owner's account exactly as the backend's spawner does."""
    from afhub.spawner.accounts import system_username

    owners = owner_accounts(backend)
    kind = backend["type"]
    assert owners["accounts"] == ("auto" if kind == "local" else "system")
    settings.update(owners, accounts="system")  # (auto is system for a root hub)
    got = AfhubSlurmBackend(config=gateway_config(settings)).account(name)
    prefix = (backend.get(kind) or {}).get("account_prefix", "afhub-" if kind == "local" else "")
    assert got == system_username(prefix, name)  # what the local and batch spawners use
    if account:
        assert got == account


@pytest.mark.parametrize(
    "gateway_ip, listen, reach",
    [
        (None, "127.0.0.1", "127.0.0.1"),  # jobs and servers on the gateway's host only
        ("10.0.0.5", "10.0.0.5", "10.0.0.5"),
        ("0.0.0.0", "0.0.0.0", socket.getfqdn()),
    ],
)
def test_gateway_ip_is_where_jobs_and_servers_reach_the_gateway(gateway_ip, listen, reach):
    """The hub's configuration (service URL, the servers' DASK_GATEWAY__PROXY_ADDRESS) and the
    gateway's (its HTTP and TLS proxies, the API URL schedulers are given) agree."""
    import json

    from afhub.hub_config import apply
    from dask_gateway_server.proxy import Proxy

    slurm = {"gateway_ip": gateway_ip} if gateway_ip else {}
    values = {
        "hub": {"port": 8000},
        "auth": {"provider": "dev"},
        "backend": {"type": "slurm"},
        "dask": {"enabled": True, "port": 8123, "scheduler_port": 8124, "slurm": slurm},
    }
    plan = apply.build(values, data_dir="/d")
    (gw,) = [s for s in plan.get("JupyterHub", "services") if s["name"] == "dask-gateway"]
    hub_side = "127.0.0.1" if listen == "0.0.0.0" else listen
    assert gw["url"] == f"http://{hub_side}:8123"
    env = plan.get("Spawner", "environment")
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == f"gateway://{reach}:8124"
    config = gateway_config(json.loads(gw["environment"]["AFHUB_DASK_SETTINGS"]))
    assert (config.Proxy.address, config.Proxy.tcp_address) == (f"{listen}:8123", f"{listen}:8124")
    backend = AfhubSlurmBackend(config=config)
    backend.proxy = Proxy(config=config)
    assert backend.api_url == f"http://{reach}:8123/services/dask-gateway/api"


@pytest.mark.parametrize("servers_outlive_hub, stop", [(False, True), (True, False)])
def test_clusters_stop_with_the_gateway_unless_servers_outlive_the_hub(
    settings, servers_outlive_hub, stop
):
    settings["servers_outlive_hub"] = servers_outlive_hub
    backend = AfhubSlurmBackend(config=gateway_config(settings))
    assert backend.stop_clusters_on_shutdown is stop
    for kind, outlive in (("local", False), ("kubernetes", False), ("slurm", True)):
        assert owner_accounts({"type": kind})["servers_outlive_hub"] is outlive


def test_missing_launcher_or_account_is_refused_before_anything_is_submitted(settings, tmp_path):
    import asyncio

    from dask_gateway_server.backends.base import PublicException

    settings["dask"]["slurm"]["launcher"] = str(tmp_path / "no-launcher")
    backend = AfhubSlurmBackend(config=gateway_config(settings))
    with pytest.raises(PublicException, match=r"launcher is missing \(dask.slurm.launcher\)"):
        asyncio.run(backend.start_cluster(User("root", groups=[]), {}))
    launcher = tmp_path / "launcher"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    settings["dask"]["slurm"]["launcher"] = str(launcher)
    settings["account_prefix"] = "afhub-nosuch-"
    backend = AfhubSlurmBackend(config=gateway_config(settings))
    with pytest.raises(PublicException, match="no system account 'afhub-nosuch-root'"):
        asyncio.run(backend.start_cluster(User("root", groups=[]), {}))


def test_without_per_user_accounts_the_launcher_runs_as_the_gateway_with_umask_077(
    settings, tmp_path
):
    """A hub serving its own account (no per-user accounts): no sudo, the same private files."""
    import asyncio
    import stat

    launcher = server_launcher()
    settings["accounts"] = "single-user"
    settings["dask"]["slurm"]["launcher"] = launcher
    backend = AfhubSlurmBackend(config=gateway_config(settings))
    assert not backend.run_as_owner
    staging = tmp_path / "staging" / "c1"
    code, out, _ = asyncio.run(
        backend.do_as_user(
            "alice",
            "start",
            cmd=["/bin/sh", "-c", "umask; id -u"],
            env={"PATH": "/usr/bin:/bin"},
            stdin=None,
            staging_dir=str(staging),
            files={"dask.pem": "KEY"},
        )
    )
    assert code == 0 and out.split() == ["0077", str(os.getuid())]
    assert stat.S_IMODE(os.stat(staging).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(staging / "dask.pem").st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another account needs root")
def test_any_account_can_run_the_server_environments_launcher():
    """sudo runs it as each user: it must be in the world-executable server environment."""
    import json
    import subprocess

    from afhub.spawner.local import server_environment

    launcher = os.path.join(server_environment(), "bin", "dask-gateway-jobqueue-launcher")
    out = subprocess.run(
        ["runuser", "-u", "nobody", "--", launcher],
        input='{"action": "none"}', capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": False, "error": "Valid actions are 'start' and 'stop'"}


def settings_from(values: dict) -> dict:
    """The gateway's settings as the hub hands them over (``afhub.hub_config.dask_section.build``)."""
    import json

    from afhub.hub_config import apply

    plan = apply.build(values, data_dir="/d")
    (gw,) = [s for s in plan.get("JupyterHub", "services") if s["name"] == "dask-gateway"]
    return json.loads(gw["environment"]["AFHUB_DASK_SETTINGS"])


def batch_values(**slurm) -> dict:
    return {
        "hub": {"port": 8000},
        "auth": {"provider": "dev"},
        "backend": {"type": "slurm", "slurm": slurm},
        "images": [
            {"name": "coffea", "image": "registry.example.org/coffea:2026.1"},
            {"name": "cvmfs-env", "image": "x:1", "local_prefix": PREFIX},
        ],
        "dask": {"enabled": True, "max_worker_gpus": 1, "port": 8123, "scheduler_port": 8124},
    }


def scripts(settings, options: dict) -> list[tuple[list[str], dict, str]]:
    """:func:`submissions` with each script's command line only."""
    return [
        (cmd, env, script.splitlines()[-1]) for cmd, env, script in submissions(settings, options)
    ]


def test_images_run_in_apptainer_like_the_servers_with_the_batch_backend():
    settings = settings_from(
        batch_values(apptainer={"binds": ["/cvmfs", "/sdf/home"], "extra_args": ["--cleanenv"]})
    )
    run = "apptainer exec --bind /cvmfs --bind /sdf/home --cleanenv"
    image = "docker://registry.example.org/coffea:2026.1"
    (_, env, sched), (wcmd, _, worker) = scripts(settings, {"image": "coffea", "worker_gpus": 1})
    before, sub, args = dask_call(sched, "dask")
    assert before == [*shlex.split(run), image] and sub == "scheduler"
    assert args[:2] == ["--protocol", "tls"]
    before, sub, args = dask_call(worker, "dask")
    assert before == [*shlex.split(run.replace("exec", "exec --nv")), image]
    assert sub == "worker" and args[0] == "tls://10.0.0.2:8786"
    assert "--gres=gpu:1" in wcmd
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"  # finds apptainer; not the hub's
    # an image with a local_prefix (a shared environment) runs that prefix, no container
    (_, _, sched), (_, _, worker) = scripts(settings, {"image": "cvmfs-env"})
    assert dask_call(sched, f"{PREFIX}/bin/dask")[:2] == ([], "scheduler")
    assert dask_call(worker, f"{PREFIX}/bin/dask")[:2] == ([], "worker")


def test_without_an_image_clusters_run_the_batch_servers_environment():
    values = batch_values(environment="/sdf/sw/afhub/envs/analysis")
    values["images"] = []
    settings = settings_from(values)
    assert settings["default_prefix"] == "/sdf/sw/afhub/envs/analysis"
    (_, _, sched), (_, _, worker) = scripts(settings, {})
    assert sched.startswith("/sdf/sw/afhub/envs/analysis/bin/dask scheduler ")
    assert worker.startswith("/sdf/sw/afhub/envs/analysis/bin/dask worker ")


def server_launcher() -> str:
    prefix = os.environ.get("AFHUB_SERVER_ENV") or "/opt/afhub/envs/analysis"
    launcher = os.path.join(prefix, "bin", "dask-gateway-jobqueue-launcher")
    require(None if os.path.exists(launcher) else f"no {launcher} (`make server-env`)")
    return launcher


def test_what_slurm_cannot_run_is_refused_with_its_reason_naming_the_options(settings, tmp_path):
    """``sbatch --test-only`` of the worker's shape before anything is created or submitted."""
    import asyncio

    from dask_gateway_server.backends.base import PublicException

    sbatch = tmp_path / "sbatch"
    log = tmp_path / "argv"
    sbatch.write_text(
        f'#!/bin/sh\necho "$@" > {log}\n'
        'echo "allocation failure: Requested node configuration is not available" >&2\nexit 1\n'
    )
    sbatch.chmod(0o755)
    settings.update(accounts="single-user")  # the launcher runs as this account, no sudo
    (tmp_path / ".afhub-single-user").write_text("root\n")  # root is the user it serves
    settings["home_root"] = str(tmp_path)
    settings["dask"]["slurm"]["launcher"] = server_launcher()
    backend = AfhubSlurmBackend(config=gateway_config(settings), submit_command=str(sbatch))
    user = User("root", groups=["physicists"])
    with pytest.raises(PublicException) as e:
        asyncio.run(
            backend.process_cluster_options(user, {"worker_cores": 2.5, "worker_memory": 3})
        )
    assert str(e.value) == (  # (cores rounded up to whole CPUs)
        "Slurm cannot run workers of worker_cores 3, worker_memory 3 GiB in partition "
        "interactive: Requested node configuration is not available"
    )
    assert log.read_text().split() == [
        "--test-only", "--job-name=dask-gateway", "--partition=interactive", "--account=cms",
        "--qos=short", "--cpus-per-task=3", "--mem=3072M",
    ]  # fmt: skip
    sbatch.write_text("#!/bin/sh\necho 'sbatch: Job 3 to start at ...' >&2\n")  # Slurm agrees
    options, config = asyncio.run(backend.process_cluster_options(user, {"worker_memory": 3}))
    assert config.worker_memory == 3 * 2**30


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_fractional_worker_cores_become_whole_cores(settings, backend):
    """dask-gateway's ClusterConfig counts whole cores: 0.5 is a valid option (the limits allow
    0.25 and up) and becomes one core, where it was a TraitError."""
    from dask_gateway_server.backends.base import ClusterConfig

    settings["backend"] = backend
    user = User("root", groups=[])
    opts = cluster_options(settings)(user)
    for asked, cores in ((0.5, 1), (1, 1), (2.5, 3)):
        conf = opts.get_configuration(opts.parse_options({"worker_cores": asked}), user)
        assert ClusterConfig(**conf).worker_cores == cores


def test_scheduler_job_size_from_values(settings):
    settings["dask"]["slurm"].update(scheduler_cores=2, scheduler_memory=0.5)
    (cmd, _, _), _ = scripts(settings, {})
    assert "--cpus-per-task=2" in cmd and "--mem=512M" in cmd
