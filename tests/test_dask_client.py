"""The notebook API's pure parts: the gateway's option spec as fields, option defaults from the
hub, and the version comparison behind DaskVersionWarning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from afhub.hub_config.dask_options import DaskOptionError
from afhub.server_ext import dask as api

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
