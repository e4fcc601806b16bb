"""Dask cluster options and per-group limits (pure): the tables the gateway, the notebook API
and the sidebar form all follow, plus the values -> hub config of the ``dask`` section."""

from __future__ import annotations

import json

import pytest
from afhub.hub_config import apply
from afhub.hub_config.gateway.options import offered_images
from afhub.hub_config.values import validate
from afhub.server_ext import dask_options
from afhub.server_ext.dask_options import DaskOptionError, Limits, check_options, limits_for

DASK = {
    "enabled": True,
    "max_worker_cores": 2,
    "max_worker_memory": 4,
    "max_workers": 8,
    "max_clusters": 2,
    "limits": [
        {"allowed_groups": ["gpu-users"], "max_workers": 16, "max_worker_gpus": 1},
        {"allowed_groups": ["big"], "max_worker_cores": 8, "max_workers": 4},
    ],
}
IMAGES = [
    {"name": "analysis", "image": "a:1", "display_name": "Analysis"},
    {"name": "ml", "image": "m:1", "allowed_groups": ["gpu-users"]},
]


@pytest.mark.parametrize(
    "groups, expected",
    [
        ([], Limits(2, 4, 0, 8, 2)),
        (["physicists"], Limits(2, 4, 0, 8, 2)),
        (["gpu-users"], Limits(2, 4, 1, 16, 2)),
        # the largest value wins; an entry never lowers the defaults
        (["big"], Limits(8, 4, 0, 8, 2)),
        (["big", "gpu-users"], Limits(8, 4, 1, 16, 2)),
    ],
)
def test_limits_for_groups(groups, expected):
    assert limits_for(DASK, groups) == expected


def fields(groups, default_image=None):
    limits = limits_for(DASK, groups)
    images = offered_images(DASK, IMAGES, groups)
    return dask_options.option_fields(DASK, limits, images, default_image)


def test_fields_follow_groups():
    assert [f.name for f in fields(["physicists"])] == [
        "worker_cores",
        "worker_memory",
        "environment",
        "image",
    ]
    gpu = fields(["gpu-users"])
    assert [f.name for f in gpu] == [
        "worker_cores",
        "worker_memory",
        "worker_gpus",
        "environment",
        "image",
    ]
    assert [v for v, _ in gpu[-1].choices] == ["analysis", "ml"]
    assert fields(["gpu-users"], default_image="ml")[-1].default == "ml"
    assert fields(["physicists"], default_image="ml")[-1].default == "analysis"


# images gated by the profiles that show them (the spawn page's rule), not only by their own
# allowed_groups: "cms-sw" is offered only through a cms profile, "gpu-stack" only through a
# choice for gpu-users of an option open to everyone, "orphan" through no profile at all
GATED_IMAGES = [
    {"name": "analysis", "image": "a:1"},
    {"name": "cms-sw", "image": "c:1"},
    {"name": "gpu-stack", "image": "g:1"},
    {"name": "ml", "image": "m:1", "allowed_groups": ["gpu-users"]},
    {"name": "orphan", "image": "o:1"},
]
GATED_PROFILES = [
    {"display_name": "Analysis", "image": "analysis"},
    {"display_name": "CMS", "image": "cms-sw", "allowed_groups": ["cms"]},
    {
        "display_name": "Choose",
        "profile_options": {
            "stack": {
                "display_name": "Stack",
                "choices": {
                    "plain": {"display_name": "Plain", "image": "analysis"},
                    "gpu": {
                        "display_name": "GPU",
                        "image": "gpu-stack",
                        "allowed_groups": ["gpu-users"],
                    },
                    "ml": {"display_name": "ML", "image": "ml"},
                },
            }
        },
    },
]


@pytest.mark.parametrize(
    "groups, offered",
    [
        ([], ["analysis"]),
        (["cms"], ["analysis", "cms-sw"]),
        (["gpu-users"], ["analysis", "gpu-stack", "ml"]),
        (["cms", "gpu-users"], ["analysis", "cms-sw", "gpu-stack", "ml"]),
    ],
)
def test_offered_images_follow_the_spawn_pages_profiles(groups, offered):
    got = offered_images(DASK, GATED_IMAGES, groups, GATED_PROFILES)
    assert [i["name"] for i in got] == offered
    # dask.images narrows further, never widens
    narrowed = offered_images(
        {**DASK, "images": ["cms-sw", "orphan"]}, GATED_IMAGES, groups, GATED_PROFILES
    )
    assert [i["name"] for i in narrowed] == [n for n in offered if n == "cms-sw"]


