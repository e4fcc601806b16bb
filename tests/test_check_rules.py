"""`afhub check` rules across keys (issue 26), as tables: addresses other hosts must reach,
`check` on a batch file running the standalone checks, the issuer's scheme, GPU types against
`gpu_types`, `dask.limits` groups used nowhere. Each row: a change to a shipped example, the key
path the problem (or warning) names and words of its message."""

from __future__ import annotations

import copy
import pathlib

import pytest
from afhub.hub_config import cli
from afhub.hub_config.addresses import reach_problems
from afhub.hub_config.values import fill_defaults, load_file, validate, warnings

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "hub_config" / "examples"


def example(name: str) -> dict:
    return load_file(str(EXAMPLES / f"{name}.yaml"))


def patched(name: str, changes: dict) -> dict:
    """``changes``: dotted key -> value (None deletes the key)."""
    values = copy.deepcopy(example(name))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = values
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return values


def check_problems(values: dict, target: str | None = "standalone") -> list:
    return cli.check_values(values, target, data_dir="/nonexistent")


# ------------------------------------------------------------------ addresses (refused)

LOOPBACK_COPY = {  # examples/slurm.yaml with loopback addresses, as a one-host test site
    "hub.node_address": "127.0.0.1",
    "hub.ip": "127.0.0.1",
    "hub.hub_ip": "127.0.0.1",
    "dask.slurm.gateway_ip": "127.0.0.1",
}


@pytest.mark.parametrize(
    "name, changes, path, words",
    [
        ("slurm", {"hub.node_address": None}, "hub.node_address", "missing"),
        ("htcondor", {"hub.node_address": None}, "hub.node_address", "missing"),
        ("slurm", {"hub.node_address": "localhost"}, "hub.node_address", "loopback"),
        ("slurm", {"hub.node_address": "127.0.0.1"}, "hub.node_address", "loopback"),
        ("slurm", {"hub.node_address": "127.0.1.1"}, "hub.node_address", "loopback"),
        ("slurm", {"hub.node_address": "node.localhost"}, "hub.node_address", "loopback"),
        ("slurm", {"hub.node_address": "0.0.0.0"}, "hub.node_address", "wildcard"),
        ("slurm", {"hub.hub_ip": None}, "hub.hub_ip", "'127.0.0.1' is loopback"),
        ("htcondor", {"hub.hub_ip": "127.0.0.1"}, "hub.hub_ip", "servers call the hub API"),
        ("slurm", {"hub.ip": "127.0.0.1"}, "hub.ip", "reach the Dask gateway"),
        ("slurm", {"dask.slurm.gateway_ip": None}, "dask.slurm.gateway_ip", "loopback"),
        ("slurm", {"dask.slurm.listen_ip": "127.0.0.1"}, "dask.slurm.listen_ip", "loopback"),
        ("slurm", {"backend.slurm.server_ip": "127.0.0.1"}, "backend.slurm.server_ip", "loopback"),
        (
            "slurm",
            {"hub.node_address": "10.1.0.5", "hub.hub_ip": "10.9.9.9"},
            "hub.hub_ip",
            "listens on 10.9.9.9 but hub.node_address tells the nodes 10.1.0.5",
        ),
        (
            "slurm",
            {"backend.slurm.node_addresses": {"sdf-node1": "127.0.0.1"}},
            "backend.slurm.node_addresses.sdf-node1",
            "not an address",
        ),
    ],
)
def test_unreachable_addresses_are_refused(name, changes, path, words):
    values = patched(name, changes)
    problems = check_problems(values)
    assert any(p.path == path and words in p.message for p in problems), problems


def test_a_loopback_copy_of_the_slurm_example_is_refused_naming_every_key(capsys):
    values = patched("slurm", LOOPBACK_COPY)
    assert {p.path for p in check_problems(values)} == {
        "hub.node_address",
        "hub.ip",
        "hub.hub_ip",
        "dask.slurm.gateway_ip",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"hub.node_address": "10.1.0.5", "hub.hub_ip": "10.1.0.5", "hub.ip": "10.1.0.5"},
        {"hub.node_address": "10.1.0.5", "dask.slurm.gateway_ip": "10.1.0.5"},
        {"hub.node_address": "hub-1.cluster"},
    ],
)
def test_reachable_addresses_pass(changes):
    assert check_problems(patched("slurm", changes)) == []


@pytest.mark.parametrize(
    "name, target, refused",
    [
        ("local", "standalone", False),  # one host: loopback is right
        ("kubernetes", None, False),  # the chart owns addresses under z2jh
        ("kubernetes", "z2jh", False),
        ("kubernetes", "standalone", True),  # a hub outside the cluster: pods must reach it
        ("slurm", None, True),
        ("htcondor", None, True),
    ],
)
def test_which_deployments_need_node_addresses(name, target, refused):
    values = fill_defaults(patched(name, {"hub.node_address": None}))
    assert bool(reach_problems(values, target)) == refused


