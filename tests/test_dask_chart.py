"""Kubernetes: the ``dask`` section as dask-gateway Helm chart values. No Kubernetes API server
can run here, so the chart is not installed: its values are validated against the chart's own
schema laid over its defaults (shipped in hub_config/schemas/, see SOURCE.md), and the
generated options handler is run through dask-gateway-server's real Options machinery."""

from __future__ import annotations

import pytest
import yaml
from afhub.hub_config import cli
from afhub.hub_config.dask_chart import chart_values
from afhub.hub_config.values import load
from afhub.hub_config.z2jh import chart_problems
from dask_gateway_server.models import User
from traitlets.config import Config

VALUES = {
    "hub": {"base_url": "/af/"},
    "auth": {"provider": "generic", "client_id": "x", "issuer": "https://idp.example.org"},
    "backend": {"type": "kubernetes"},
    "images": [
        {"name": "coffea", "image": "reg.example.org/af/coffea:2024.5"},
        {"name": "ml", "image": "reg.example.org/af/ml:1", "allowed_groups": ["gpu-users"]},
    ],
    "dask": {
        "enabled": True,
        "worker_cores": 2,
        "worker_memory": 4,
        "max_worker_cores": 4,
        "max_worker_memory": 16,
        "max_workers": 20,
        "limits": [{"allowed_groups": ["gpu-users"], "max_worker_gpus": 1, "max_workers": 100}],
    },
}


@pytest.fixture(scope="module")
def chart():
    return chart_values(load(VALUES))


def test_chart_values_validate_against_the_chart_schema(chart):
    assert chart_problems(chart, "dask-gateway") == []
    gw = chart["gateway"]
    assert gw["prefix"] == "/af/services/dask-gateway"
    assert gw["auth"]["type"] == "jupyterhub"
    assert gw["auth"]["jupyterhub"]["apiUrl"] == "http://hub:8081/af/hub/api"
    assert gw["auth"]["jupyterhub"]["jupyterhubServiceName"] == "dask-gateway"
    assert "apiToken" not in gw["auth"]["jupyterhub"]  # from the hub's secret, never inline
    assert gw["backend"]["image"] == {"name": "reg.example.org/af/coffea", "tag": "2024.5"}
    assert gw["backend"]["worker"]["cores"] == {"request": 2, "limit": 2}
    assert gw["backend"]["worker"]["memory"] == {"request": "4096M", "limit": "4096M"}


def test_a_wrong_type_is_caught_by_the_chart_schema(chart):
    bad = yaml.safe_load(yaml.safe_dump(chart))
    bad["gateway"]["backend"]["worker"]["threads"] = "two"
    problems = chart_problems(bad, "dask-gateway")
    assert any(p.path.endswith("gateway.backend.worker.threads") for p in problems), problems


def options_for(chart, groups):
    c = Config()
    exec(chart["gateway"]["extraConfig"]["afhub-options"], {"c": c})
    return c.Backend.cluster_options(User("alice", groups=groups))


