"""The same ``profile_list`` on the local backend: what carries over, what is reported once.

KubeSpawner overrides describe hardware through KubeSpawner traits; the local (and batch)
backends read afhub's resources. ``spawner/portable.py`` translates the keys with a meaning
everywhere; every other key is reported once per spawner class in the hub log and by
``afhub check``, never dropped silently. The local spawner here is built outside a hub (no
database record), as another tool would.
"""

from __future__ import annotations

import logging

import pytest
from afhub.hub_config.values import validate, warnings
from afhub.spawner.portable import portable
from test_profile_list_dropin import LIST, MockObject, _user
from traitlets.config import Config

PORTABLE = [
    # (overrides, resources, traits, image, ignored)
    ([{}], {}, {}, None, ()),
    (
        [{"cpu_limit": 2, "cpu_guarantee": 0.5, "mem_limit": "2G", "mem_guarantee": 1024}],
        {"cpu": 2.0, "cpu_guarantee": 0.5, "memory": str(2 * 2**30), "memory_guarantee": "1024"},
        {},
        None,
        (),
    ),
    (
        [
            {
                "extra_resource_limits": {"nvidia.com/gpu": "2", "example.com/fpga": "1"},
                "node_selector": {
                    "kubernetes.io/arch": "arm64",
                    "nvidia.com/gpu.product": "NVIDIA-A100",
                    "cloud.google.com/gke-nodepool": "gpu",
                },
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            }
        ],
        {"arch": "aarch64", "gpu": {"count": 2, "type": "NVIDIA-A100"}},
        {},
        None,
        (
            "extra_resource_limits.example.com/fpga",
            "node_selector.cloud.google.com/gke-nodepool",
            "tolerations",
        ),
    ),
    # later overrides replace earlier ones; environment merges, None removes
    (
        [
            {"cpu_limit": 1, "environment": {"A": "1", "B": "2"}, "image": "jupyter/base:1"},
            {"cpu_limit": 4, "environment": {"B": None}, "default_url": "/lab"},
        ],
        {"cpu": 4.0},
        {"environment": {"A": "1", "B": None}, "default_url": "/lab"},
        "jupyter/base:1",
        (),
    ),
]


@pytest.mark.parametrize("overrides, resources, traits, image, ignored", PORTABLE)
def test_portable(overrides, resources, traits, image, ignored):
    got = portable(overrides)
    assert got.resources == resources
    assert got.traits == traits
    assert got.image == image
    assert sorted(got.ignored) == sorted(ignored)


GPU_LIST = LIST + [
    {
        "display_name": "GPU",
        "slug": "gpu",
        "kubespawner_override": {
            "cpu_limit": 4,
            "mem_limit": "16G",
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"cloud.google.com/gke-nodepool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    }
]


async def _local(profile_list, user_options, **config):
    from afhub.spawner.local import LocalProfileSpawner

    c = Config()
    c.KubeSpawner.profile_list = profile_list  # the z2jh-style setting, read by every backend
    for k, v in config.items():
        setattr(c.LocalProfileSpawner, k, v)
    hub = MockObject()
    hub.public_host, hub.url, hub.base_url = "", "http://127.0.0.1:8081/hub/", "/hub/"
    hub.api_url = "http://127.0.0.1:8081/hub/api"
    sp = LocalProfileSpawner(config=c, user=_user("ann"), hub=hub)
    sp.user_options = dict(user_options)
    await sp._run_apply_user_options(sp.user_options)
    return sp


async def test_local_backend_takes_the_portable_part(caplog):
    caplog.set_level(logging.WARNING)
    sp = await _local(GPU_LIST, {"profile": "gpu"}, environment={"SITE": "af"})
    assert sp.afhub_profile_source() == "profile_list"
    assert sp.cpu_limit == 4.0 and sp.mem_limit == 16 * 2**30
    env = sp.get_env()
    assert env["AFHUB_GPU"] == "1" and env["AFHUB_PROFILE"] == "gpu" and env["SITE"] == "af"
    for key in ("node_selector.cloud.google.com/gke-nodepool", "tolerations"):
        assert f"kubespawner_override {key} (profile 'gpu') does not apply" in caplog.text
    # a second start (another spawner of the same class) does not repeat the report
    await _local(GPU_LIST, {"profile": "gpu"})
    assert caplog.text.count("tolerations (profile 'gpu') does not apply") == 1


async def test_local_backend_profile_choices_and_free_text(caplog):
    caplog.set_level(logging.WARNING)
    sp = await _local(
        LIST,
        {"profile": "small-big-memory", "memory": "big", "tag--unlisted-choice": "2024"},
        environment={"PROFILE": "configured"},
    )
    assert sp.mem_limit == 8 * 2**30
    env = sp.get_env()
    assert env["BIG"] == "yes" and "PROFILE" not in env  # None removed it, as on KubeSpawner
    assert "kubespawner_override image (profile 'small-big-memory')" in caplog.text
    # the next start begins from the configured environment again
    again = await _local(LIST, {"profile": "demo-2"}, environment={"PROFILE": "configured"})
    assert again.get_env()["PROFILE"] == "configured"


async def test_local_backend_refuses_what_it_cannot_run():
    arm = [
        {
            "display_name": "ARM",
            "kubespawner_override": {"node_selector": {"kubernetes.io/arch": "arm64"}},
        }
    ]
    with pytest.raises(Exception) as info:
        await _local(arm, {})
    assert getattr(info.value, "status_code", None) == 400
    assert "aarch64 needs another backend" in str(info.value.jupyterhub_message)


def test_check_reports_inapplicable_keys_once_per_key():
    yaml_list = [
        p for p in GPU_LIST if p.get("slug") != "callables"
    ]  # a values file has no lambdas
    values = {"backend": {"type": "local"}, "profiles": yaml_list}
    assert validate(values) == []
    found = [w for w in warnings(values) if "does not apply to the local backend" in w.message]
    keys = sorted(w.message.split(" does not apply")[0] for w in found)
    assert keys == ["image", "node_selector.cloud.google.com/gke-nodepool", "tolerations"]
    image = next(w for w in found if w.message.startswith("image "))
    assert image.path == "profiles[0].profile_options.image.unlisted_choice.kubespawner_override"
    assert "and 3 more" in image.message  # base, minimal, the scipy tag
    assert warnings({**values, "backend": {"type": "kubernetes"}}) == []
