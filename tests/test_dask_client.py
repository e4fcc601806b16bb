"""The notebook API's pure parts: the gateway's option spec as fields, option defaults from the
hub, and the version comparison behind DaskVersionWarning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from afhub.server_ext import dask as api
from afhub.server_ext.dask_options import DaskOptionError

SPEC = [
    {
        "field": "worker_cores",
        "label": "Worker cores",
        "default": 1.0,
        "spec": {"type": "float", "min": 0.25, "max": 2.0},
    },
    {
        "field": "worker_memory",
        "label": "Worker memory",
        "default": 2.0,
        "spec": {"type": "float", "min": 0.25, "max": 4.0},
    },
    {
        "field": "image",
        "label": "Image",
        "default": "analysis",
        "spec": {"type": "select", "options": ["analysis", "ml"]},
    },
]


def test_fields_from_the_gateway_spec_check_like_the_gateway():
    fields = api.fields_from_spec(SPEC)
    assert [f.name for f in fields] == ["worker_cores", "worker_memory", "image"]
    # the hub's default image (DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE) applies; the user's wins
    assert api.resolve_options(fields, {}, {"image": "ml", "other": 1})["image"] == "ml"
    assert (
        api.resolve_options(fields, {"image": "analysis"}, {"image": "ml"})["image"] == "analysis"
    )
    with pytest.raises(DaskOptionError, match="^worker_cores: must be between 0.25 and 2"):
        api.resolve_options(fields, {"worker_cores": 3}, {})


def test_fields_from_the_gateway_spec_carry_afhubs_units():
    """The gateway's specification has no units; the sidebar form and messages show them."""
    fields = {f.name: f for f in api.fields_from_spec(SPEC)}
    assert fields["worker_memory"].unit == "GiB"
    assert fields["worker_memory"].model()["unit"] == "GiB"
    assert fields["worker_cores"].unit == "" and fields["image"].unit == ""
    with pytest.raises(DaskOptionError, match="between 0.25 and 4 GiB"):
        api.resolve_options(list(fields.values()), {"worker_memory": 64}, {})


def versions(client, scheduler, **workers):
    return {
        "client": {"packages": client},
        "scheduler": {"packages": scheduler},
        "workers": {w: {"packages": p} for w, p in workers.items()},
    }


@pytest.mark.parametrize(
    "given, expected",
    [
        (versions({"dask": "1"}, {"dask": "1"}, w1={"dask": "1"}), []),
        (
            versions({"dask": "1", "python": "3.11.7"}, {"dask": "2", "python": "3.11.7"}),
            ["dask: notebook 1, scheduler 2"],
        ),
        (
            versions(
                {"distributed": "1"},
                {"distributed": "1"},
                a={"distributed": "1"},
                b={"distributed": "0"},
            ),
            ["distributed: notebook 1, worker b 0"],
        ),
    ],
)
def test_version_mismatches(given, expected):
    assert api.version_mismatches(given) == expected


def test_package_versions_of_this_process():
    v = api.package_versions()
    assert set(v) == set(api.CHECKED_PACKAGES)
    import dask

    assert v["dask"] == dask.__version__


def test_package_versions_import_nothing():
    """Workers have not imported dask_gateway: reading its version must not import it (that
    import is ~0.4 s of every new_cluster); the version is the installed distribution's."""
    code = (
        "import sys, json; from afhub.server_ext.dask_versions import package_versions; "
        "v = package_versions(); print(json.dumps([v, 'dask_gateway' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    versions, imported = json.loads(out)
    assert imported is False
    import dask_gateway

    assert versions["dask_gateway"] == dask_gateway.__version__
    assert versions["msgpack"] is not None and versions["cloudpickle"] is not None


def test_cluster_package_versions_from_what_workers_reported():
    """Worker versions come from their registration with the scheduler (no round trip to
    every worker); distributed's ``3.11.2.final.0`` reads as ``3.11.2``; dask_gateway, which
    workers do not report, is left out for them (and not called a mismatch)."""
    from types import SimpleNamespace

    reported = {
        "python": "3.11.2.final.0",
        "dask": "2026.8.0",
        "distributed": "2026.8.0",
        "msgpack": "1.2.4",
        "cloudpickle": "3.1.2",
        "tornado": "6.6.1",
    }
    scheduler = SimpleNamespace(
        workers={
            "tls://a:1": SimpleNamespace(versions={"packages": reported}),
            "tls://b:2": SimpleNamespace(versions={"packages": {**reported, "dask": "2026.7.0"}}),
            "tls://c:3": SimpleNamespace(versions=None),
        }
    )
    out = api.cluster_package_versions(dask_scheduler=scheduler)
    assert out["scheduler"] == api.package_versions()
    assert out["workers"]["tls://a:1"] == {
        "python": "3.11.2",
        "dask": "2026.8.0",
        "distributed": "2026.8.0",
        "msgpack": "1.2.4",
        "cloudpickle": "3.1.2",
    }
    assert out["workers"]["tls://c:3"] == {}
    client = {"python": "3.11.2", **{k: v for k, v in reported.items() if k != "python"}}
    client["dask_gateway"] = "2026.3.0"
    given = {
        "client": {"packages": client},
        "scheduler": {"packages": client},
        "workers": {w: {"packages": v} for w, v in out["workers"].items()},
    }
    assert api.version_mismatches(given) == ["dask: notebook 2026.8.0, worker tls://b:2 2026.7.0"]


def test_cluster_versions_on_a_real_scheduler_match_each_worker():
    """On a real distributed scheduler (in-process LocalCluster), what the workers reported at
    registration equals what each worker says when asked itself."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as lc:
        with Client(lc) as client:
            client.wait_for_workers(2)
            versions = api.cluster_versions(client)
            asked = client.run(api.package_versions)
    assert set(versions["workers"]) == set(asked) and len(asked) == 2
    for address, v in versions["workers"].items():
        mine = {k: asked[address][k] for k in v["packages"]}
        assert v["packages"] == mine
        assert set(v["packages"]) == set(api.CHECKED_PACKAGES) - {"dask_gateway"}
    assert api.version_mismatches(versions) == []
