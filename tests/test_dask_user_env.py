"""Dask clusters in the user's own environment (issue 22, the ``environment`` option).

Pure tables: the option's value (``dask_options.check_path``), which kernels default to their
own environment (``own_environment``), which backends refuse it (``environment_refusal``: the
Kubernetes chart's gateway), where an owner's environment may be and what it lacks
(``hub_config/gateway/user_env.py``). Then, as root with real accounts (``useradd``, removed
after: ``test_root_paths.accounts``) and real environments: the gateway's ``OwnedClusters.user_environment`` accepts the owner's
venv or conda environment (a conda-layout prefix, ``conda_prefix.make_conda_prefix``), runs its
Python as the owner, and refuses another user's (by path, or through a link planted in one's own
home), an unsafe one and one that cannot run workers, saying what to
install. The end-to-end run (real hub, gateway, kernels and workers) is
``tests/test_dask_user_env_integration.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import test_root_paths as root_paths
from afhub.hub_config.gateway import user_env
from afhub.hub_config.gateway.local import AfhubLocalBackend
from afhub.server_ext.dask_options import (
    DaskOptionError,
    check_path,
    environment_refusal,
    own_environment,
)
from conda_prefix import make_conda_prefix
from dask_gateway_server.backends.base import PublicException
from kernels_helpers import as_user, link_as_user, make_user_venv, remove_as_user, server_python

# ---- the option's value ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ok",
    [
        ("", True),
        ("/home/alice/envs/agc", True),
        ("/", True),
        ("relative/env", False),
        ("~/envs/agc", False),
        ("/home/alice/../bob/env", False),
        ("/home/alice/./env", False),
        ("/home/alice//env", False),
        ("//home/alice/env", False),
        ("/home/alice/env/", False),
        ("/home/alice/env\n", False),
        ("/home/alice/\x00env", False),
        ("/" + "a" * 1100, False),
        (None, False),
        (3, False),
        (["/home/alice/env"], False),
    ],
)
def test_the_environment_option_takes_a_clean_absolute_path(value, ok):
    if ok:
        assert check_path("environment", value) == value
    else:
        with pytest.raises(DaskOptionError) as e:
            check_path("environment", value)
        assert e.value.option == "environment"


@pytest.mark.parametrize(
    "prefix, home, expected",
    [
        ("/home/alice/envs/agc", "/home/alice", "/home/alice/envs/agc"),
        ("/home/alice/.venv", "/home/alice/", "/home/alice/.venv"),
        ("/home/alice/miniforge3/envs/agc", "/home/alice", "/home/alice/miniforge3/envs/agc"),
        ("/home/alice/miniforge3", "/home/alice", "/home/alice/miniforge3"),  # its base env
        ("/opt/conda/envs/agc", "/home/alice", None),  # a facility's conda env
        ("/home/alice", "/home/alice", None),  # the home itself is no environment
        ("/home/alice2/envs/x", "/home/alice", None),  # a sibling sharing the name's start
        ("/opt/afhub/envs/analysis", "/home/alice", None),  # the image / server environment
        ("/usr", "/home/alice", None),
        ("/home/alice/envs/agc", None, None),
        ("/home/alice/envs/agc", "", None),
    ],
)
def test_a_kernel_in_its_own_environment_asks_for_it(prefix, home, expected):
    assert own_environment(prefix, home) == expected


@pytest.mark.parametrize(
    "backend, path, refused",
    [
        ("local", "/home/alice/envs/agc", False),
        ("slurm", "/home/alice/envs/agc", False),
        ("kubernetes", "/home/alice/envs/agc", True),
        ("kubernetes", "", False),
        ("local", "", False),
    ],
)
def test_backends_whose_workers_do_not_share_the_home_refuse_saying_why(backend, path, refused):
    message = environment_refusal(backend, path)
    if not refused:
        assert message is None
        return
    assert message.startswith("environment: ")
    assert path in message and "pods" in message and "home" in message
    assert "environment=''" in message  # what to do instead


def test_the_charts_gateway_refuses_an_own_environment():
    """The dask-gateway chart's extraConfig (rendered by ``dask_chart.chart_values``, run as its
    gateway runs it: ``test_dask_chart.options_for``) offers the option and refuses a path,
    saying why, before any pod is made."""
    from afhub.hub_config.dask_chart import chart_values
    from afhub.hub_config.values import load
    from test_dask_chart import VALUES, options_for

    options = options_for(chart_values(load(VALUES)), [])
    assert "environment" in [f.field for f in options.fields]
    asked = options.parse_options({"environment": "/home/alice/envs/agc"})
    with pytest.raises(ValueError, match="environment: .*kubernetes pods.*do not share your home"):
        options.get_configuration(asked, None)
    plain = options.get_configuration(options.parse_options({"environment": ""}), None)
    assert plain["image"] == "reg.example.org/af/coffea:2024.5"


# ---- where an owner's environment may be, and what it lacks -----------------------------------


@pytest.mark.parametrize(
    "path, home, roots, ok",
    [
        ("/home/alice/envs/agc", "/home/alice", (), True),
        ("/home/alice/.venv", "/home/alice", (), True),
        ("/home/alice", "/home/alice", (), False),
        ("/home/bob/envs/agc", "/home/alice", (), False),
        ("/home/alice2/envs/agc", "/home/alice", (), False),
        ("/home", "/home/alice", (), False),
        ("/opt/afhub/envs/analysis", "/home/alice", (), False),
        ("/project/alice/env", "/home/alice", ("/project/alice",), True),
        ("/project/bob/env", "/home/alice", ("/project/alice",), False),
    ],
)
def test_an_environment_lies_inside_the_owners_home(path, home, roots, ok):
    problem = user_env.path_problem(path, home=home, roots=roots)
    if ok:
        assert problem is None
    else:
        assert path in problem and home in problem


FACILITY = {"dask": "2026.8.0", "distributed": "2026.8.0", "afhub": "0.1.0"}
GOOD = {**FACILITY, "dask_gateway": "2026.3.0", "python": "3.11.2"}
CONDA = {**GOOD, "conda": True, "site": "/h/a/env/lib/site"}


@pytest.mark.parametrize(
    "found, says",
    [
        (GOOD, None),
        ({**GOOD, "dask": "2026.9.0", "distributed": "2026.9.0"}, None),  # their own dask: fine
        ({**GOOD, "dask_gateway": "2026.3.1"}, None),  # the same dask-gateway series
        ({**GOOD, "dask_gateway": None}, ["no dask-gateway", "pip install dask-gateway==2026.3.0"]),
        (
            {**GOOD, "dask": None, "distributed": None},
            ["no dask, distributed", "pip install dask==2026.8.0 distributed==2026.8.0"],
        ),
        (
            {**GOOD, "distributed": "2026.7.0"},
            ["dask 2026.8.0 with distributed 2026.7.0", "dask==2026.8.0 distributed==2026.8.0"],
        ),
        (
            {**GOOD, "dask_gateway": "2025.4.0"},
            ["dask-gateway 2025.4.0 (the gateway is 2026.3.0)", "dask-gateway==2026.3.0"],
        ),
        ({**GOOD, "afhub": None}, ["no afhub", "-m venv --system-site-packages /h/a/env"]),
        ({**GOOD, "afhub": "0.0.9"}, ["afhub 0.0.9", "facility's afhub 0.1.0"]),
        (  # a conda environment: the facility's packages through a .pth, not a venv
            {**CONDA, "afhub": None},
            ["no afhub", "echo /opt/af/lib/site > /h/a/env/lib/site/afhub-facility.pth"],
        ),
        (
            {**CONDA, "afhub": None, "python": "3.12.1"},
            ["Python 3.12 and the facility's packages need Python 3.11", "python=3.11"],
        ),
    ],
)
def test_what_an_environment_lacks_is_said_as_what_to_install(found, says):
    problem = user_env.requirements_problem(
        found,
        gateway="2026.3.0",
        facility={**FACILITY, "python": "3.11.7", "site": "/opt/af/lib/site"},
        facility_python="/opt/af/bin/python",
        path="/h/a/env",
    )
    if says is None:
        assert problem is None
        return
    assert problem.startswith("your environment /h/a/env cannot run Dask workers")
    for text in says:
        assert text in problem
    if "pip install" in " ".join(says):
        assert "/h/a/env/bin/python -m pip install" in problem
    assert ("-m venv" in problem) == (not found.get("conda") and "afhub" in " ".join(says))


def test_the_probe_reports_versions_and_prefix_as_package_versions_does():
    out = subprocess.run(
        [sys.executable, "-c", user_env.PROBE], capture_output=True, text=True, check=True
    ).stdout
    found = user_env.parse_probe(out)
    from afhub.server_ext.dask_versions import package_versions

    assert {k: found[k] for k in package_versions()} == package_versions()
    assert found["prefix"] == sys.prefix and found["afhub"]
    assert found["conda"] is False and found["site"] in sys.path  # this venv is not conda
    assert user_env.parse_probe("garbage\n") is None and user_env.parse_probe("") is None


# ---- the gateway's check, as root with real accounts and real venvs --------------------------

OWNER, OTHER = root_paths.OWNER, root_paths.OTHER
accounts = root_paths.accounts  # the fixture: real accounts, removed after
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="acting for other accounts needs root")


@pytest.fixture(scope="module")
def envs(accounts):
    """The owner's venvs: ``good`` (the server environment's packages through a .pth, like a
    ``--system-site-packages`` venv), ``bare`` (nothing installed), ``shared`` (group-writable);
    and ``conda``, a conda-layout prefix with its own dask, distributed and dask-gateway."""
    pw = accounts[OWNER]
    top = os.path.join(pw.pw_dir, "envs")  # made, as all in her home, by her account
    out = {}
    for name, pth in (("good", True), ("bare", False), ("shared", True)):
        path = os.path.join(top, name)
        remove_as_user(path, pw.pw_uid)
        make_user_venv(Path(path), uid=pw.pw_uid, ipykernel=pth)
        out[name] = path
    subprocess.run(["chmod", "0775", out["shared"]], check=True, **as_user(pw.pw_uid))
    out["conda"] = os.path.join(top, "conda")
    remove_as_user(out["conda"], pw.pw_uid)
    make_conda_prefix(Path(out["conda"]), uid=pw.pw_uid)
    out["conda-bare"] = os.path.join(top, "conda-bare")  # its own dask, no afhub
    remove_as_user(out["conda-bare"], pw.pw_uid)
    make_conda_prefix(Path(out["conda-bare"]), uid=pw.pw_uid, facility=False)
    yield out
    remove_as_user(top, pw.pw_uid)


class Backend(AfhubLocalBackend):
    """The local backend as a root gateway runs it, hub users named as their accounts."""

    def account(self, username: str) -> str:
        return username

    def _owner_settings(self) -> dict:
        return {"default_prefix": os.path.dirname(os.path.dirname(server_python()[0]))}


def check(username: str, path: str):
    backend = Backend(run_as_owner=True)
    try:
        return asyncio.run(backend.user_environment(username, path))
    except PublicException as e:
        return e


# a venv and a conda environment are alike to the gateway
OWN_KINDS = pytest.mark.parametrize("kind", ["good", "conda"])


@root_only
@OWN_KINDS
def test_the_owners_own_environment_is_accepted(accounts, envs, kind):
    assert check(OWNER, envs[kind]) == envs[kind]


@root_only
@OWN_KINDS
def test_the_probe_runs_as_the_owner(accounts, envs, kind):
    backend = Backend(run_as_owner=True)
    python = os.path.join(envs[kind], "bin", "python")
    pw = accounts[OWNER]
    code = "import json, os, sys; print(json.dumps({'uid': os.getuid(), 'prefix': sys.prefix}))"
    orig = user_env.PROBE
    try:
        user_env.PROBE = code
        found = asyncio.run(backend._probe(python, OWNER, pw.pw_dir))
    finally:
        user_env.PROBE = orig
    assert found == {"uid": pw.pw_uid, "prefix": envs[kind]}


@root_only
@OWN_KINDS
def test_another_users_environment_is_refused(accounts, envs, kind):
    e = check(OTHER, envs[kind])
    assert isinstance(e, PublicException)
    assert str(e).startswith("environment: ")
    assert envs[kind] in str(e) and "not inside your home" in str(e)


@root_only
@OWN_KINDS
def test_a_link_to_another_users_environment_is_not_followed_into_it(accounts, envs, kind):
    pw = accounts[OTHER]
    link = os.path.join(pw.pw_dir, "stolen")
    link_as_user(envs[kind], link, pw.pw_uid)  # planted by her account
    try:
        e = check(OTHER, link)
        assert isinstance(e, PublicException)
        assert "is not an environment of yours" in str(e)
        assert "another user" in str(e)
    finally:
        remove_as_user(link, pw.pw_uid)


@root_only
def test_an_environment_others_may_change_is_refused(accounts, envs):
    e = check(OWNER, envs["shared"])
    assert isinstance(e, PublicException)
    assert "writable by others" in str(e)


@root_only
def test_a_missing_environment_is_refused(accounts, envs):
    e = check(OWNER, os.path.join(accounts[OWNER].pw_dir, "envs", "nope"))
    assert isinstance(e, PublicException) and "does not exist" in str(e)


@root_only
def test_an_environment_without_dask_is_refused_saying_what_to_install(accounts, envs):
    e = check(OWNER, envs["bare"])
    assert isinstance(e, PublicException)
    text = str(e)
    assert "cannot run Dask workers" in text
    bare_python = os.path.join(envs["bare"], "bin", "python")
    assert f"{bare_python} -m pip install dask==" in text and "dask-gateway==" in text
    assert "--system-site-packages" in text  # afhub: made from the facility's Python
    # the facility's versions are what it suggests
    facility = json.loads(
        subprocess.run(
            [server_python()[0], "-c", "import json, dask; print(json.dumps(dask.__version__))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert f"dask=={facility}" in text


@root_only
def test_a_conda_environment_without_afhub_is_told_the_line_that_fixes_it(accounts, envs):
    """The refusal's own command, run by the owner as written, makes the environment fit."""
    e = check(OWNER, envs["conda-bare"])
    assert isinstance(e, PublicException)
    text = str(e)
    assert "no afhub" in text and "-m venv" not in text  # not a venv command for conda
    command = re.search(r"`(echo [^`]+\.pth)`", text)
    assert command, text
    pw = accounts[OWNER]
    subprocess.run(["sh", "-c", command.group(1)], check=True, **as_user(pw.pw_uid))
    assert check(OWNER, envs["conda-bare"]) == envs["conda-bare"]


class SharedAccountBackend(AfhubLocalBackend):
    """The local backend of a hub whose servers and clusters all run as its own account
    (single-user mode, ``shared-uid``): homes are ``<home_root>/<hub name>``."""

    home_root = ""

    def _owner_settings(self) -> dict:
        prefix = os.path.dirname(os.path.dirname(server_python()[0]))
        return {"default_prefix": prefix, "home_root": self.home_root}


def test_one_account_hubs_check_the_users_home_under_the_home_root(tmp_path):
    homes = tmp_path / "home"
    venv = make_user_venv(homes / "alice" / "envs" / "x", uid=os.geteuid(), ipykernel=True)
    (homes / "bob").mkdir()
    backend = SharedAccountBackend(run_as_owner=False)
    backend.home_root = str(homes)

    def run(user, path):
        try:
            return asyncio.run(backend.user_environment(user, path))
        except PublicException as e:
            return e

    assert run("alice", str(venv)) == str(venv)
    refused = run("bob", str(venv))
    assert isinstance(refused, PublicException) and "not inside your home" in str(refused)
    assert str(homes / "bob") in str(refused)
