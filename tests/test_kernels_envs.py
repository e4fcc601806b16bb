"""Pure kernel naming and spec building (afhub.server_ext.envs): tables, no I/O."""

from __future__ import annotations

import itertools

import pytest
from afhub.server_ext.envs import (
    ACTIVATE_SCRIPT,
    EnvFacts,
    ShippedSpec,
    build_kernels,
    env_id,
    launch_argv,
    launch_env,
    runnable_reason,
    slugify,
)


def facts(prefix, *, kind="conda", name=None, source="conda", shipped=(), ipykernel=True, **kw):
    return EnvFacts(
        prefix=prefix,
        realpath=prefix,
        kind=kind,
        name=name or prefix.rstrip("/").rsplit("/", 1)[-1],
        source=source,
        location=prefix.rsplit("/", 1)[0],
        python=f"{prefix}/bin/python",
        has_ipykernel=ipykernel,
        shipped=[ShippedSpec(d, f"{prefix}/share/jupyter/kernels/{d}", s) for d, s in shipped],
        **kw,
    )


@pytest.mark.parametrize(
    "text, slug",
    [
        ("analysis-systems", "analysis-systems"),
        ("My Env (2)", "my-env-2"),
        ("ROOT_6.30", "root_6.30"),
        ("ünïcode", "n-code"),
        ("...", "env"),
    ],
)
def test_slugify(text, slug):
    assert slugify(text) == slug


def test_built_python_kernel_for_env_with_ipykernel_and_no_spec():
    kernels, aliases = build_kernels([facts("/home/u/envs/ana", kind="venv", source="root")])
    assert list(kernels) == ["env-ana-python3"]
    k = kernels["env-ana-python3"]
    assert k.built
    assert k.spec["argv"] == [
        "/home/u/envs/ana/bin/python",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert k.spec["env"] == {
        "PATH": "/home/u/envs/ana/bin:${PATH}",
        "VIRTUAL_ENV": "/home/u/envs/ana",
    }
    assert k.spec["display_name"] == "Python 3 (ipykernel) [ana]"
    assert k.spec["metadata"]["afhub"]["prefix"] == "/home/u/envs/ana"
    assert aliases == {f"env-ana-{env_id('/home/u/envs/ana')[:6]}-python3": "env-ana-python3"}


def test_env_without_ipykernel_or_spec_has_no_kernel_and_says_why():
    f = facts("/e/bare", ipykernel=False)
    kernels, _ = build_kernels([f])
    assert kernels == {}
    assert (
        runnable_reason(f, []) == "no ipykernel: run `/e/bare/bin/python -m pip install ipykernel`"
    )


def test_shipped_specs_of_any_language_are_used_and_win_over_building():
    ir = {
        "argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
        "display_name": "R",
        "language": "R",
    }
    py = {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    f = facts(
        "/opt/conda/envs/stats",
        shipped=[("ir", ir), ("python3", py)],
        bin_names=frozenset({"R", "python"}),
    )
    kernels, aliases = build_kernels([f])
    assert sorted(kernels) == ["env-stats-ir", "env-stats-python3"]
    assert kernels["env-stats-ir"].spec["argv"][0] == "/opt/conda/envs/stats/bin/R"
    assert not kernels["env-stats-python3"].built
    assert aliases["conda-env-stats-r"] == "env-stats-ir"
    assert aliases["conda-env-stats-py"] == "env-stats-python3"
    assert aliases["conda-env-stats-python3"] == "env-stats-python3"


def test_collisions_get_deterministic_suffixes_independent_of_discovery_order():
    envs = [
        facts("/opt/micromamba/envs/ana", source="image"),
        facts("/home/u/.conda/envs/ana", source="conda"),
        facts("/home/u/envs/ana", kind="venv", source="root"),
    ]
    results = {tuple(sorted(build_kernels(list(p))[0])) for p in itertools.permutations(envs)}
    assert len(results) == 1
    kernels, aliases = build_kernels(envs)
    # the user's own root wins the plain name; the others are suffixed with their prefix hash
    assert kernels["env-ana-python3"].spec["metadata"]["afhub"]["prefix"] == "/home/u/envs/ana"
    for prefix in ("/opt/micromamba/envs/ana", "/home/u/.conda/envs/ana"):
        name = f"env-ana-{env_id(prefix)[:6]}-python3"
        assert kernels[name].spec["metadata"]["afhub"]["prefix"] == prefix
        assert f"[ana, {prefix.rsplit('/', 1)[0]}]" in kernels[name].spec["display_name"]
    # the winner's hashed name always works too, so a link to it survives new collisions
    winner_hashed = f"env-ana-{env_id('/home/u/envs/ana')[:6]}-python3"
    assert aliases[winner_hashed] == "env-ana-python3"
    # nb_conda alias goes to the highest-ranked conda env
    assert aliases["conda-env-ana-py"] == f"env-ana-{env_id('/home/u/.conda/envs/ana')[:6]}-python3"


@pytest.mark.parametrize(
    "kind, name, expected",
    [
        ("venv", "v", {"PATH": "/p/bin:${PATH}", "VIRTUAL_ENV": "/p"}),
        ("conda", "c", {"PATH": "/p/bin:${PATH}", "CONDA_PREFIX": "/p", "CONDA_DEFAULT_ENV": "c"}),
        ("pixi", "x", {"PATH": "/p/bin:${PATH}", "CONDA_PREFIX": "/p", "CONDA_DEFAULT_ENV": "x"}),
    ],
)
def test_launch_env(kind, name, expected):
    assert launch_env(kind=kind, prefix="/p", name=name) == expected


@pytest.mark.parametrize(
    "argv, bins, activate, expected",
    [
        (
            ["python", "-f", "{connection_file}"],
            {"python"},
            False,
            ["/p/bin/python", "-f", "{connection_file}"],
        ),
        (["python", "-f", "x"], set(), False, ["python", "-f", "x"]),
        (["/usr/bin/julia", "{prefix}/k.jl"], set(), False, ["/usr/bin/julia", "/p/k.jl"]),
        (["python"], {"python"}, True, ["/bin/sh", "-c", ACTIVATE_SCRIPT, "/p", "/p/bin/python"]),
    ],
)
def test_launch_argv(argv, bins, activate, expected):
    assert (
        launch_argv(argv=argv, prefix="/p", bin_names=frozenset(bins), activate=activate)
        == expected
    )


def test_activation_wrapper_has_no_braces_for_jupyter_client_templating():
    assert "{" not in ACTIVATE_SCRIPT and "}" not in ACTIVATE_SCRIPT


def test_shipped_env_overrides_and_display_name_kept_when_it_names_the_env():
    spec = {
        "argv": ["/x/bin/python"],
        "display_name": "Python (analysis-systems)",
        "language": "python",
        "env": {"PATH": "/custom"},
    }
    f = facts("/opt/micromamba/envs/analysis-systems", source="image", shipped=[("py", spec)])
    k = build_kernels([f])[0]["env-analysis-systems-py"]
    assert k.spec["display_name"] == "Python (analysis-systems)"
    assert k.spec["env"]["PATH"] == "/custom"
    assert k.spec["env"]["CONDA_PREFIX"] == "/opt/micromamba/envs/analysis-systems"


def test_base_env_gets_conda_root_alias():
    _, aliases = build_kernels([facts("/opt/micromamba", name="base")])
    assert aliases["conda-root-py"] == "env-base-python3"
