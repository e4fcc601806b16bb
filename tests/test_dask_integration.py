"""Dask Gateway on a real facility: ``afhub up`` (hub, proxy, demo OIDC provider) with the real
dask-gateway-server as a hub-managed service, local backend; real user servers and kernels.

Order matters (one facility, shared state): alice's cluster, the environment and token on its
workers, a forced renewal reaching them, bob's isolation, option refusals, the REST routes,
then alice's server stopping takes her cluster and its processes with it; stopping the facility
leaves no dask process. Nothing is faked.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urljoin

import psutil
import pytest
import requests
from facility import dask_values, wait_for
from kernel_ws import Kernel

pytestmark = pytest.mark.integration

LIFETIME = 30
MARGIN = 10


def _values() -> dict:
    values = dask_values()
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["tokens"] = {"refresh_margin": MARGIN}
    # system accounts are machine-wide: our own prefix, so parallel runs do not share them
    values["backend"]["local"] = {"account_prefix": "afdask-"}
    return values


@pytest.fixture(scope="module")
def fac(start_facility):
    facility = start_facility(_values(), name="dask")
    yield facility
    facility.stop()


def user_with_kernel(fac, name):
    hs = fac.login_with_server(name)
    assert hs.get(f"user/{name}/lab").status_code == 200
    return hs, Kernel(hs)


@pytest.fixture(scope="module")
def alice(fac):
    return user_with_kernel(fac, "alice")


@pytest.fixture(scope="module")
def bob(fac):
    return user_with_kernel(fac, "bob")


PROBE = """
import json, os, sys
def probe():
    import os, sys, dask, distributed, dask_gateway
    path = os.environ.get("BEARER_TOKEN_FILE")
    token = open(path).read().strip() if path and os.path.exists(path) else None
    argv = open("/proc/self/cmdline").read()
    return {
        "prefix": sys.prefix,
        "uid": os.getuid(),
        "versions": [dask.__version__, distributed.__version__, dask_gateway.__version__],
        "token_path": path,
        "token_mode": oct(os.stat(path).st_mode & 0o777) if token else None,
        "token": token,
        "hub_token_in_env": "JUPYTERHUB_API_TOKEN" in os.environ,
        "token_in_env_values": bool(token) and any(token in v for v in os.environ.values()),
        "token_in_argv": bool(token) and token in argv,
    }
