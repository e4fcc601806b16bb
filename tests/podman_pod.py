"""Run a rendered Kubernetes pod with podman: the one fake boundary of tests/test_images.py.

No Kubernetes API server can run here, so :class:`PodmanPodSpawner` is afhub's real
``KubeProfileSpawner`` whose pod, once KubeSpawner's own ``get_pod_manifest()`` has rendered it,
is started by podman instead of the API server: the notebook container's image, command, args,
environment, user and group ids and volume mounts, as the pod says, with ``--network host``
(the pod network of a one-node cluster). A ``persistentVolumeClaim`` volume is a directory
``<volume_root>/<claim name>`` here, owned by the pod's user and fsGroup as a provisioner would
leave it. Values that are secrets (the server's API token) reach podman through its environment
(``--env NAME``), never its argv.

``python tests/podman_pod.py <afhub up arguments>`` runs ``afhub up`` with this spawner class.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "images"))

import build as images  # noqa: E402  (images/build.py: the engine's configuration)


def podman_run_args(pod: dict, *, name: str, volume_root: str) -> tuple[list[str], dict]:
    """``(argv after 'podman', environment additions)`` that run ``pod``'s notebook container.

    Pure: a serialized pod (``ApiClient.sanitize_for_serialization``) in, a command out. Fails
    with ValueError on what cannot run here (other volume types, several containers).
    """
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "notebook"]
    psc = spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    argv = ["run", "--detach", "--name", name, "--network", "host", "--pull", "never"]
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    if uid is not None:
        argv += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    if psc.get("fsGroup") is not None:
        argv += ["--group-add", str(psc["fsGroup"])]
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" not in e:
            raise ValueError(f"env {e['name']}: only literal values run here")
        env[e["name"]] = e["value"]
        argv += ["--env", e["name"]]  # the value comes from podman's environment
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        v = volumes[m["name"]]
        if "persistentVolumeClaim" not in v:
            raise ValueError(f"volume {m['name']}: only persistentVolumeClaim volumes run here")
        host = os.path.join(volume_root, v["persistentVolumeClaim"]["claimName"])
        argv += ["--volume", f"{host}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
    if container.get("workingDir"):
        argv += ["--workdir", container["workingDir"]]
    if container.get("command"):
        argv += ["--entrypoint", container["command"][0]]
        args = [*container["command"][1:], *(container.get("args") or [])]
    else:
        args = list(container.get("args") or [])
    return [*argv, container["image"], *args], env


def claims(pod: dict) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if "persistentVolumeClaim" in v
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawner_class():
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from traitlets import Unicode

    class PodmanPodSpawner(KubeProfileSpawner):
        """KubeProfileSpawner whose rendered pods podman runs (see the module docstring)."""

        volume_root = Unicode(config=True, help="Host directory holding one dir per claim.")

        def __init__(self, *args, **kwargs):
            kwargs["_mock"] = True  # no API client, no reflectors: podman is the cluster
            super().__init__(*args, **kwargs)

        @property
        def container_name(self) -> str:
            return f"afhub-test-{self.pod_name}"

        async def _podman(self, *args: str, env: dict | None = None, check: bool = True):
            proc = await asyncio.create_subprocess_exec(
                "podman",
                *args,
                env={**images.engine_env(), **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if check and proc.returncode:
                raise RuntimeError(f"podman {args[0]}: {err.decode(errors='replace')[-2000:]}")
            return proc.returncode, out.decode()

        async def _start(self):
            from kubernetes_asyncio.client import ApiClient

            await self.load_user_options()
            self.port = _free_port()
            async with ApiClient() as api:
                pod = api.sanitize_for_serialization(await self.get_pod_manifest())
            psc = pod["spec"].get("securityContext") or {}
            for claim in claims(pod):
                path = os.path.join(self.volume_root, claim)
                os.makedirs(path, exist_ok=True)
                os.chown(path, psc.get("runAsUser", 1000), psc.get("fsGroup", 100))
            await self._podman("rm", "--force", "--ignore", self.container_name, check=False)
            argv, env = podman_run_args(
                pod, name=self.container_name, volume_root=self.volume_root
            )
            self.log.info("podman %s", " ".join(argv[: argv.index(pod["spec"]["containers"][0]["image"]) + 1]))
            await self._podman(*argv, env=env)
            return f"http://127.0.0.1:{self.port}"

        async def poll(self):
            code, out = await self._podman(
                "inspect", "--format", "{{.State.Running}}", self.container_name, check=False
            )
            return None if code == 0 and out.strip() == "true" else 1

        async def stop(self, now=False):
            await self._podman("rm", "--force", "--ignore", "--time", "5", self.container_name)

    return PodmanPodSpawner


def __getattr__(name):  # the hub imports podman_pod.PodmanPodSpawner
    if name == "PodmanPodSpawner":
        return _spawner_class()
    raise AttributeError(name)


HUB_CONFIG = """
# tests/podman_pod.py: the rendered pods run with podman
c.JupyterHub.spawner_class = "podman_pod.PodmanPodSpawner"
c.PodmanPodSpawner.volume_root = %r
c.KubeSpawner.ip = "127.0.0.1"
c.KubeSpawner.events_enabled = False
"""


# KubeSpawner loads a kubeconfig even when it never calls the API: one whose server is never
# contacted (as in tests/test_kubernetes_profiles.py)
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: not-a-secret}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def main(argv: list[str]) -> int:
    from afhub.hub_config import cli, runner

    volume_root = os.environ["AFHUB_TEST_VOLUME_ROOT"]
    kubeconfig = os.path.join(os.path.dirname(volume_root), "kubeconfig")
    with open(kubeconfig, "w") as f:
        f.write(KUBECONFIG)
    os.environ["KUBECONFIG"] = kubeconfig
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p
    )
    extra = (HUB_CONFIG % volume_root).replace("{", "{{").replace("}", "}}")
    runner.HUB_CONFIG_TEMPLATE += extra
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
