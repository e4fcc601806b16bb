"""An identity-provider outage longer than two token lifetimes, on the embedded default.

The demo provider is frozen with SIGSTOP (it accepts connections and never answers: a hung
IdP, the hard case) while alice has her server, a kernel and a one-worker Dask cluster, with
12 s tokens, a 4 s renewal margin, the hub re-checking her login at the provider every 5 s of
her requests and a 2 s timeout on every provider call. Throughout the outage her hub session,
server, kernel and cluster keep working, and her token status (what the sidebar shows) says
the token is stale *because the identity provider is unavailable*. After SIGCONT renewal
resumes by itself (no new login: the same browser session), the token file gets a later
expiry, and the Dask worker gets the renewed token. About 90 s.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path

import psutil
import pytest
from facility import example_values, wait_for
from kernel_ws import Kernel

pytestmark = pytest.mark.integration

LIFETIME = 12  # s: the demo provider's access tokens
MARGIN = 4  # s before expiry a server renews
OUTAGE = 2 * LIFETIME + 8  # s the provider stays stopped: more than two lifetimes


def _values() -> dict:
    values = example_values("local")
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["auth"]["refresh_age"] = 5  # the hub re-checks the login at the provider often
    values["auth"]["upstream_timeout"] = 2
    values["tokens"] = {"refresh_margin": MARGIN}
    values["culling"] = {"enabled": False}
    values["dask"]["server_check_interval"] = 1
    return values


@pytest.fixture(scope="module")
def fac(start_facility):
    facility = start_facility(_values(), name="idp-outage")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    hs = fac.login_with_server("alice")
    k = Kernel(hs)
    out = k.json(
        "from afhub.server_ext.dask import new_cluster\nimport json\n"
        "cluster = new_cluster(workers=1)\nclient = cluster.get_client()\n"
        "client.wait_for_workers(1)\n"
        "print(json.dumps(len(client.scheduler_info()['workers'])))",
        timeout=240,
    )
    assert out == 1
    return hs, k


# the token the notebook sees and the one on every worker (only whether they are the same)
WORKER_TOKENS = """
import json, os
def token():
    return open(os.environ["BEARER_TOKEN_FILE"]).read().strip()
mine = token()
print(json.dumps([t == mine for t in client.run(token).values()]))
"""


def status(hs) -> dict:
    r = hs.server_api("GET", "afhub/api/token")
    assert r.status_code == 200, r.text
    return r.json()


def expiry(path: str) -> int:
    payload = Path(path).read_text().strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def session_works(hs) -> None:
    """The browser session: hub pages and API (the hub's re-check of the login at the provider
    runs on these), the user's server."""
    r = hs.get("hub/home", allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.headers.get("Location"))
    assert hs.api("GET", "user").status_code == 200
    assert hs.server_api("GET", "api/status").status_code == 200


def test_sessions_survive_an_idp_outage_and_renewal_resumes(fac, alice):
    hs, k = alice
    healthy = wait_for(lambda: (s := status(hs))["state"] == "ok" and s, LIFETIME, what="ok")
    wait_for(lambda: all(k.json(WORKER_TOKENS)), MARGIN + 5, what="the worker has the token")
    before = expiry(healthy["path"])
    idp = psutil.Process(fac.idp_pid())
    stopped = time.monotonic()
    idp.send_signal(signal.SIGSTOP)
    try:
        stale = wait_for(
            lambda: (s := status(hs))["state"] == "refresh_failing" and not s["valid"] and s,
            LIFETIME + 30,
            what="the token expired while the provider is stopped",
        )
        # what the sidebar shows: stale, and why
        assert stale["last_error"].startswith("identity provider unavailable: "), stale
        assert "token refresh" in stale["last_error"], stale
        while time.monotonic() - stopped < OUTAGE:
            session_works(hs)
            time.sleep(2)
        assert k.json("import json\nprint(json.dumps(client.submit(sum, [40, 2]).result()))") == 42
        assert not status(hs)["valid"]
    finally:
        idp.send_signal(signal.SIGCONT)
    outage = time.monotonic() - stopped
    assert outage > 2 * LIFETIME
    resumed = wait_for(
        lambda: (s := status(hs))["state"] == "ok" and s["valid"] and s,
        LIFETIME + 20,
        what="renewal after the provider came back",
    )
    assert resumed["last_error"] is None
    assert expiry(resumed["path"]) > before
    session_works(hs)  # the same session: no new login
    wait_for(lambda: all(k.json(WORKER_TOKENS)), MARGIN + 10, what="the worker's renewed token")
    print(f"provider stopped {outage:.0f} s ({outage / LIFETIME:.1f} token lifetimes)")
