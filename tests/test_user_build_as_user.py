"""The helpers building environments in a user's home (``kernels_helpers.make_user_venv``,
``conda_prefix.make_conda_prefix``) build them as the user, not as root (ARCHITECTURE §10: root
acting on a path in a directory a user can write is where isolation breaks).

As root with a real account (``test_root_paths.accounts``): what they make is the account's from
the start (its uid and group, no chown after, nothing group- or world-writable), and a link the
user planted on the way to root's own directory leads nowhere: the account cannot write there,
so the build fails and root's directory stays empty (built as root, it would be filled, then
handed to the user).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import test_root_paths as root_paths
from conda_prefix import make_conda_prefix
from kernels_helpers import link_as_user, make_user_venv, remove_as_user

OWNER = root_paths.OWNER
accounts = root_paths.accounts  # the fixture: real accounts, removed after
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting for other accounts needs root")


def test_a_venv_is_the_users_from_the_start(accounts):
    pw = accounts[OWNER]
    top = Path(pw.pw_dir, "asuser-envs")
    remove_as_user(top, pw.pw_uid)
    try:
        venv = make_user_venv(top / "v", uid=pw.pw_uid, ipykernel=True)
        assert list(venv.glob("lib/python3*/site-packages/_afhub_test_ipykernel.pth"))
        for p in [top, *top.rglob("*")]:
            st = os.lstat(p)
            # the user's group too: root's lchown(uid, -1) left root's
            assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid), p
            if not stat.S_ISLNK(st.st_mode):
                assert not st.st_mode & 0o022, p
    finally:
        remove_as_user(top, pw.pw_uid)


@pytest.fixture
def planted(accounts):
    """``~/planted``: the user's link to a directory only root may write (``(link, target)``)."""
    pw = accounts[OWNER]
    target = tempfile.mkdtemp(prefix="afhub-root-only-")
    os.chmod(target, 0o755)
    link = os.path.join(pw.pw_dir, "planted")
    link_as_user(target, link, pw.pw_uid)  # by her account
    try:
        yield Path(link), target
    finally:
        remove_as_user(link, pw.pw_uid)
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.parametrize("make", ["venv", "conda"])
def test_a_planted_link_does_not_lead_the_build_into_roots_directory(accounts, planted, make):
    link, target = planted
    uid = accounts[OWNER].pw_uid
    with pytest.raises(subprocess.CalledProcessError):
        if make == "venv":
            make_user_venv(link / "env", uid=uid, ipykernel=True)
        else:
            make_conda_prefix(link / "env", uid=uid)
    assert os.listdir(target) == []