@pytest.mark.parametrize(
    "groups, image",
    [([], "cms-sw"), ([], "gpu-stack"), (["cms"], "ml"), (["gpu-users"], "cms-sw"), ([], "orphan")],
)
def test_a_profile_gated_image_is_refused_naming_the_option(groups, image):
    limits = limits_for(DASK, groups)
    images = offered_images(DASK, GATED_IMAGES, groups, GATED_PROFILES)
    with pytest.raises(DaskOptionError) as e:
        check_options(dask_options.option_fields(DASK, limits, images), {"image": image})
    assert e.value.option == "image"
    assert f"{image!r} is not available to you" in str(e.value)


def test_the_gateway_offers_what_the_values_profiles_show():
    """Through the gateway's own options handler, with its settings as the hub writes them."""
    from afhub.hub_config.gateway.options import cluster_options
    from dask_gateway_server.models import User

    plan = apply.build(
        {**local_values(), "images": GATED_IMAGES, "profiles": GATED_PROFILES}, data_dir="/d"
    )
    (gw,) = [s for s in plan.get("JupyterHub", "services") if s["name"] == "dask-gateway"]
    settings = json.loads(gw["environment"]["AFHUB_DASK_SETTINGS"])
    user = User("bob", groups=["physicists"])
    options = cluster_options(settings)(user)
    with pytest.raises(ValueError, match="image: 'cms-sw' is not available to you"):
        options.parse_options({"image": "cms-sw"})
    assert options.parse_options({"image": "analysis"})["image"] == "analysis"


@pytest.mark.parametrize(
    "groups, requested, expected",
    [
        ([], {}, {"worker_cores": 1.0, "worker_memory": 2.0, "image": "analysis"}),
        (
            [],
            {"worker_cores": 2, "worker_memory": 0.5},
            {"worker_cores": 2.0, "worker_memory": 0.5, "image": "analysis"},
        ),
        (
            ["gpu-users"],
            {"worker_gpus": 1, "image": "ml"},
            {"worker_cores": 1.0, "worker_memory": 2.0, "worker_gpus": 1, "image": "ml"},
        ),
        (
            [],
            {"environment": "/home/a/envs/x"},
            {
                "worker_cores": 1.0,
                "worker_memory": 2.0,
                "image": "analysis",
                "environment": "/home/a/envs/x",
            },
        ),
    ],
)
def test_check_options_accepts(groups, requested, expected):
    # environment: "" (none) unless asked for
    assert check_options(fields(groups), requested) == {"environment": "", **expected}


@pytest.mark.parametrize(
    "groups, requested, option, message",
    [
        ([], {"worker_cores": 3}, "worker_cores", "must be between 0.25 and 2 for you, got 3"),
        (
            [],
            {"worker_memory": 0},
            "worker_memory",
            "must be between 0.25 and 4 GiB for you, got 0",
        ),
        ([], {"worker_cores": "2"}, "worker_cores", "must be a number between 0.25 and 2"),
        ([], {"worker_cores": True}, "worker_cores", "must be a number"),
        ([], {"worker_cores": float("nan")}, "worker_cores", "must be a finite number"),
        (
            [],
            {"worker_gpus": 1},
            "worker_gpus",
            "unknown option; the options are worker_cores, worker_memory, environment, image",
        ),
        ([], {"image": "ml"}, "image", "'ml' is not available to you; choose one of 'analysis'"),
        (
            ["gpu-users"],
            {"worker_gpus": 2},
            "worker_gpus",
            "must be between 0 and 1 for you, got 2",
        ),
        (
            ["gpu-users"],
            {"worker_gpus": 0.5},
            "worker_gpus",
            "must be a whole number between 0 and 1",
        ),
        ([], {"wroker_cores": 1}, "wroker_cores", "unknown option"),
    ],
)
def test_check_options_refuses_naming_the_option(groups, requested, option, message):
    with pytest.raises(DaskOptionError) as e:
        check_options(fields(groups), requested)
    assert e.value.option == option
    assert message in str(e.value)
    assert str(e.value).startswith(option + ": ")


