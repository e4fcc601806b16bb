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
    assert [f.field for f in plain.fields] == ["worker_cores", "worker_memory", "image"]
    with pytest.raises(ValueError, match="worker_cores must be <= 4"):
        plain.parse_options({"worker_cores": 8})
    with pytest.raises(ValueError, match="'ml' is not a valid option"):
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
