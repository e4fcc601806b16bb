"""Kubernetes backend: every example profile rendered through KubeSpawner's own pod builder.

No Kubernetes API server can run here, so the one fake boundary is the cluster itself:
``KubeProfileSpawner(_mock=True)`` with a KUBECONFIG whose server (https://127.0.0.1:1) is never
contacted. The pod comes from KubeSpawner's real ``get_pod_manifest()`` and is validated strictly
against the Kubernetes 1.33 schemas with ``kubernetes-validate``.
"""

from __future__ import annotations

import itertools
import os
from importlib import resources

import kubernetes_validate
import pytest
from afhub.hub_config import apply as hub_apply
from afhub.hub_config.values import load_file
from afhub.spawner.profiles import Catalogue
from afhub.spawner.translations.kubernetes import kube_config
from traitlets.config import Config

EXAMPLE = resources.files("afhub.hub_config").joinpath("examples/kubernetes.yaml")
ALL_GROUPS = ["af-users", "af-gpu", "af-gpu-a100", "image-builders"]
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: not-a-secret}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture(scope="module")
def example():
    return load_file(str(EXAMPLE))


@pytest.fixture(scope="module")
def kube_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(KUBECONFIG)
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = old


def _config(values) -> Config:
    c = Config()
    plan = hub_apply.build(values, data_dir="/tmp/afhub-test-unused")
    for section in ("KubeSpawner", "KubeProfileSpawner", "ProfileSpawnerMixin"):
        for key, value in plan.sections.get(section, {}).items():
            setattr(c[section], key, value)
    return c


def _all_starts(values):
    """Every (profile, choice combination) a member of every group can start."""
    cat = Catalogue(values["images"], values["profiles"])
    for view in cat.visible(ALL_GROUPS):
        per_option = [[(o.name, c.slug) for c in o.choices] for o in view.options]
        for combo in itertools.product(*per_option):
            yield {"profile": view.slug, **dict(combo)}


async def _render(values, user_options, groups=ALL_GROUPS):
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from kubernetes_asyncio.client import ApiClient

    sp = KubeProfileSpawner(config=_config(values), _mock=True)
    resolved = sp.afhub_catalogue().resolve(groups, user_options)
    sp.afhub_apply_resolved(resolved)
    pod = await sp.get_pod_manifest()
    async with ApiClient() as api:
        return sp, api.sanitize_for_serialization(pod)


STARTS = [
    # (user_options, arch node selector, GPU limit, GPU product selector, image)
    ({"profile": "cpu"}, "amd64", None, None, "registry.af.example.org/analysis/coffea:2026.1"),
    (
        {"profile": "cpu", "image": "root"},
        "amd64",
        None,
        None,
        "registry.af.example.org/analysis/root:6.32",
    ),
    ({"profile": "arm"}, "arm64", None, None, "registry.af.example.org/analysis/coffea:2026.1"),
    (
        {"profile": "gpu-t4"},
        "amd64",
        "1",
        "Tesla-T4",
        "registry.af.example.org/analysis/coffea-cuda:2026.1",
    ),
    (
        {"profile": "gpu-t4", "gpus": "2"},
        "amd64",
        "2",
        "Tesla-T4",
        "registry.af.example.org/analysis/coffea-cuda:2026.1",
    ),
    (
        {"profile": "gpu-a100"},
        "amd64",
        "1",
        "NVIDIA-A100-SXM4-80GB",
        "registry.af.example.org/analysis/coffea-cuda:2026.1",
    ),
    # multi-arch image, no arch asked for: no arch pin, the scheduler picks
    ({"profile": "custom"}, None, None, None, "registry.af.example.org/analysis/coffea:2026.1"),
    (
        {
            "profile": "custom",
            "image--unlisted-choice": "registry.af.example.org/users/ann/my-ana:v3",
        },
        "amd64",
        None,
        None,
        "registry.af.example.org/users/ann/my-ana:v3",
    ),
]