@pytest.mark.parametrize("name", ["slurm", "htcondor"])
def test_plain_check_of_a_batch_file_runs_the_standalone_checks(name, tmp_path, capsys):
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(patched(name, {"hub.node_address": None})))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hub.node_address: missing" in err


def test_plain_check_of_the_loopback_copy_names_the_keys(tmp_path, capsys):
    import yaml

    path = tmp_path / "slurm-loopback.yaml"
    path.write_text(yaml.safe_dump(patched("slurm", LOOPBACK_COPY)))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    for key in ("hub.node_address", "hub.ip", "hub.hub_ip", "dask.slurm.gateway_ip"):
        assert f"{key}: " in err


@pytest.mark.parametrize("name", ["slurm", "htcondor"])
def test_shipped_batch_examples_pass_plain_check(name, capsys):
    path = str(EXAMPLES / f"{name}.yaml")
    assert cli.main(["check", path]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok (backend {name}, ") and "fits standalone" in out
    assert err == ""


# --------------------------------------------- addresses handed out (built from node_address)


def test_everything_handed_to_servers_uses_node_address():
    from afhub.hub_config import apply
    from traitlets.config import Config

    c = Config()
    values = patched("slurm", {"hub.node_address": "10.1.0.5"})
    apply.configure(c, values, data_dir="/nonexistent", environ={"AFHUB_OIDC_CLIENT_SECRET": "x"})
    env = c.Spawner.environment
    assert c.JupyterHub.hub_connect_ip == "10.1.0.5"  # JUPYTERHUB_API_URL
    assert env["DASK_GATEWAY__ADDRESS"] == "http://10.1.0.5:8000/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://10.1.0.5:8786"


def test_gateway_api_url_for_schedulers_uses_node_address():
    from afhub.hub_config.dask_section import gateway_settings
    from afhub.hub_config.gateway.process import gateway_config

    class P:
        data_dir = "/nonexistent"

    values = fill_defaults(patched("slurm", {"hub.node_address": "10.1.0.5"}))
    c = gateway_config(gateway_settings(values, P()))
    assert c.AfhubSlurmBackend.api_url == "http://10.1.0.5:8002/services/dask-gateway/api"


# ----------------------------------------------------------------------- cross-key rules


@pytest.mark.parametrize(
    "changes, path, words",
    [
        ({"auth.issuer": "login.af.example.org"}, "auth.issuer", "needs a scheme: write https://"),
        ({"auth.token_url": "idp/token"}, "auth.token_url", "needs a scheme"),
    ],
)
def test_urls_without_a_scheme_are_problems(changes, path, words):
    problems = validate(patched("slurm", changes))
    assert any(p.path == path and words in p.message for p in problems), problems


def _gpu_profile(gpu_type: str) -> dict:
    values = example("slurm")
    values["profiles"][1]["resources"]["gpu"]["type"] = gpu_type
    return values


@pytest.mark.parametrize(
    "gpu_type, words",
    [
        ("A100", "GPU type 'A100' is not a key of backend.slurm.gpu_types (did you mean 'a100'?"),
        ("h100", "GPU type 'h100' is not a key of backend.slurm.gpu_types; types: a100"),
    ],
)
def test_gpu_type_must_be_a_gpu_types_key(gpu_type, words):
    problems = validate(_gpu_profile(gpu_type))
    assert [(p.path, words in p.message) for p in problems] == [
        ("profiles[1].resources.gpu.type", True)
    ], problems


def test_gpu_type_in_a_choice_is_checked_too():
    values = example("slurm")
    values["profiles"][1]["profile_options"]["gpus"]["choices"]["2"]["resources"]["gpu"][
        "type"
    ] = "A100"
    problems = validate(values)
    assert [p.path for p in problems] == [
        "profiles[1].profile_options.gpus.choices.2.resources.gpu.type"
    ]


def test_without_gpu_types_any_type_is_used_as_written():
    values = _gpu_profile("A100")
    del values["backend"]["slurm"]["gpu_types"]
    assert validate(values) == []


@pytest.mark.parametrize(
    "groups, warned",
    [
        (["af-gpu"], []),  # a profile's allowed_groups
        (["af-admins"], []),  # auth.admin_groups
        (["af-gpu-large", "af-gpu-larg"], ["dask.limits[0].allowed_groups[1]"]),
        (["dask-power"], ["dask.limits[0].allowed_groups[0]"]),
    ],
)
def test_dask_limits_groups_used_nowhere_are_warnings(groups, warned):
    values = example("slurm")
    own = values["dask"].get("limits", [])  # the example's (GPU workers for af-gpu) after
    values["dask"]["limits"] = [{"allowed_groups": groups, "max_workers": 200}, *own]
    assert validate(values) == []  # a warning, not a problem
    found = [w for w in warnings(values) if w.path.startswith("dask.limits")]
    assert [w.path for w in found] == warned
    if warned:
        assert "used nowhere else" in found[0].message