import dask, distributed, dask_gateway
mine = open(os.environ["BEARER_TOKEN_FILE"]).read().strip()
res = client.run(probe)
print(json.dumps({
    "prefix": sys.prefix,
    "uid": os.getuid(),
    "versions": [dask.__version__, distributed.__version__, dask_gateway.__version__],
    "workers": {w: dict(r, same_token=r.pop("token") == mine) for w, r in res.items()},
}))
"""


def same_token_probe(k) -> dict | None:
    """The probe's result when every worker has the notebook's token, else None."""
    out = k.json(PROBE)
    return out if all(w["same_token"] for w in out["workers"].values()) else None


@pytest.fixture(scope="module")
def alice_cluster(alice):
    hs, k = alice
    out = k.json(
        "from afhub.server_ext.dask import new_cluster\n"
        "import json\n"
        "cluster = new_cluster(workers=2)\n"
        "client = cluster.get_client()\n"
        "print(json.dumps({'name': cluster.name, 'n': len(client.scheduler_info()['workers'])}))"
    )
    assert out["n"] == 2
    return out["name"]


def test_alice_cluster_runs_in_her_environment_with_her_token(alice, alice_cluster):
    hs, k = alice
    # the token may be renewed meanwhile: then the workers have the new one within the margin
    out = wait_for(lambda: same_token_probe(k), timeout=MARGIN, interval=1, what="same token")
    assert len(out["workers"]) == 2
    for w in out["workers"].values():
        assert w["uid"] == out["uid"]  # the notebook's account (per-user when the hub is root)
        assert w["prefix"] == out["prefix"]
        assert w["versions"] == out["versions"]
        assert w["token_mode"] == "0o600"
        assert not w["hub_token_in_env"]
        assert not w["token_in_env_values"] and not w["token_in_argv"]


def test_stock_client_works_without_arguments(alice, alice_cluster):
    hs, k = alice
    out = k.json(
        "from dask_gateway import Gateway\nimport json\n"
        "print(json.dumps([c.name for c in Gateway().list_clusters()]))"
    )
    assert out == [alice_cluster]


def test_the_servers_token_sync_lists_clusters_without_importing_dask(alice, alice_cluster):
    # what alice's server runs every few seconds, in a fresh interpreter with her server's
    # environment (gateway address, its API token): the gateway's own answer, and neither
    # dask, distributed nor dask_gateway loaded for it (a server pays for them only once it
    # pushes a token to a running cluster)
    hs, k = alice
    out = k.json(
        "import json, subprocess, sys\n"
        "probe = ('import json, sys\\n'\n"
        "         'from afhub.server_ext.dask_service import DaskService\\n'\n"
        "         'active = DaskService().active_clusters()\\n'\n"
        "         'print(json.dumps({\"active\": active, \"loaded\": sorted(m for m in '\n"
        "         '(\"dask\", \"distributed\", \"dask_gateway\") if m in sys.modules)}))')\n"
        "r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)\n"
        "print(r.stdout.strip().splitlines()[-1] if r.returncode == 0 else json.dumps(r.stderr))"
    )
    assert out == {"active": {alice_cluster: "RUNNING"}, "loaded": []}, out


def test_forced_renewal_reaches_the_workers_within_the_margin(alice, alice_cluster):
    hs, k = alice
    before = hs.server_api("GET", "afhub/api/token").json()["renewals"]
    r = hs.server_api("POST", "afhub/api/token")  # the hub may answer "just refreshed" ...
    assert r.status_code == 200, r.text
    wait_for(  # ... then the regular renewal comes within a lifetime
        lambda: hs.server_api("GET", "afhub/api/token").json()["renewals"] > before,
        timeout=LIFETIME,
        what="a renewal in alice's server",
    )
    t0 = time.monotonic()
    wait_for(lambda: same_token_probe(k), timeout=MARGIN, interval=1, what="renewed token")
    assert time.monotonic() - t0 < MARGIN


def test_workers_added_by_scaling_get_the_token(alice, alice_cluster):
    hs, k = alice
    k.run("cluster.scale(3); client.wait_for_workers(3, timeout=120)")
    out = k.json(PROBE)
    assert len(out["workers"]) == 3
    assert all(w["same_token"] for w in out["workers"].values())


HEP_SPLIT = """
import json
from skhep_testdata import data_path
import uproot
from distributed import get_worker

BRANCHES = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge"]

def dimuon_hist(path, start, stop, where=False):
    # the sample notebook's analysis (spawner/samples/hzz-dimuon.ipynb) on entries [start, stop)
    import awkward as ak, hist, uproot, vector
    vector.register_awkward()
    a = uproot.open(path)["events"].arrays(BRANCHES, entry_start=start, entry_stop=stop)
    mu = ak.zip({"px": a.Muon_Px, "py": a.Muon_Py, "pz": a.Muon_Pz, "E": a.Muon_E,
                 "charge": a.Muon_Charge}, with_name="Momentum4D")
    pairs = mu[ak.num(mu) == 2]
    pairs = pairs[pairs.charge[:, 0] != pairs.charge[:, 1]]
    h = hist.Hist.new.Reg(60, 0, 120, name="mass").Int64()
    h.fill(mass=ak.to_numpy((pairs[:, 0] + pairs[:, 1]).mass))
    return (h, get_worker().address) if where else h