@pytest.mark.parametrize("user_options, arch, gpus, product, image", STARTS)
async def test_example_profile_pod_scheduling(
    example, kube_config_file, user_options, arch, gpus, product, image
):
    sp, pod = await _render(example, user_options)
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "notebook")
    assert container["image"] == image
    selector = spec.get("nodeSelector") or {}
    assert selector.get("kubernetes.io/arch") == arch
    assert selector.get("nvidia.com/gpu.product") == product
    limits = container["resources"].get("limits", {})
    assert limits.get("nvidia.com/gpu") == gpus
    tolerations = spec.get("tolerations") or []
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert (gpu_toleration in tolerations) is bool(gpus)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AFHUB_PROFILE"] == user_options["profile"]
    assert env["AFHUB_IMAGE"] == image
    assert env["AFHUB_GPU"] == (gpus or "0")


def test_every_example_start_is_listed(example):
    # the table above covers the example's full choice space (plus one custom image)
    listed = [s[0] for s in STARTS if not any(k.endswith("--unlisted-choice") for k in s[0])]
    canonical = []
    cat = Catalogue(example["images"], example["profiles"])
    for uo in listed:
        canonical.append(dict(cat.resolve(ALL_GROUPS, uo).options))
    assert sorted(map(sorted, (d.items() for d in _all_starts(example)))) == sorted(
        map(sorted, (d.items() for d in canonical))
    )


@pytest.mark.parametrize("user_options", [s[0] for s in STARTS])
async def test_example_pods_validate_strictly(example, kube_config_file, user_options):
    _, pod = await _render(example, user_options)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)


async def test_resources_and_override_applied_last(example, kube_config_file):
    _, pod = await _render(example, {"profile": "gpu-a100"})
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
    assert container["resources"]["limits"]["cpu"] == 8.0
    assert container["resources"]["limits"]["memory"] == 64 * 2**30
    assert pod["metadata"]["labels"]["afhub/gpu-class"] == "a100"


async def test_each_start_is_fresh(example, kube_config_file):
    """A GPU start followed by a CPU start on the same spawner leaves no GPU traces."""
    from afhub.spawner.kubernetes import KubeProfileSpawner
    from kubernetes_asyncio.client import ApiClient

    sp = KubeProfileSpawner(config=_config(example), _mock=True)
    cat = sp.afhub_catalogue()
    sp.afhub_apply_resolved(cat.resolve(ALL_GROUPS, {"profile": "gpu-a100"}))
    await sp.get_pod_manifest()
    sp.afhub_apply_resolved(cat.resolve(ALL_GROUPS, {"profile": "arm"}))
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await sp.get_pod_manifest())
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert "afhub/gpu-class" not in pod["metadata"]["labels"]
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"].get("limits", {})
    assert not pod["spec"].get("tolerations") or all(
        t.get("key") != "nvidia.com/gpu" for t in pod["spec"]["tolerations"]
    )


KUBE_TABLE = [
    # (profile, base node selector, expected node selector, expected limits)
    ("cpu", {}, {"kubernetes.io/arch": "amd64"}, {}),
    ("cpu", {"pool": "users"}, {"pool": "users", "kubernetes.io/arch": "amd64"}, {}),
    (
        "gpu-t4",
        {"pool": "users"},
        {"pool": "users", "kubernetes.io/arch": "amd64", "nvidia.com/gpu.product": "t4"},
        {"nvidia.com/gpu": "1"},
    ),
]


@pytest.mark.parametrize("profile, base, selector, limits", KUBE_TABLE)
def test_kube_config_is_a_pure_translation(example, profile, base, selector, limits):
    r = Catalogue(example["images"], example["profiles"]).resolve(ALL_GROUPS, {"profile": profile})
    cfg = kube_config(r, node_selector=base)
    assert cfg.traits["node_selector"] == selector
    assert cfg.traits["extra_resource_limits"] == limits
    assert base == ({"pool": "users"} if base else {})  # inputs are not mutated
