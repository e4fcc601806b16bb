"""The sidebar's new-cluster form offers the user's own environments (issue 22): the
``environment`` option, a path for the gateway, is a select in the form whose choices are the
facility's image (``""``) and the environments kernel discovery found inside the user's home.
Pure: the gateway's option specification and discovery's environment models in, the form out.
"""

from __future__ import annotations

import pytest
from afhub.server_ext import dask as api
from afhub.server_ext.dask_options import Limits
from afhub.server_ext.dask_service import form_model

HOME = "/home/alice"
SPEC = [
    {
        "field": "worker_cores",
        "label": "Worker cores",
        "default": 1.0,
        "spec": {"type": "float", "min": 0.25, "max": 2.0},
    },
    {
        "field": "environment",
        "label": "Your own environment",
        "default": "",
        "spec": {"type": "string"},
    },
    {
        "field": "image",
        "label": "Image / environment",
        "default": "analysis",
        "spec": {"type": "select", "options": ["analysis", "ml"]},
    },
]
LIMITS = Limits(
    max_worker_cores=2, max_worker_memory=4, max_worker_gpus=0, max_workers=8, max_clusters=2
)


def env(name: str, prefix: str, python: bool = True) -> dict:
    """One entry of ``GET afhub/api/environments`` (the keys the form reads)."""
    return {"name": name, "prefix": prefix, "python": f"{prefix}/bin/python" if python else None}


def environment_field(environments, home=HOME, defaults=None) -> dict:
    model = form_model(
        api.fields_from_spec(SPEC),
        LIMITS,
        defaults=defaults or {},
        environments=environments,
        home=home,
    )
    assert [f["name"] for f in model["fields"]] == ["worker_cores", "environment", "image"]
    return next(f for f in model["fields"] if f["name"] == "environment")


def values(field: dict) -> list[str]:
    return [c["value"] for c in field["choices"]]


def test_the_form_offers_her_home_environments_and_nothing_outside():
    field = environment_field(
        [
            env("agcextra", f"{HOME}/envs/agcextra"),
            env("analysis", "/opt/conda/envs/analysis"),  # the image's: not her own
            env("bobs", "/home/bob/envs/x"),  # another user's home
            env("al", "/home/al/envs/x"),  # a sibling whose name starts like hers
            env("nopython", f"{HOME}/envs/broken", python=False),  # cannot run workers
        ]
    )
    assert field["type"] == "select" and field["label"] == "Environment"
    assert field["default"] == ""  # the facility's image unless she chooses
    assert values(field) == ["", f"{HOME}/envs/agcextra"]
    labels = {c["value"]: c["label"] for c in field["choices"]}
    assert labels[f"{HOME}/envs/agcextra"] == f"agcextra ({HOME}/envs/agcextra)"
    assert "image" in labels[""].lower()


@pytest.mark.parametrize(
    "environments, home",
    [
        ([], HOME),
        ([env("analysis", "/opt/conda/envs/analysis")], HOME),
        ([env("home itself", HOME)], HOME),  # the home is not an environment of hers
        ([env("agcextra", f"{HOME}/envs/agcextra")], None),  # no home known: none is hers
    ],
)
def test_without_own_environments_the_only_choice_is_the_image(environments, home):
    field = environment_field(environments, home=home)
    assert values(field) == [""] and field["default"] == ""


def test_each_prefix_once_and_a_facility_default_only_when_offered():
    her = f"{HOME}/envs/agcextra"
    field = environment_field([env("agcextra", her), env("agcextra", her + "/")])
    assert values(field) == ["", her]
    assert environment_field([env("a", her)], defaults={"environment": her})["default"] == her
    assert environment_field([], defaults={"environment": her})["default"] == ""


def test_create_still_checks_the_gateways_path_field():
    """What the form posts goes through ``resolve_options`` with the gateway's fields: a path
    (the gateway then decides whose it is), not the form's choices."""
    fields = api.fields_from_spec(SPEC)
    chosen = api.resolve_options(fields, {"environment": "/home/bob/envs/x"}, {})
    assert chosen["environment"] == "/home/bob/envs/x"  # the gateway refuses it (integration)
    with pytest.raises(api.DaskOptionError, match="^environment: "):
        api.resolve_options(fields, {"environment": "envs/x"}, {})
