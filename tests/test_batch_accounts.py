"""One hub user, one system account on every backend: the Slurm and HTCondor jobs, the local
backend's server and the Dask clusters all run as ``accounts.system_username(prefix, name)``.

A table of hub names that need no change, escaping, lower-casing or shortening; each backend's
own method is asked (no shared helper in the test), so a backend that builds the name its own
way fails here.
"""

from __future__ import annotations

import pytest
from auth_helpers import MemoryUser
from traitlets.config import Config

# hub name, prefix -> the account (literal: the specification, not recomputed)
TABLE = [
    ("alice", "", "alice"),
    ("alice", "af-", "af-alice"),
    ("bob_2", "", "bob_2"),
    ("Alice", "", "alice.hpcrayuxhrcy"),  # upper case: lower-cased, hash keeps Alice != alice
    ("john.doe", "", "john-doe.gd3jm4f3ujpi"),  # '.' is escaped (distinct from john-doe)
    ("john-doe", "", "john-doe"),
    ("john-doe-30f696", "", "john-doe-30f696"),  # john.doe's name before issue 19: not his now
    ("bob@cern.ch", "af-", "af-bob-cern-ch.6ox2xyirpimt"),
    ("x" * 40, "", "x" * 19 + ".xwit75ucipkb"),  # 32 characters at most
    ("x" * 40, "af-", "af-" + "x" * 16 + ".xwit75ucipkb"),
    ("9lives", "", "_9lives.xsdhgvw6aihj"),  # an account name cannot start with a digit
]


def _batch(cls_name: str, name: str, prefix: str) -> str:
    from afhub.spawner import batch

    c = Config()
    setattr(c, cls_name, Config({"account_prefix": prefix}))
    return getattr(batch, cls_name)(config=c, user=MemoryUser(name, None)).afhub_account()


def _local(name: str, prefix: str) -> str:
    from afhub.spawner.local import LocalProfileSpawner

    c = Config()
    c.LocalProfileSpawner.account_prefix = prefix
    return LocalProfileSpawner(config=c, user=MemoryUser(name, None)).account_name()


def _dask(name: str, prefix: str) -> str:
    from afhub.hub_config.gateway.local import AfhubLocalBackend

    return AfhubLocalBackend(account_prefix=prefix).account(name)


@pytest.mark.parametrize("name, prefix, account", TABLE)
def test_every_backend_maps_a_hub_user_to_the_same_account(name, prefix, account):
    got = {
        "slurm": _batch("SlurmProfileSpawner", name, prefix),
        "htcondor": _batch("CondorProfileSpawner", name, prefix),
        "local": _local(name, prefix),
        "dask": _dask(name, prefix),
    }
    assert got == dict.fromkeys(got, account)
    assert len(account) <= 32


def test_escaped_names_never_collide():
    names = ["john.doe", "john-doe", "John-Doe", "john_doe", "john doe"]
    assert len({_batch("SlurmProfileSpawner", n, "") for n in names}) == len(names)
