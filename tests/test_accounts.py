"""The local backend's accounts: names, modes, the single-user rule and path reachability
(pure), plus the single-user and shared-uid modes through a real hub (forced as root: a hub
that does not run as root gets single-user mode by default)."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from afhub.spawner import accounts as a
from afhub.spawner.accounts import Node
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "prefix, name, expected",
    [
        ("afhub-", "alice", "afhub-alice"),
        ("jupyter-", "bob_2", "jupyter-bob_2"),
        ("afhub-", "Alice", "afhub-alice.hpcrayuxhrcy"),  # upper case: cleaned + . + hash
        ("afhub-", "a.b", "afhub-a-b.fzztnxeoxkd6"),  # distinct from a-b
        ("afhub-", "a-b", "afhub-a-b"),
        ("afhub-", "bob@cern.ch", "afhub-bob-cern-ch.6ox2xyirpimt"),
        ("afhub-", "x" * 40, "afhub-" + "x" * 13 + ".xwit75ucipkb"),  # 32 characters at most
        ("", "9lives", "_9lives.xsdhgvw6aihj"),  # an account name cannot start with a digit
        ("", ".", "_-.zw2o4kxknhgg"),
        # issue 19: john.doe was afhub-john-doe-30f696, the plain name of hub user john-doe-30f696
        ("afhub-", "john.doe", "afhub-john-doe.gd3jm4f3ujpi"),
        ("afhub-", "john-doe-30f696", "afhub-john-doe-30f696"),  # plain names keep their name
        ("", "john-doe.gd3jm4f3ujpi", "john-doe-gd3jm4f3uj.26tqpc463kne"),  # '.': hashed again
    ],
)
def test_system_username(prefix, name, expected):
    got = a.system_username(prefix, name)
    assert got == expected and len(got) <= 32


def test_system_names_never_collide():
    names = ["a.b", "a-b", "a_b", "A-b", "a b", "a/b"]
    assert len({a.system_username("afhub-", n) for n in names}) == len(names)


@pytest.mark.parametrize(
    "prefix, name, legacy",
    [
        ("afhub-", "alice", "afhub-alice"),  # valid names: the same account as ever
        ("afhub-", "john.doe", "afhub-john-doe-30f696"),  # what releases before issue 19 made
        ("", "x" * 40, "x" * 25 + "-bd913f"),
    ],
)
def test_legacy_username(prefix, name, legacy):
    assert a.legacy_username(prefix, name) == legacy


# a Linux account name as useradd, sudo and Slurm take it; hub names as JupyterHub may pass them
ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
hub_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)
prefixes = st.from_regex(r"\A([a-z_][a-z0-9_-]{0,15})?\Z")


@settings(max_examples=500, deadline=None)
@given(prefix=prefixes, one=hub_names, data=st.data())
def test_distinct_hub_names_never_share_an_account(prefix, one, data):
    first = a.system_username(prefix, one)
    # any name, or one close to the first: its account name as a hub name (issue 19), cased
    two = data.draw(
        st.one_of(
            hub_names,
            st.just(first[len(prefix) :]) if first.startswith(prefix) else hub_names,
            st.just(one.upper()),
            st.just(re.sub(r"[^a-z0-9_-]", "-", one.lower())),
        )
    )
    second = a.system_username(prefix, two)
    assert ACCOUNT_NAME.fullmatch(first) and ACCOUNT_NAME.fullmatch(second)
    assert (first == second) == (one == two)


@settings(max_examples=500, deadline=None)
@given(prefix=prefixes, name=hub_names)
def test_no_plain_name_reaches_a_hashed_account(prefix, name):
    """The collision of issue 19: the hashed account of one name, asked for as a plain name."""
    hashed = a.system_username(prefix, name)
    if hashed != prefix + name and hashed.startswith(prefix):
        assert a.system_username(prefix, hashed[len(prefix) :]) != hashed


@pytest.mark.parametrize(
    "name, comment",
    [
        ("alice", "afhub user alice"),  # what every release wrote: existing accounts match
        ("john.doe", "afhub user john.doe"),
        ("a:b", "afhub user =" + hashlib.sha256(b"a:b").hexdigest()),  # ':' ends a passwd field
        ("=x", "afhub user =" + hashlib.sha256(b"=x").hexdigest()),
        ("x" * 90, "afhub user =" + hashlib.sha256(b"x" * 90).hexdigest()),
    ],
)
def test_owner_comment(name, comment):
    assert a.owner_comment(name) == comment


@pytest.mark.parametrize(
    "text, uid_range",
    [
        ("", (1000, 60000)),
        ("UID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n", (1000, 60000)),
        ("# UID_MIN 10\nUID_MIN 500\nUID_MAX 4000000\n", (500, 4000000)),
        ("UID_MIN 500\nUID_MIN 2000\n", (2000, 60000)),  # the last one wins
        ("UID_MIN lots\n", (1000, 60000)),
    ],
)
def test_parse_uid_range(text, uid_range):
    assert a.parse_uid_range(text) == uid_range


REC = "afhub user alice"


@pytest.mark.parametrize(
    "account, uid, comment, records, refused",
    [
        ("alice", 1001, "Alice Smith", False, None),  # a site's account (batch)
        ("afhub-alice", 1001, REC, True, None),  # afhub's record of alice
        ("root", 0, "root", False, "which is root"),
        ("daemon", 1, "daemon", False, "a system account (uid 1, below UID_MIN 1000)"),
        ("slurm", 64030, "", False, "a system account (uid 64030, above UID_MAX 60000)"),
        ("munge", 102, "", False, "a system account (uid 102, below UID_MIN 1000)"),
        ("bigdir", 1234500001, "", False, None),  # directory (LDAP, AD) uids above 65535
        ("jupyterhub", 1500, "", False, "the account the hub itself runs as"),
        ("nobody", 65534, "nobody", False, "the system's 'nobody'"),
        ("root", 0, REC, True, "which is root"),  # a record never makes root usable
        # the account records another hub user: refused everywhere
        ("afhub-john-doe-30f696", 1002, "afhub user john.doe", False, "belongs to another hub"),
        ("afhub-john-doe-30f696", 1002, "afhub user john.doe", True, "belongs to another hub"),
        # where afhub creates accounts, one without its record is not adopted
        ("afhub-alice", 1003, "Alice Smith", True, "belongs to no afhub user"),
        ("afhub-alice", 1003, "", True, "belongs to no afhub user"),
    ],
)
def test_account_refusal(account, uid, comment, records, refused):
    msg = a.account_refusal(
        user="alice",
        account=account,
        uid=uid,
        comment=comment,
        uid_min=1000,
        uid_max=60000,
        hub_uid=1500,
        records=records,
    )
    if refused is None:
        assert msg is None
    else:
        assert refused in msg and repr(account) in msg and "'alice'" in msg


@pytest.mark.parametrize(
    "name, home",
    [
        ("alice", "/home/afhub/alice"),
        ("john.doe", "/home/afhub/john.doe"),
        ("a..b", "/home/afhub/a..b"),
        ("..", None),
        (".", None),
        ("../etc", None),
        ("a/b", None),
        (".afhub-single-user", None),  # the single-user owner file of the home root
        (".bashrc", None),
        ("a\0b", None),
        ("", None),
    ],
)
def test_home_path_stays_one_component_of_the_root(name, home):
    if home is None:
        with pytest.raises(a.AccountRefused, match="cannot be a home directory name"):
            a.home_path("/home/afhub", name)
    else:
        assert a.home_path("/home/afhub", name) == home


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


def _clusters(fac, session):
    """``(post, listed, delete)``: create a cluster, list, stop one, as ``session``'s user."""
    import requests

    r = session.api("POST", f"users/{session.username}/tokens", json={"note": "dask"})
    assert r.status_code == 201, r.text
    headers = {"Authorization": f"jupyterhub {r.json()['token']}"}
    api = fac.url + "services/dask-gateway/api/v1/clusters/"

    def post():
        return requests.post(api, json={"cluster_options": {}}, headers=headers, timeout=60)

    def listed():
        return requests.get(api, headers=headers, timeout=60).json()

    def delete(name):
        return requests.delete(api + name, headers=headers, timeout=60)

    return post, listed, delete


