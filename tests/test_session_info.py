"""What the sidebar's Session section reads: ``afhub.server_ext.session`` (pure parts)."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from afhub.server_ext.session import parse_nvidia_smi, query_gpus, session_model


@pytest.mark.parametrize(
    "text, gpus",
    [
        ("", []),
        (
            "0, NVIDIA A100-SXM4-40GB, 40960\n1, NVIDIA A100-SXM4-40GB, 40960\n",
            [
                {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "memory_total_mib": 40960},
                {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "memory_total_mib": 40960},
            ],
        ),
        ("0, Tesla T4, [N/A]\n", [{"index": 0, "name": "Tesla T4", "memory_total_mib": None}]),
        # a warning line and a blank line are skipped; a comma in the name is kept
        (
            "WARNING: infoROM is corrupted at gpu 0000:00:04.0\n\n3, Odd, GPU, 1024\n",
            [{"index": 3, "name": "Odd, GPU", "memory_total_mib": 1024}],
        ),
        ("No devices were found\n", []),
        ("0, , 100\n", []),
    ],
)
def test_parse_nvidia_smi(text, gpus):
    assert parse_nvidia_smi(text) == gpus


A100 = {"index": 0, "name": "NVIDIA A100", "memory_total_mib": 40960}
T4 = {"index": 1, "name": "Tesla T4", "memory_total_mib": 15360}

HUB_ENV = {
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_BASE_URL": "/af/",
    "JUPYTERHUB_SERVICE_PREFIX": "/af/user/carol/",
    "JUPYTERHUB_USER": "carol",
    "AFHUB_PROFILE": "gpu",
    "AFHUB_PROFILE_DISPLAY_NAME": "GPU (A100)",
    "AFHUB_IMAGE": "ghcr.io/af/analysis:1",
    "AFHUB_ARCH": "x86_64",
    "AFHUB_GPU": "1",
    "AFHUB_GPU_TYPE": "a100",
    "AFHUB_CPU": "4",
    "AFHUB_MEMORY": "8G",
    "CPU_LIMIT": "4.0",
    "MEM_LIMIT": "8589934592",
    "CUDA_VISIBLE_DEVICES": "0",
}


def model(environ, devices=(), error=None):
    return session_model(
        environ=environ,
        machine="x86_64",
        cpus_available=2,
        gpu_devices=list(devices),
        gpu_error=error,
    )


def test_session_model_under_the_hub():
    m = model(HUB_ENV, [A100, T4])
    assert m == {
        "user": "carol",
        "server_name": "",
        "profile": "gpu",
        "profile_display_name": "GPU (A100)",
        "image": "ghcr.io/af/analysis:1",
        "arch": "x86_64",
        "machine": "x86_64",
        "cpu": {"limit": 4, "guarantee": None, "requested": "4", "available": 2},
        "memory": {"limit": 8589934592, "guarantee": None, "requested": "8G"},
        "gpus": {
            "requested": 1,
            "type": "a100",
            "visible": "0",
            "devices": [A100],  # only what CUDA_VISIBLE_DEVICES lets this server use
            "error": None,
        },
        "hub_login_url": "/af/hub/login?next=/af/user/carol/",
        "hub_home_url": "/af/hub/home",
    }


@pytest.mark.parametrize(
    "visible, names",
    [
        (None, ["NVIDIA A100", "Tesla T4"]),
        ("1", ["Tesla T4"]),
        ("", []),
        ("-1", []),
        ("GPU-abc", ["NVIDIA A100", "Tesla T4"]),
    ],
)
def test_visible_devices(visible, names):
    env = {k: v for k, v in HUB_ENV.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    assert [d["name"] for d in model(env, [A100, T4])["gpus"]["devices"]] == names


def test_outside_the_hub_and_bad_numbers():
    m = model({"AFHUB_GPU": "two", "CPU_LIMIT": "lots"})
    assert m["hub_login_url"] is None and m["hub_home_url"] is None
    assert m["gpus"]["requested"] == 0
    assert m["cpu"]["limit"] is None
    assert m["profile"] is None


def _fake_smi(tmp_path, script: str) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_query_gpus_runs_the_command(tmp_path):
    """The query and its parsing, with a stand-in nvidia-smi (no GPU on this machine)."""
    exe = _fake_smi(tmp_path, 'echo "$@" > "$(dirname "$0")/args"; echo "0, Tesla T4, 15360"\n')
    gpus, error = asyncio.run(query_gpus(exe))
    assert (gpus, error) == ([{"index": 0, "name": "Tesla T4", "memory_total_mib": 15360}], None)
    args = (tmp_path / "args").read_text().split()
    assert args == ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]


def test_query_gpus_failure_is_a_message(tmp_path):
    exe = _fake_smi(
        tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate" >&2; exit 9\n'
    )
    gpus, error = asyncio.run(query_gpus(exe))
    assert gpus == []
    assert error == "nvidia-smi failed: NVIDIA-SMI has failed because it could not communicate"
    missing = asyncio.run(query_gpus(os.fspath(tmp_path / "absent")))
    assert missing[0] == [] and missing[1].startswith("cannot run nvidia-smi")
