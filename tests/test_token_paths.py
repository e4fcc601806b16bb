"""Where the data-access token may live, and how the renewer writes it.

Tables: the path rule (`tokens.file` at `afhub check`, BEARER_TOKEN_FILE in the server) and the
writer's directory handling on real directories, including a symlink planted where the token
or its directory goes, directories others can write to, and another user's directory. Runs as
any user; the cases that need a second account (chown to nobody) are skipped without root.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from afhub.authenticator import auth_section
from afhub.server_ext import token as srv

ROOT = os.geteuid() == 0
request_cleanup: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _cleanup():
    yield
    for p in request_cleanup:
        shutil.rmtree(p, ignore_errors=True)


NOBODY = 65534


@pytest.mark.parametrize(
    "template, problem",
    [
        # per-user locations
        ("$XDG_RUNTIME_DIR/bt_u$UID", None),
        ("${XDG_RUNTIME_DIR}/bt", None),
        ("~/.tokens/bt_u$UID", None),
        ("$HOME/.afhub/bt", None),
        ("/scratch/$UID/bt", None),
        ("/run/user/$UID/bt_u$UID", None),
        ("$SCRATCH/u$UID/tokens/bt", None),
        ("", None),  # the default
        # shared directories: the uid only in the file name is not enough
        ("/tmp/bt_u$UID", "must be a per-user location"),
        ("/var/tmp/tokens/bt", "must be a per-user location"),
        ("$SCRATCH/bt_u$UID", "must be a per-user location"),
        ("/home/shared/bt", "must be a per-user location"),
        # system locations, even in a uid directory
        ("/etc/$UID/bt", "system directory /etc"),
        ("/usr/local/$UID/bt", "system directory /usr"),
        ("/run/$UID/bt", "system directory /run"),
        ("/root/$UID/bt", "system directory /root"),
        # escapes and non-files
        ("~/../../etc/bt", "'.' or '..' segments"),
        ("/scratch/$UID/../bt", "'.' or '..' segments"),
        ("$XDG_RUNTIME_DIR/./bt", "'.' or '..' segments"),
        ("~/tokens/", "must name a file"),
        ("~/bt\n", "control characters"),
    ],
)
def test_token_path_rule(template, problem):
    got = srv.token_path_problem(template)
    assert (got is None) if problem is None else (problem in got), got


@pytest.mark.parametrize(
    "file, message",
    [
        ("/tmp/bt_u$UID", "must be a per-user location"),
        ("/etc/$UID/passwd", "must not be in the system directory /etc"),
        ("~/../../etc/shadow", "must not contain '.' or '..' segments"),
    ],
)
def test_afhub_check_rejects_token_paths_naming_the_key(file, message):
    values = {"auth": {"provider": "dev"}, "tokens": {"file": file}}
    problems = [p for p in auth_section.check(values) if p.path.startswith("tokens")]
    assert [p.path for p in problems] == ["tokens.file"]
    assert problems[0].message.startswith(message)
    assert problems[0].message.endswith(f", got {file!r}")


def test_afhub_check_accepts_per_user_token_paths():
    for file in ("~/.t/bt_u$UID", "/scratch/$UID/bt", "$XDG_RUNTIME_DIR/bt"):
        values = {"auth": {"provider": "dev"}, "tokens": {"file": file}}
        assert [p for p in auth_section.check(values) if p.path.startswith("tokens")] == []


# ------------------------------------------------------------------ the writer on disk


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _setup(kind: str, base):
    """Prepare ``base`` for one case; return the token path to write."""
    d = base / "d"
    if kind == "missing dirs":
        return base / "new" / "deeper" / "bt"
    if kind == "own dir 0755":
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)
    elif kind == "own dir 0700":
        d.mkdir(mode=0o700)
    elif kind == "world-writable dir":
        d.mkdir()
        os.chmod(d, 0o777)
    elif kind == "group-writable dir":
        d.mkdir()
        os.chmod(d, 0o770)
    elif kind == "sticky world-writable ancestor":
        os.chmod(base, 0o1777)
        return base / "mine" / "bt"
    elif kind == "world-writable ancestor":
        os.chmod(base, 0o777)
        return base / "mine" / "bt"
    elif kind == "symlink at the token":
        d.mkdir(mode=0o700)
        (base / "victim").write_text("do not touch\n")
        os.symlink(base / "victim", d / "bt")
    elif kind == "symlinked dir owned by another":
        (base / "elsewhere").mkdir(mode=0o700)
        os.symlink(base / "elsewhere", d)
        os.lchown(d, NOBODY, NOBODY)
    elif kind == "dir owned by another":
        d.mkdir(mode=0o700)
        os.chown(d, NOBODY, NOBODY)
    elif kind == "file where the dir goes":
        d.write_text("x")
    return d / "bt"


@pytest.mark.parametrize(
    "kind, error",
    [
        ("missing dirs", None),
        ("own dir 0755", None),
        ("own dir 0700", None),
        ("sticky world-writable ancestor", None),
        ("symlink at the token", None),  # the link is replaced, its target untouched
        ("world-writable dir", "writable by others"),
        ("group-writable dir", "writable by others"),
        ("world-writable ancestor", "writable by everyone"),
        ("file where the dir goes", "not a directory"),
        pytest.param(
            "dir owned by another",
            "belongs to another user",
            marks=pytest.mark.skipif(not ROOT, reason="needs root to chown"),
        ),
        pytest.param(
            "symlinked dir owned by another",
            "a symlink owned by another user",
            marks=pytest.mark.skipif(not ROOT, reason="needs root to chown"),
        ),
    ],
)
def test_writer_directory_handling(kind, error, tmp_path):
    base = tmp_path / "base"
    base.mkdir(mode=0o755)
    path = _setup(kind, base)
    before = {p: (_mode(p), os.lstat(p).st_uid) for p in [base, *base.rglob("*")]}
    if error:
        with pytest.raises(srv.TokenDirError, match=error):
            srv.write_token_file(str(path), "tok")
        assert not os.path.lexists(path) or os.path.islink(path) or kind == "file where"
    else:
        srv.write_token_file(str(path), "tok")
        assert path.read_text() == "tok\n"
        assert not path.is_symlink() and _mode(path) == 0o600
    # nothing that existed before was chmod-ed or chown-ed; no temp file left behind
    for p, (mode, uid) in before.items():
        if p != path and os.path.lexists(p):
            assert (_mode(p), os.lstat(p).st_uid) == (mode, uid), p
    assert not [p for p in base.rglob(".bt-*")]
    if kind == "symlink at the token":
        assert (base / "victim").read_text() == "do not touch\n"
    if kind == "missing dirs":  # what it created is private
        assert _mode(base / "new") == _mode(base / "new" / "deeper") == 0o700


@pytest.mark.skipif(not ROOT, reason="needs root to act as another account")
def test_writer_passes_a_home_root_it_may_enter_but_not_list(tmp_path_factory):
    """As a per-user account: /home/afhub-like 0711 root directory, own 0700 home below it.
    (Under /tmp: pytest's own tmp dirs are 0700 root, which no account may pass.)"""
    root = Path(tempfile.mkdtemp(prefix="afhub-test-tokens-"))
    request_cleanup.append(root)
    os.chmod(root, 0o711)
    home = root / "alice"
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    path = home / ".afhub" / "tokens" / "bt"
    pid = os.fork()
    if pid == 0:  # the child becomes the account and writes, as the server would
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            srv.write_token_file(str(path), "tok")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_text() == "tok\n" and path.stat().st_uid == NOBODY
    assert _mode(path.parent) == _mode(path.parent.parent) == 0o700