path = data_path("uproot-HZZ.root")
n = uproot.open(path)["events"].num_entries
local = dimuon_hist(path, 0, n)
workers = sorted(client.scheduler_info()["workers"])
cuts = [n * i // 6 for i in range(7)]
futures = [client.submit(dimuon_hist, path, cuts[i], cuts[i + 1], True, pure=False,
                         workers=[workers[i % len(workers)]], allow_other_workers=False)
           for i in range(6)]
parts = client.gather(futures)
total = sum(h for h, _ in parts)
print(json.dumps({"local": local.values().tolist(), "split": total.values().tolist(),
                  "workers": sorted({w for _, w in parts}), "pairs": int(local.sum())}))
"""


def test_hep_sample_split_across_workers_gives_the_local_histogram(alice, alice_cluster):
    hs, k = alice
    out = k.json(HEP_SPLIT, timeout=300)
    assert out["pairs"] > 1000  # the real HZZ file, not an empty selection
    assert out["split"] == out["local"]
    assert len(out["workers"]) >= 2


def test_bob_cannot_see_scale_stop_or_connect_to_alices_cluster(alice, bob, alice_cluster):
    before = len(alice[1].json(PROBE)["workers"])
    hs, k = bob
    out = k.json(
        "from dask_gateway import Gateway\nimport json\n"
        f"name = {alice_cluster!r}\n"
        "gw = Gateway()\n"
        "res = {'listed': [c.name for c in gw.list_clusters()]}\n"
        "for what, fn in [('get', lambda: gw.get_cluster(name)), ('connect', lambda: gw.connect(name)),\n"
        "                 ('scale', lambda: gw.scale_cluster(name, 5)), ('stop', lambda: gw.stop_cluster(name))]:\n"
        "    try:\n"
        "        fn(); res[what] = 'allowed'\n"
        "    except Exception as e:\n"
        "        res[what] = type(e).__name__\n"
        "print(json.dumps(res))"
    )
    assert out["listed"] == []
    for what in ("get", "connect", "scale", "stop"):
        assert out[what] != "allowed", out
    for method, path, body in [
        ("GET", "", None),
        ("POST", "/scale", {"workers": 5}),
        ("POST", "/adapt", {"minimum": 0, "maximum": 5}),
        ("DELETE", "", None),
    ]:
        r = hs.server_api(method, f"afhub/api/dask/clusters/{alice_cluster}{path}", json=body)
        assert r.status_code == 404, (method, path, r.text)
    time.sleep(2)  # a scale or stop that got through would show by now
    assert len(alice[1].json(PROBE)["workers"]) == before


# -- dashboards: through the owner's own server only ------------------------------------------


def dashboard_path(user: str, name: str, page: str = "status") -> str:
    return f"/user/{user}/afhub/dask/clusters/{name}/{page}"


def page_assets(html: str) -> list[str]:
    """The scripts and stylesheets a dashboard page loads (relative URLs, as Bokeh writes
    them)."""
    found = re.findall(r'<(?:script[^>]*src|link[^>]*href)="([^"]+)"', html)
    return [u for u in found if not u.startswith(("http:", "https:", "javascript:"))]


def bokeh_session_token(html: str) -> str:
    m = re.search(r'"token":"([^"]+)"', html)
    assert m, "no Bokeh session token in the page"
    return m.group(1)


def open_bokeh_websocket(hs, page_url: str, token: str):
    """The WebSocket a Bokeh page opens (``<page>/ws``, subprotocols ``bokeh`` + its session
    token), with the session's cookies; returns (status, first frame) or raises."""
    import websocket

    url = hs.url(page_url).replace("http://", "ws://") + "/ws"
    cookies = "; ".join(f"{c.name}={c.value}" for c in hs.session.cookies)
    ws = websocket.create_connection(url, subprotocols=["bokeh", token], cookie=cookies, timeout=30)
    try:
        return ws.getstatus(), ws.getsubprotocol(), ws.recv()
    finally:
        ws.close()


def test_links_point_to_the_owners_server(alice, alice_cluster):
    hs, k = alice
    want = dashboard_path("alice", alice_cluster)
    out = k.json(
        "from dask_gateway import Gateway\nimport json\n"
        "print(json.dumps([cluster.dashboard_link, client.dashboard_link,\n"
        "                  [c.dashboard_link for c in Gateway().list_clusters()]]))"
    )
    assert out == [want, want, [want]]
    r = hs.server_api("GET", f"afhub/api/dask/clusters/{alice_cluster}")
    assert r.status_code == 200 and r.json()["dashboard_link"] == want


def test_alice_opens_her_dashboard_with_its_assets_and_websocket(fac, alice, alice_cluster):
    hs, k = alice
    hs.server_api("GET", "afhub/api/dask/clusters")  # the server's OAuth cookie, as Lab has it
    url = dashboard_path("alice", alice_cluster)
    r0 = r = hs.get(url)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("text/html")
    assert "Bokeh.embed.embed_items" in r.text  # the real dashboard, not an error page
    assets = page_assets(r.text)
    assert any("bokeh.min.js" in a for a in assets) and any(".css" in a for a in assets)
    for asset in assets:  # relative to the page: they stay under alice's server
        a = hs.session.get(urljoin(hs.url(url), asset), timeout=30)
        assert a.status_code == 200, (asset, a.status_code)
        assert a.url.startswith(hs.url(f"/user/alice/afhub/dask/clusters/{alice_cluster}/"))
    status, subprotocol, first = open_bokeh_websocket(hs, url, bokeh_session_token(r.text))
    assert status == 101 and subprotocol == "bokeh"
    assert '"msgtype":"ACK"' in first.replace(" ", "")  # Bokeh's server answered through it
    # the cluster's root redirects to its status page, kept under alice's server
    r = hs.get(f"/user/alice/afhub/dask/clusters/{alice_cluster}/", allow_redirects=False)
    assert r.status_code in (301, 302)
    assert r.headers["Location"] == url
    # the relay's log (the hub's, servers and gateway included) names no token
    log = fac.log_text()
    assert "afhub/dask/clusters" in log or alice_cluster in log  # the log is the right one
    server_token = k.json("import os, json\nprint(json.dumps(os.environ['JUPYTERHUB_API_TOKEN']))")
    for secret in (server_token, bokeh_session_token(r0.text), dashboard_secret(k)):
        assert secret not in log


@pytest.mark.browser
def test_alices_status_page_renders_in_chromium(browser, fac, alice, alice_cluster):
    """The page as alice's browser shows it: Bokeh's scripts load, its WebSocket through her
    server carries the document, and the plots draw."""
    hs, k = alice
    context = browser.new_context()
    context.add_cookies(
        [
            {"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": c.path or "/"}
            for c in hs.session.cookies
        ]
    )
    page = context.new_page()
    sockets, frames, failed = [], [], []

    def on_websocket(ws):
        sockets.append(ws.url)
        ws.on("framereceived", lambda frame: frames.append(frame))

    page.on("websocket", on_websocket)
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    try:
        url = fac.url.rstrip("/") + dashboard_path("alice", alice_cluster)
        page.goto(url)
        assert page.url == url  # no detour through a login
        page.locator("canvas").first.wait_for(state="attached", timeout=60_000)
        for _ in range(60):  # Playwright delivers events while it runs: wait inside it
            if len(frames) >= 2:
                break
            page.wait_for_timeout(500)
        assert len(frames) >= 2, "no Bokeh document over the WebSocket"
        assert sockets == [url.replace("http://", "ws://") + "/ws"]
        assert page.locator("canvas").count() >= 3  # the status page's plots
        assert failed == []
    finally:
        context.close()


def test_bob_cannot_open_alices_dashboard(fac, alice, bob, alice_cluster):
    hs, k = bob
    url = dashboard_path("alice", alice_cluster)
    r = hs.get(url)  # bob's browser session at alice's URL: the hub refuses him
    assert r.status_code == 403, (r.status_code, r.url)
    assert "Bokeh" not in r.text
    # bob's own server asked for alice's cluster: the gateway tells it nothing
    r = hs.server_api("GET", f"afhub/dask/clusters/{alice_cluster}/status")
    assert r.status_code == 404
    assert r.json() == {"message": f"no cluster of yours is named {alice_cluster!r}"}
    # the gateway's own public path serves no dashboard, to anyone
    alice_hs = alice[0]
    for session in (hs, alice_hs):
        r = session.get(f"services/dask-gateway/clusters/{alice_cluster}/status")
        assert r.status_code == 404, r.text[:300]
    r = requests.get(fac.url + f"services/dask-gateway/clusters/{alice_cluster}/status", timeout=30)
    assert r.status_code == 404
    # nor a WebSocket: bob's cookies do not open alice's server (no upgrade; a redirect to
    # the hub's OAuth, which refuses him as above)
    r = hs.session.get(
        hs.url(url + "/ws"),
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "bokeh, x",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code in (302, 403), r.status_code
    if r.status_code == 302:
        assert r.headers["Location"].startswith("/hub/api/oauth2/authorize")


GET_AS_THIS_ACCOUNT = """
import json, urllib.request, urllib.error
def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return [r.status, r.read().decode(errors="replace")[:2000]]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode(errors="replace")[:2000]]
ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
base = %r
print(json.dumps({"uid": __import__("os").getuid(),
                  "pages": [get(base + p) for p in ("/status", "/info/main/workers.html",
                                                    "/json/counts.json", "/sitemap.json")],
                  "ws": get(base + "/status/ws", ws)}))
"""


def scheduler_dashboard(k) -> str:
    """``http://host:port`` where the scheduler of the kernel's ``client`` serves its dashboard."""
    return k.json(
        "import json\n"
        "def where(dask_scheduler):\n"
        "    from urllib.parse import urlparse\n"
        "    host = urlparse(dask_scheduler.address).hostname\n"
        "    return f'http://{host}:{dask_scheduler.http_server.port}'\n"
        "print(json.dumps(client.run_on_scheduler(where)))"
    )


def dashboard_secret(k) -> str:
    from afhub.server_ext.contract import dask_dashboard_secret

    return dask_dashboard_secret(k.json("import json\nprint(json.dumps(cluster.security.tls_key))"))


def test_the_schedulers_dashboard_refuses_plain_requests_even_from_its_owner(
    fac, alice, bob, alice_cluster
):
    """Issue 19 item 4: bob's account reads nothing from alice's scheduler with a plain GET
    (pages, JSON, Bokeh's WebSocket); nor does alice's own kernel, nor root without the
    secret: only the relay in alice's server, which has it from the gateway, gets pages."""
    base = scheduler_dashboard(alice[1])
    assert base.startswith("http://127.0.0.1:")
    outs = {
        name: k.json(GET_AS_THIS_ACCOUNT % base)
        for name, k in (("bob", bob[1]), ("alice", alice[1]))
    }
    assert outs["bob"]["uid"] != outs["alice"]["uid"]  # two accounts (the hub runs as root)
    for name, out in outs.items():
        for status, body in out["pages"] + [out["ws"]]:
            assert status == 403, (name, status, body[:200])
            assert "Bokeh" not in body and "worker" not in body.lower()
    assert requests.get(base + "/status", timeout=30).status_code == 403
    assert requests.get(base + "/health", timeout=30).text == "ok"
    # the relay still renders it (test_alice_opens_her_dashboard_... has its assets and WS)
    r = alice[0].get(dashboard_path("alice", alice_cluster))
    assert r.status_code == 200 and "Bokeh.embed.embed_items" in r.text
    # the secret: in no scheduler's or worker's command line, not in the hub's or gateway's log
    secret = dashboard_secret(alice[1])
    procs = dask_processes(alice_cluster)
    assert any(" scheduler" in " ".join(p.cmdline()) for p in procs)
    for p in procs:
        argv = " ".join(p.cmdline())
        assert "--preload afhub.server_ext.dask_preload" in argv
        assert secret not in argv and secret not in "".join(p.environ().values())
    assert secret not in fac.log_text()


def listening(p: psutil.Process) -> set[str]:
    """The addresses ``p`` and its children listen on (TCP)."""
    out = set()
    for q in [p, *p.children(recursive=True)]:
        for c in q.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN:
                out.add(c.laddr.ip)
    return out


def test_local_schedulers_and_workers_listen_on_loopback_only(alice_cluster):
    """Issue 19 item 8: workers (and their nannies) bound every interface; now loopback."""
    procs = dask_processes(alice_cluster)
    kinds = {"scheduler" if " scheduler" in " ".join(p.cmdline()) else "worker" for p in procs}
    assert kinds == {"scheduler", "worker"}
    for p in procs:
        addresses = listening(p)
        assert addresses, " ".join(p.cmdline())
        assert addresses <= {"127.0.0.1"}, (" ".join(p.cmdline()), addresses)


REPORT_ELSEWHERE = r"""
import json, os, signal, time, urllib.request
from dask_gateway import Gateway

def scheduler_of(name):
    # the owner's own new scheduler process: stopped before it says anything, its environment read
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            raw = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"DASK_GATEWAY_CLUSTER_NAME={name}".encode() in raw:
            os.kill(int(p), signal.SIGSTOP)
            return int(p), dict(e.decode().split("=", 1) for e in raw if b"=" in e)
    return None

gw = Gateway()
name = gw.submit()
found, deadline = None, time.monotonic() + 60
while found is None and time.monotonic() < deadline:
    found = scheduler_of(name)
pid, env = found
first = gw.get_cluster(name).status.name  # PENDING: the real scheduler has not reported yet
elsewhere = "10.255.255.1"
msg = {"scheduler_address": f"tls://{elsewhere}:8786", "dashboard_address": f"http://{elsewhere}:8787",
       "api_address": f"http://{elsewhere}:8788", "count": 0, "active_workers": [],
       "closing_workers": [], "closed_workers": []}
req = urllib.request.Request(
    f"{env['DASK_GATEWAY_API_URL']}/v1/clusters/{name}/heartbeat", data=json.dumps(msg).encode(),
    headers={"Authorization": f"token {env['DASK_GATEWAY_API_TOKEN']}",
             "Content-Type": "application/json"}, method="POST")
answer = urllib.request.urlopen(req, timeout=30).status
os.kill(pid, signal.SIGKILL)
seen = []
while time.monotonic() < deadline:
    status = gw.get_cluster(name).status.name
    if not seen or seen[-1] != status:
        seen.append(status)
    if status in ("RUNNING", "FAILED", "STOPPED"):
        break
    time.sleep(0.5)
if seen[-1] == "RUNNING":
    gw.stop_cluster(name)
print(json.dumps({"name": name, "first": first, "answer": answer, "seen": seen}))
"""


def test_a_scheduler_reporting_an_address_outside_loopback_is_stopped(fac, alice):
    """Issue 19 item 8: a cluster's owner controls what its scheduler reports (here alice's
    kernel stops her new scheduler and reports for it with the cluster's token, from its
    environment, which is hers): an address outside loopback is neither routed by the gateway's
    proxy nor connected to; the cluster fails."""
    hs, k = alice
    out = k.json(REPORT_ELSEWHERE, timeout=180)
    assert out["first"] == "PENDING", out  # the report was the cluster's first
    assert out["seen"][-1] == "FAILED", out
    assert "RUNNING" not in out["seen"]
    log = fac.log_text()
    assert f"Stopping cluster {out['name']} of alice: its scheduler address " in log
    assert "'tls://10.255.255.1:8786' is outside the allowed networks" in log
    assert "10.255.255.1" not in log.split(f"Stopping cluster {out['name']} of alice")[0]
    wait_for(lambda: not dask_processes(out["name"]), timeout=60, what="its processes gone")


def test_options_outside_range_or_group_are_refused_naming_the_option(bob):
    hs, k = bob
    out = k.json(
        "from afhub.server_ext.dask import new_cluster, DaskOptionError\nimport json\n"
        "res = {}\n"
        "for kw in [dict(worker_cores=64), dict(worker_memory=-1), dict(worker_gpus=1),\n"
        "           dict(image='nope'), dict(workers=100)]:\n"
        "    try:\n"
        "        new_cluster(**kw); res[str(kw)] = 'started'\n"
        "    except DaskOptionError as e:\n"
        "        res[str(kw)] = [e.option, str(e)]\n"
        "print(json.dumps(res))"
    )
    assert out["{'worker_cores': 64}"][0] == "worker_cores"
    assert "between 0.25 and 2" in out["{'worker_cores': 64}"][1]
    assert out["{'worker_memory': -1}"][0] == "worker_memory"
    assert out["{'worker_gpus': 1}"][0] == "worker_gpus"  # bob is not in gpu-users
    assert out["{'image': 'nope'}"][0] == "image"
    assert out["{'workers': 100}"][0] == "workers"
    assert "between 0 and 8" in out["{'workers': 100}"][1]
    # the gateway enforces the same, whatever the client sends
    raw = k.json(
        "from dask_gateway import Gateway\nimport json\n"
        "try:\n"
        "    Gateway().submit(worker_cores=64); print(json.dumps('started'))\n"
        "except Exception as e:\n"
        "    print(json.dumps(str(e)))"
    )
    assert "worker_cores" in raw and "between 0.25 and 2" in raw


def test_rest_routes(bob):
    hs, k = bob
    r = hs.server_api("GET", "afhub/api/dask/options")
    assert r.status_code == 200, r.text
    names = [f["name"] for f in r.json()["fields"]]
    assert names[:2] == ["worker_cores", "worker_memory"] and "worker_gpus" not in names
    assert r.json()["limits"]["max_workers"] == 8
    r = hs.server_api("POST", "afhub/api/dask/clusters", json={"options": {"worker_cores": 99}})
    assert r.status_code == 400 and "worker_cores" in r.json()["message"]
    r = hs.server_api(
        "POST", "afhub/api/dask/clusters", json={"options": {}, "workers": 1}, timeout=180
    )
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    r = hs.server_api("POST", f"afhub/api/dask/clusters/{name}/scale", json={"workers": 50})
    assert r.status_code == 400 and "workers" in r.json()["message"]
    r = hs.server_api("POST", f"afhub/api/dask/clusters/{name}/scale", json={"workers": 2})
    assert r.status_code == 200 and r.json()["requested"] == 2
    wait_for(
        lambda: hs.server_api("GET", f"afhub/api/dask/clusters/{name}").json()["workers"] == 2,
        timeout=120,
        what="2 workers",
    )
    r = hs.server_api(
        "POST", f"afhub/api/dask/clusters/{name}/adapt", json={"minimum": 1, "maximum": 3}
    )
    assert r.status_code == 200 and r.json()["adapt"] == {"minimum": 1, "maximum": 3}
    listed = hs.server_api("GET", "afhub/api/dask/clusters").json()
    assert listed["enabled"] and [c["name"] for c in listed["clusters"]] == [name]
    dashboard = f"afhub/dask/clusters/{name}/status"
    assert hs.server_api("GET", dashboard).status_code == 200
    assert hs.server_api("DELETE", f"afhub/api/dask/clusters/{name}").status_code == 204
    wait_for(
        lambda: not hs.server_api("GET", "afhub/api/dask/clusters").json()["clusters"],
        timeout=60,
        what="bob's cluster gone",
    )
    # the dashboard of a stopped cluster: a clear 404 in the error model, no traceback
    r = hs.server_api("GET", dashboard)
    assert r.status_code == 404
    assert re.fullmatch(
        rf"cluster '{name}' is (stopping|stopped): it has no dashboard", r.json()["message"]
    ), r.text


def test_widget_lists_scales_and_stops_clusters_made_elsewhere(bob):
    hs, k = bob
    r = hs.server_api(
        "POST", "afhub/api/dask/clusters", json={"options": {}, "workers": 1}, timeout=180
    )
    assert r.status_code == 201, r.text
    name = r.json()["name"]  # made by the server (the sidebar's route), not by this kernel
    out = k.json(
        "from afhub.server_ext.dask import ClusterList\nimport json\n"
        f"v = ClusterList()\nrow = v.row({name!r})\n"
        "listed = [r.name for r in v.rows]\n"
        "row.workers.value = 9; row.scale_button.click(); too_many = v.message.value\n"
        "row.workers.value = 2; row.scale_button.click(); ok = v.message.value\n"
        "requested = v.row(row.name).model['requested']\n"
        "link = v.row(row.name).dashboard.value\n"
        "print(json.dumps({'listed': listed, 'too_many': too_many, 'ok': ok,\n"
        "                  'requested': requested, 'link': link}))"
    )
    assert out["listed"] == [name]
    assert "workers" in out["too_many"] and "between 0 and 8" in out["too_many"]
    assert out["ok"] == "" and out["requested"] == 2
    assert f'href="{dashboard_path("bob", name)}"' in out["link"]
    out = k.json("v.row(row.name).stop_button.click()\nprint(json.dumps([r.name for r in v.rows]))")
    assert name not in out
    wait_for(lambda: not dask_processes(name), timeout=60, what="the widget's shut down")


def dask_processes(cluster_name: str | None = None) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "dask" not in cmd or not (" scheduler" in cmd or " worker" in cmd):
                continue
            env = p.environ()
            if cluster_name is None or env.get("DASK_GATEWAY_CLUSTER_NAME") == cluster_name:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def test_stopping_alices_server_stops_her_cluster(fac, alice, alice_cluster):
    hs, k = alice
    assert dask_processes(alice_cluster)
    hs.stop_server()
    wait_for(
        lambda: not dask_processes(alice_cluster), timeout=60, what="alice's dask processes gone"
    )


def test_stopping_the_facility_leaves_no_dask_process(fac, bob):
    hs, k = bob
    name = k.json(
        "from afhub.server_ext.dask import new_cluster\nimport json\n"
        "cluster = new_cluster(workers=1)\nprint(json.dumps(cluster.name))"
    )
    assert len(dask_processes(name)) == 2  # scheduler and worker
    fac.stop()
    wait_for(lambda: not dask_processes(name), timeout=30, what="no dask process of the facility")
