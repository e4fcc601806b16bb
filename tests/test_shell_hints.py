"""Shell commands shown to users are quoted (shlex.join): a prefix with spaces or shell
characters is pasted as one argument, never run as more commands."""

from __future__ import annotations

import shlex

import pytest
from afhub.server_ext.envs import EnvFacts, runnable_reason


@pytest.mark.parametrize(
    "prefix",
    [
        "/home/u/envs/ana",
        "/home/u/my envs/ana",
        "/home/u/envs/x; rm -rf ~",
        "/home/u/envs/$(touch pwned)",
        "/home/u/envs/it's",
    ],
)
def test_install_hint_is_one_quoted_command(prefix):
    facts = EnvFacts(
        prefix=prefix, realpath=prefix, kind="venv", name="ana", source="home",
        python=f"{prefix}/bin/python",
    )  # fmt: skip
    reason = runnable_reason(facts, [])
    cmd = reason.split("`")[1]
    assert shlex.split(cmd) == [f"{prefix}/bin/python", "-m", "pip", "install", "ipykernel"]
