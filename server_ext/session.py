"""What this user server runs on, for the sidebar's Session section: ``afhub/api/session``.

- ``GET afhub/api/session``  profile, image, architecture, CPU/memory limits, GPUs (model and
  memory from ``nvidia-smi`` when the server can run it), user, and the hub's login URL.

Pure functions build the model from their inputs (``parse_nvidia_smi``, ``session_model``);
``SessionHandler`` gathers the inputs (environment, ``platform.machine()``, CPU affinity, one
``nvidia-smi`` call per server lifetime). The hub describes the profile through the session
variables of the hub<->server contract (``contract.SESSION``) and JupyterHub's own
``CPU_LIMIT``/``MEM_LIMIT``/``*_GUARANTEE``/``JUPYTERHUB_*`` variables. Nothing secret lives here.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from .contract import SESSION
from .handlers import AfhubAPIHandler

#: ``nvidia-smi`` query: one CSV line per GPU, no header, memory in MiB.
NVIDIA_SMI_ARGS = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT = 10.0


def parse_nvidia_smi(text: str) -> list[dict]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits``.

    ``"0, NVIDIA A100-SXM4-40GB, 40960"`` -> ``[{"index": 0, "name": "NVIDIA A100-SXM4-40GB",
    "memory_total_mib": 40960}]``. Memory ``[N/A]`` (or not a number) gives ``None``; lines that
    are not ``index, name, memory`` (warnings, blank lines) are skipped. A name containing commas
    keeps them (the first field is the index, the last the memory).
    """
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        index, name, memory = int(parts[0]), ", ".join(parts[1:-1]), parts[-1]
        if not name:
            continue
        try:
            mib: int | None = int(float(memory))
        except ValueError:
            mib = None
        gpus.append({"index": index, "name": name, "memory_total_mib": mib})
    return gpus


def _number(value: str | None) -> float | int | None:
    if value is None or not value.strip():
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return int(x) if x.is_integer() else x


def session_model(
    *,
    environ: dict,
    machine: str,
    cpus_available: int | None,
    gpu_devices: list[dict],
    gpu_error: str | None,
) -> dict:
    """REST model of ``GET afhub/api/session`` from the server's environment and facts."""
    base_url = environ.get("JUPYTERHUB_BASE_URL") or "/"
    prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX")
    in_hub = bool(environ.get("JUPYTERHUB_API_URL"))
    login = None
    if in_hub:
        login = url_path_join(base_url, "hub", "login")
        if prefix:
            from urllib.parse import quote

            login += "?next=" + quote(prefix, safe="/")
    try:
        requested_gpus = int(environ.get(SESSION["gpu_count"]) or 0)
    except ValueError:
        requested_gpus = 0
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    devices = gpu_devices
    if visible is not None and devices:  # show only what this server may use
        wanted = {v.strip() for v in visible.split(",") if v.strip()}
        if wanted and all(v.isdigit() for v in wanted):
            devices = [d for d in devices if str(d["index"]) in wanted]
        elif visible.strip() in ("", "-1", "none", "NoDevFiles"):
            devices = []
    return {
        "user": environ.get("JUPYTERHUB_USER"),
        "server_name": environ.get("JUPYTERHUB_SERVER_NAME", ""),
        "profile": environ.get(SESSION["profile"]),
        "profile_display_name": environ.get(SESSION["display_name"]),
        "image": environ.get(SESSION["image"]),
        "arch": environ.get(SESSION["arch"]),
        "machine": machine,
        "cpu": {
            "limit": _number(environ.get("CPU_LIMIT")),
            "guarantee": _number(environ.get("CPU_GUARANTEE")),
            "requested": environ.get(SESSION["cpu"]),
            "available": cpus_available,
        },
        "memory": {
            "limit": _number(environ.get("MEM_LIMIT")),
            "guarantee": _number(environ.get("MEM_GUARANTEE")),
            "requested": environ.get(SESSION["memory"]),
        },
        "gpus": {
            "requested": requested_gpus,
            "type": environ.get(SESSION["gpu_type"]),
            "visible": visible,
            "devices": devices,
            "error": gpu_error,
        },
        "hub_login_url": login,
        "hub_home_url": url_path_join(base_url, "hub", "home") if in_hub else None,
    }


async def query_gpus(command: str | None = None) -> tuple[list[dict], str | None]:
    """(GPUs, error) from one ``nvidia-smi`` run; ``([], None)`` when there is no nvidia-smi."""
    exe = command or shutil.which("nvidia-smi")
    if not exe:
        return [], None
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            *NVIDIA_SMI_ARGS,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        return [], f"cannot run nvidia-smi: {e.strerror}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.communicate()
        return [], f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT:g} s"
    if proc.returncode != 0:
        first = (err or out or b"").decode(errors="replace").strip().splitlines()
        return [], f"nvidia-smi failed: {first[0] if first else f'exit {proc.returncode}'}"
    return parse_nvidia_smi(out.decode(errors="replace")), None


def _cpus_available() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


class SessionHandler(AfhubAPIHandler):
    auth_resource = "server"

    @tornado.web.authenticated
    @authorized
    async def get(self):
        gpus = self.settings.get("afhub_gpus")
        if gpus is None:  # once per server: GPUs do not come and go under a running server
            gpus = self.settings["afhub_gpus"] = await query_gpus()
        devices, error = gpus
        self.write_json(
            session_model(
                environ=dict(os.environ),
                machine=platform.machine(),
                cpus_available=_cpus_available(),
                gpu_devices=devices,
                gpu_error=error,
            )
        )


def setup_session_handlers(web_app) -> None:
    route = url_path_join(web_app.settings["base_url"], "afhub", "api", "session")
    web_app.add_handlers(".*$", [(route, SessionHandler)])