@pytest.mark.parametrize(
    "n, groups, ok",
    [
        (0, [], True),
        (8, [], True),
        (9, [], False),
        (16, ["gpu-users"], True),
        (-1, [], False),
        (2.0, [], False),
    ],
)
def test_check_workers(n, groups, ok):
    lim = limits_for(DASK, groups)
    if ok:
        assert dask_options.check_workers(n, lim) == n
    else:
        with pytest.raises(DaskOptionError, match="^workers: "):
            dask_options.check_workers(n, lim)


def test_cluster_config_runs_the_chosen_environment():
    chosen = {"worker_cores": 1.5, "worker_memory": 2, "image": "analysis"}
    out = dask_options.cluster_config(
        chosen, limits=limits_for(DASK, []), idle_timeout=60, prefix="/opt/env"
    )
    assert out["scheduler_cmd"] == ["/opt/env/bin/dask", "scheduler"]
    assert out["worker_cmd"] == ["/opt/env/bin/dask", "worker"]
    assert out["worker_memory"] == 2 * 2**30
    assert out["worker_threads"] == 1 and out["worker_cores"] == 1.5
    assert out["cluster_max_workers"] == 8 and out["idle_timeout"] == 60.0
    assert out["environment"]["PATH"].startswith("/opt/env/bin:")
    assert out["environment"]["DASK_TEMPORARY_DIRECTORY"] == "."


def local_values(**dask):
    return {
        "hub": {"port": 8000},
        "auth": {"provider": "dev"},
        "images": IMAGES,
        "dask": {"enabled": True, **dask},
    }


def test_build_adds_the_service_scopes_and_client_settings():
    plan = apply.build(local_values(port=8123, scheduler_port=8124), data_dir="/d")
    services = {s["name"]: s for s in plan.get("JupyterHub", "services")}
    gw = services["dask-gateway"]
    assert gw["url"] == "http://127.0.0.1:8123"
    assert gw["command"][1:] == ["-m", "afhub.hub_config.gateway"]
    roles = {r["name"]: r for r in plan.get("JupyterHub", "load_roles")}
    assert "access:services!service=dask-gateway" in roles["user"]["scopes"]
    assert roles["dask-gateway"]["services"] == ["dask-gateway"]
    assert not any(
        s.startswith(("admin", "access:servers")) for s in roles["dask-gateway"]["scopes"]
    )
    assert "access:services!service=dask-gateway" in plan.get("Spawner", "server_token_scopes")
    env = plan.get("Spawner", "environment")
    assert env["DASK_GATEWAY__ADDRESS"] == "http://127.0.0.1:8000/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:8124"
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    # no secret goes to the service through the plan
    assert "TOKEN" not in " ".join(gw["environment"]) and "secret" not in str(gw).lower()


def test_disabled_or_z2jh_adds_nothing():
    plan = apply.build({**local_values(), "dask": {"enabled": False}}, data_dir="/d")
    assert "dask-gateway" not in str(plan.sections)
    plan = apply.build(local_values(), data_dir="/d", deployment="z2jh")
    assert "dask-gateway" not in str(plan.get("JupyterHub", "services", []))


@pytest.mark.parametrize(
    "dask, path, message",
    [
        ({"images": ["nope"]}, "dask.images[0]", "unknown image 'nope'"),
        ({"worker_cores": 8}, "dask.worker_cores", "above dask.max_worker_cores"),
        ({"port": 8000}, "dask.port", "port 8000 is also hub.port"),
        ({"port": 9000, "scheduler_port": 9000}, "dask.scheduler_port", "must differ"),
        ({"limits": [{"max_workers": 3}]}, "dask.limits[0].allowed_groups", "missing required key"),
        (
            {"limits": [{"allowed_groups": ["a"], "max_wrokers": 3}]},
            "dask.limits[0].max_wrokers",
            "did you mean 'max_workers'",
        ),
        ({"backend": "htcondor"}, "dask.backend", "must be one of"),
    ],
)
def test_check_names_the_key(dask, path, message):
    problems = validate(local_values(**dask))
    assert any(p.path == path and message in p.message for p in problems), problems