@pytest.mark.integration
def test_single_user_mode_refuses_clusters_to_users_refused_a_server(start_facility):
    """Issue 19 item 8: the gateway serves the one user single-user mode serves, no one else
    (and no one before that user has started a server)."""
    values = _values("single-user")
    values["dask"] = {"enabled": True}
    fac = start_facility(values, name="single-user-dask")
    alice, bob = fac.login("alice"), fac.login("bob")
    alice_post, alice_listed, alice_delete = _clusters(fac, alice)
    bob_post, bob_listed, _ = _clusters(fac, bob)
    r = bob_post()  # no one has started a server yet: no one owns this hub's account
    assert r.status_code == 422 and "start your server first" in r.text, (r.status_code, r.text)
    assert alice.spawn().status_code in (201, 202)
    alice.wait_ready()
    r = bob_post()
    assert r.status_code == 422, (r.status_code, r.text)
    assert "single-user mode" in r.text and "serves alice only" in r.text
    assert bob_listed() == {}  # nothing recorded, nothing started
    r = alice_post()  # the user it serves still gets clusters
    assert r.status_code == 201, (r.status_code, r.text)
    name = r.json()["name"]
    assert list(alice_listed()) == [name]
    assert alice_delete(name).status_code == 204
    fac.stop()


@pytest.mark.integration
def test_shared_uid_mode_warns_on_the_spawn_page(start_facility):
    fac = start_facility(_values("shared-uid"), name="shared-uid")
    page = fac.login("bob").get("hub/spawn").text
    assert "as the same system account" in page and "shared-uid" in page
    assert "Other users of this hub can read your files" in page
    fac.stop()
