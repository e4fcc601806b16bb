"""The local backend's accounts: names, modes, the single-user rule and path reachability
(pure), plus the single-user and shared-uid modes through a real hub (forced as root: a hub
that does not run as root gets single-user mode by default)."""

from __future__ import annotations

import os

import pytest
from afhub.spawner import accounts as a
from afhub.spawner.accounts import Node


@pytest.mark.parametrize(
    "prefix, name, expected",
    [
        ("afhub-", "alice", "afhub-alice"),
        ("jupyter-", "bob_2", "jupyter-bob_2"),
        ("afhub-", "Alice", "afhub-alice-3bc510"),  # upper case: cleaned + hash
        ("afhub-", "a.b", "afhub-a-b-2e7336"),  # distinct from a-b
        ("afhub-", "a-b", "afhub-a-b"),
        ("afhub-", "bob@cern.ch", "afhub-bob-cern-ch-f3afab"),
        ("afhub-", "x" * 40, "afhub-" + "x" * 19 + "-bd913f"),  # 32 characters at most
    ],
)
def test_system_username(prefix, name, expected):
    got = a.system_username(prefix, name)
    assert got == expected and len(got) <= 32


def test_system_names_never_collide():
    names = ["a.b", "a-b", "a_b", "A-b", "a b", "a/b"]
    assert len({a.system_username("afhub-", n) for n in names}) == len(names)


@pytest.mark.parametrize(
    "mode, euid, expected",
    [
        ("auto", 0, "system"),
        ("auto", 1000, "single-user"),
        ("system", 1000, "system"),  # the spawner then refuses: root is required
        ("single-user", 0, "single-user"),
        ("shared-uid", 1000, "shared-uid"),
    ],
)
def test_resolve_mode(mode, euid, expected):
    assert a.resolve_mode(mode, euid=euid) == expected


@pytest.mark.parametrize(
    "owner, user, refused",
    [(None, "alice", False), ("alice", "alice", False), ("alice", "bob", True)],
)
def test_single_user_refusal(owner, user, refused):
    msg = a.single_user_refusal(owner=owner, user=user)
    assert (msg is not None) == refused
    if refused:
        assert "single-user mode" in msg and owner in msg and "shared-uid" in msg


@pytest.mark.parametrize(
    "nodes, uid, gids, need, blocked",
    [
        # /opt/env/bin/x readable by all
        (
            [("/", 0o755, 0, 0), ("/opt", 0o755, 0, 0), ("/opt/x", 0o755, 0, 0)],
            1001,
            {1001},
            5,
            None,
        ),
        # under /root (0700): stopped there
        (
            [("/", 0o755, 0, 0), ("/root", 0o700, 0, 0), ("/root/x", 0o755, 0, 0)],
            1001,
            {1001},
            5,
            "/root",
        ),
        # a home 0711 root: may pass, cannot list
        ([("/", 0o755, 0, 0), ("/home/afhub", 0o711, 0, 0)], 1001, {1001}, 1, None),
        ([("/", 0o755, 0, 0), ("/home/afhub", 0o711, 0, 0)], 1001, {1001}, 4, "/home/afhub"),
        # own home 0700
        (
            [("/", 0o755, 0, 0), ("/h", 0o711, 0, 0), ("/h/a", 0o700, 1001, 1001)],
            1001,
            {1001},
            7,
            None,
        ),
        # another's home 0700
        (
            [("/", 0o755, 0, 0), ("/h", 0o711, 0, 0), ("/h/b", 0o700, 1002, 1002)],
            1001,
            {1001},
            1,
            "/h/b",
        ),
        # group access
        ([("/", 0o755, 0, 0), ("/g", 0o750, 0, 50)], 1001, {1001, 50}, 5, None),
        # root passes everything
        ([("/", 0o700, 5, 5)], 0, {0}, 7, None),
    ],
)
def test_blocked_at(nodes, uid, gids, need, blocked):
    got = a.blocked_at([Node(*n) for n in nodes], uid=uid, gids=gids, need=need)
    assert got == blocked


# ------------------------------------------------------------------ through a real hub


def _values(mode: str) -> dict:
    return {
        "hub": {"ip": "127.0.0.1"},
        "auth": {
            "provider": "dev",
            "allowed_groups": ["physicists"],
            "dev": {
                "port": 0,
                "users": [
                    {"name": "alice", "groups": ["physicists"]},
                    {"name": "bob", "groups": ["physicists"]},
                ],
            },
        },
        "backend": {"type": "local", "local": {"accounts": mode}},
        "culling": {"enabled": False},
    }


@pytest.mark.integration
def test_single_user_mode_serves_one_user_and_tells_the_others(start_facility):
    fac = start_facility(_values("single-user"), name="single-user")
    alice, bob = fac.login("alice"), fac.login("bob")
    assert "Warning" not in alice.get("hub/spawn").text  # single-user is safe: no warning
    assert alice.spawn().status_code in (201, 202)
    alice.wait_ready()
    r = bob.spawn()
    assert r.status_code == 403
    message = r.json()["message"]
    assert "single-user mode" in message and "serves alice only" in message
    assert bob.server_model() is None  # nothing half-started
    # alice's server runs as the hub's own account (no per-user account was made)
    assert fac.account("alice") is None
    assert (fac.home("alice")).stat().st_uid == os.geteuid()
    # after alice stops, bob is still refused: files of one user stay that user's
    alice.stop_server()
    assert bob.spawn().status_code == 403
    fac.stop()


@pytest.mark.integration
def test_shared_uid_mode_warns_on_the_spawn_page(start_facility):
    fac = start_facility(_values("shared-uid"), name="shared-uid")
    page = fac.login("bob").get("hub/spawn").text
    assert "as the same system account" in page and "shared-uid" in page
    assert "Other users of this hub can read your files" in page
    fac.stop()