def test_generated_options_handler_enforces_group_limits(chart):
    plain = options_for(chart, ["physicists"])
    assert [f.field for f in plain.fields] == [
        "worker_cores",
        "worker_memory",
        "environment",
        "image",
    ]
    # the messages of afhub's definitions (server_ext/dask_options.py), as the hub's gateway
    with pytest.raises(ValueError, match="worker_cores: must be between 0.25 and 4 for you"):
        plain.parse_options({"worker_cores": 8})
    with pytest.raises(ValueError, match="image: 'ml' is not available to you"):
        plain.parse_options({"image": "ml"})
    with pytest.raises(ValueError, match="Unknown fields"):
        plain.parse_options({"worker_gpus": 1})
    conf = plain.get_configuration(plain.parse_options({"worker_cores": 3}), None)
    assert conf["worker_cores"] == 3 and conf["worker_threads"] == 3
    assert conf["image"] == "reg.example.org/af/coffea:2024.5"
    assert conf["cluster_max_workers"] == 20 and conf["worker_memory"] == "4096M"

    gpu = options_for(chart, ["gpu-users"])
    req = gpu.parse_options({"worker_gpus": 1, "image": "ml"})
    conf = gpu.get_configuration(req, None)
    assert conf["image"] == "reg.example.org/af/ml:1"
    assert conf["cluster_max_workers"] == 100
    assert conf["worker_extra_container_config"]["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_generated_backend_refuses_clusters_beyond_max_clusters(chart):
    """The chart's KubeBackend subclass counts the user's pending and running clusters.
    The one faked boundary is the Kubernetes API: ``list_clusters`` (the backend's informer
    cache of DaskCluster objects) and the base ``start_cluster`` (which creates one)."""
    import asyncio

    from dask_gateway_server.backends.base import PublicException
    from dask_gateway_server.backends.kubernetes import KubeBackend
    from dask_gateway_server.models import ClusterStatus

    c = Config()
    exec(chart["gateway"]["extraConfig"]["afhub-options"], {"c": c})
    cls = c.DaskGateway.backend_class
    assert issubclass(cls, KubeBackend)
    backend = cls.__new__(cls)  # no Kubernetes client to set up
    existing = {"alice": ["a1", "a2"], "bob": ["b1"]}
    asked = []

    async def list_clusters(username=None, statuses=None):
        asked.append(set(statuses))
        return existing[username]

    async def created(self, user, options):
        return f"new-{user.name}"

    backend.list_clusters = list_clusters
    original = KubeBackend.start_cluster
    KubeBackend.start_cluster = created
    try:
        # max_clusters defaults to 2: alice has 2, bob has 1
        with pytest.raises(PublicException, match="max_clusters: you have 2 .* at most 2"):
            asyncio.run(backend.start_cluster(User("alice", groups=["physicists"]), {}))
        assert asyncio.run(backend.start_cluster(User("bob", groups=[]), {})) == "new-bob"
    finally:
        KubeBackend.start_cluster = original
    assert asked[0] == {ClusterStatus.PENDING, ClusterStatus.RUNNING}


def test_generated_backend_holds_max_clusters_under_parallel_creates(chart):
    """8 parallel creates, each awaiting the Kubernetes API, while the informer cache
    (``self.clusters``, what ``list_clusters`` reads) has not seen any of them yet: 2 made,
    6 refused. The faked boundary is the Kubernetes API, as above."""
    import asyncio

    from dask_gateway_server.backends.base import PublicException
    from dask_gateway_server.backends.kubernetes import KubeBackend

    c = Config()
    exec(chart["gateway"]["extraConfig"]["afhub-options"], {"c": c})
    cls = c.DaskGateway.backend_class
    backend = cls.__new__(cls)
    backend.clusters = {}  # the watch reports nothing during the test
    made = []

    async def list_clusters(username=None, statuses=None):
        return [n for n in backend.clusters if n.startswith(username)]

    async def create(self, user, options):
        await asyncio.sleep(0.05)  # the API call
        made.append(f"{user.name}-{len(made)}")
        return made[-1]

    async def parallel():
        user = User("carol", groups=[])
        return await asyncio.gather(
            *(backend.start_cluster(user, {}) for _ in range(8)), return_exceptions=True
        )

    backend.list_clusters = list_clusters
    original = KubeBackend.start_cluster
    KubeBackend.start_cluster = create
    try:
        results = asyncio.run(parallel())
    finally:
        KubeBackend.start_cluster = original
    assert made == ["carol-0", "carol-1"]
    refused = [r for r in results if isinstance(r, PublicException)]
    assert len(refused) == 6
    assert all("max_clusters: you have 2 running cluster(s)" in str(r) for r in refused)


def test_cli_prints_validated_chart_values(tmp_path, capsys):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(VALUES))
    assert cli.main(["dask-chart", str(path)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["gateway"]["auth"]["type"] == "jupyterhub"


# profiles hide images behind groups at every level the spawn page knows (profile, choice)
SAME_VALUES = {
    **VALUES,
    "images": [
        *VALUES["images"],
        {"name": "root", "image": "reg.example.org/af/root:6", "display_name": "ROOT 6"},
        {"name": "beta", "image": "reg.example.org/af/beta:0.1"},
    ],
    "profiles": [
        {"display_name": "CPU", "slug": "cpu", "image": "coffea"},
        {
            "display_name": "GPU",
            "slug": "gpu",
            "image": "ml",
            "allowed_groups": ["gpu-users", "admins"],
        },
        {
            "display_name": "Pick",
            "slug": "pick",
            "image": "coffea",
            "profile_options": {
                "env": {
                    "display_name": "Environment",
                    "choices": {
                        "root": {"display_name": "ROOT", "image": "root"},
                        "beta": {
                            "display_name": "Beta",
                            "image": "beta",
                            "allowed_groups": ["testers"],
                        },
                    },
                }
            },
        },
    ],
    "dask": {
        **VALUES["dask"],
        "images": ["coffea", "ml", "beta"],
        "limits": [
            *VALUES["dask"]["limits"],
            {"allowed_groups": ["testers"], "max_worker_cores": 8, "max_clusters": 5},
        ],
    },
}


@pytest.mark.parametrize(
    "groups",
    [[], ["physicists"], ["gpu-users"], ["admins"], ["testers"], ["gpu-users", "testers"]],
)
def test_chart_and_hub_gateway_offer_the_same_options(groups, tmp_path):
    """One definition: the chart's gateway (its extraConfig run in a namespace, as the gateway
    runs it) and the hub's gateway (hub_config/gateway/options.py) offer the same fields,
    defaults, limits and images to the same groups, and refuse the same values alike."""
    from afhub.hub_config.dask_section import gateway_settings
    from afhub.hub_config.gateway.options import cluster_options
    from afhub.hub_config.plan import Plan

    values = load(SAME_VALUES)
    chart_opts = options_for(chart_values(values), groups)
    hub_opts = cluster_options(gateway_settings(values, Plan(data_dir=str(tmp_path))))(
        User("alice", groups=groups)
    )
    assert chart_opts.get_specification() == hub_opts.get_specification()
    spec = {f["field"]: f for f in hub_opts.get_specification()}
    images = spec.get("image", {}).get("spec", {}).get("options")
    expected = {
        (): ["coffea"],
        ("physicists",): ["coffea"],
        ("gpu-users",): ["coffea", "ml"],
        ("admins",): ["coffea"],  # the GPU profile shows them, the ml image does not
        ("testers",): ["coffea", "beta"],
        ("gpu-users", "testers"): ["coffea", "ml", "beta"],
    }[tuple(groups)]
    assert images == expected
    top = spec["worker_cores"]["spec"]["max"]
    assert top == (8 if "testers" in groups else 4)
    for request in ({"worker_cores": top}, {"worker_cores": top + 1}, {"image": "root"}):
        outcomes = []
        for opts in (chart_opts, hub_opts):
            try:
                chosen = opts.parse_options(request)
            except ValueError as e:
                outcomes.append(str(e))
            else:
                conf = opts.get_configuration(chosen, User("alice", groups=groups))
                outcomes.append((dict(chosen), conf["cluster_max_workers"]))
        assert outcomes[0] == outcomes[1], request


def test_the_chart_ships_afhubs_own_definitions(chart):
    """The extraConfig runs dask_options.py as it is; the template defines none of it again."""
    import inspect
    from pathlib import Path

    import afhub.server_ext.dask_options as dask_options
    from afhub.hub_config.dask_chart import OPTIONS_TEMPLATE

    namespace = {"c": Config()}
    exec(chart["gateway"]["extraConfig"]["afhub-options"], namespace)
    assert namespace["_AFHUB_SOURCES"]["dask_options"] == Path(dask_options.__file__).read_text()
    shipped = namespace["_dask_options"]
    assert shipped.option_fields.__code__.co_filename == "_afhub_chart.dask_options"
    for name, obj in vars(dask_options).items():
        if inspect.isfunction(obj) and obj.__module__ == dask_options.__name__:
            assert f"def {name}(" not in OPTIONS_TEMPLATE
