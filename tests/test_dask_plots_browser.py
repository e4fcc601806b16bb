"""A cluster's individual Dask plots as JupyterLab panes, opened from the sidebar, in Chromium.

Real pieces: ``afhub up`` (JupyterHub, proxy, demo OIDC provider, dask-gateway-server with the
local backend), alice's and bob's servers with the afhub server extension and the prebuilt
``afhub-sidebar`` (the server environment of ``make test``), their kernels, Debian's Chromium.
Nothing is faked. alice makes one cluster with ``new_cluster()`` and one with the stock
``Gateway()`` in her kernel, runs a computation, and opens the task stream from the sidebar
while it runs: the pane's Bokeh document holds the task rectangles the plot draws. The panes
go through her own server only; bob gets nothing of them.
"""

from __future__ import annotations

import re

import pytest
import requests
from facility import dask_values, wait_for
from kernel_ws import Kernel

pytestmark = [pytest.mark.integration, pytest.mark.browser]

USER = "alice"

# the task stream's rectangles as the page's BokehJS holds them: for every glyph renderer
# drawing Rect glyphs, the number of rows of its data source (what the plot draws)
RECTANGLES = """() => {
  const B = window.Bokeh;
  if (!B || !B.documents || !B.documents.length) return -1;
  let n = 0;
  for (const doc of B.documents) {
    for (const m of doc.all_models) {
      const glyph = m.glyph;
      if (!glyph || !m.data_source || glyph.constructor.__name__ !== 'Rect') continue;
      const data = m.data_source.data;
      const col = data instanceof Map ? data.get('start') : data['start'];
      n += col ? col.length : 0;
    }
  }
  return n;
}"""

# the roots of the page's Bokeh documents (a plot was built and sent over the WebSocket)
ROOTS = """() => {
  const B = window.Bokeh;
  if (!B || !B.documents || !B.documents.length) return 0;
  return B.documents.reduce((n, d) => n + d.roots().length, 0);
}"""


@pytest.fixture(scope="module")
def fac(start_facility):
    values = dask_values()
    facility = start_facility(values, name="daskplots")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def alice(fac):
    hs = fac.login_with_server(USER)
    return hs, Kernel(hs)


@pytest.fixture(scope="module")
def clusters(alice):
    """Two clusters made in alice's kernel: ``new_cluster()`` and the stock ``Gateway()``."""
    hs, k = alice
    out = k.json(
        "import json\n"
        "from afhub.server_ext.dask import new_cluster\n"
        "from dask_gateway import Gateway\n"
        "cluster = new_cluster(workers=2)\n"
        "client = cluster.get_client()\n"
        "client.wait_for_workers(2, timeout=180)\n"
        "stock = Gateway().new_cluster()\n"
        "stock.scale(1)\n"
        "print(json.dumps([cluster.name, stock.name]))",
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def lab(fac, browser, alice):
    """alice's JupyterLab in Chromium with her hub session (the cookies her login got)."""
    hs, _ = alice
    hs.server_api("GET", "afhub/api/session")  # the server's OAuth cookie, as Lab has it
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_cookies(
        [
            {"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": c.path or "/"}
            for c in hs.session.cookies
        ]
    )
    page = context.new_page()
    page.goto(fac.url + f"user/{USER}/lab")
    page.locator(".jp-LauncherCard").first.wait_for(timeout=90_000)
    yield page
    context.close()


def open_panel(page):
    panel = page.locator("#afhub-sidebar")
    if not panel.is_visible():
        page.locator('.lm-TabBar-tab[data-id="afhub-sidebar"]').click()
    panel.wait_for(state="visible")
    return panel


def plot_button(panel, name: str, title: str):
    """The sidebar's button opening ``title`` of cluster ``name`` (once it runs there)."""
    row = panel.locator(f'[data-section="dask"] [data-cluster="{name}"]')
    row.wait_for(timeout=60_000)
    button = row.get_by_role("button", name=re.compile(f"^Open {title} of cluster"))
    button.wait_for(timeout=60_000)
    return button


def pane_frame(page, name: str, plot: str):
    """The pane of ``plot`` of cluster ``name`` in the main area, and its page's frame."""
    pane = page.locator(
        f'#jp-main-dock-panel .afhub-dashboard-pane[data-cluster="{name}"][data-plot="{plot}"]'
    )
    pane.locator("iframe").wait_for(timeout=60_000)
    handle = pane.locator("iframe").element_handle()
    frame = None
    for _ in range(120):
        frame = handle.content_frame()
        if frame is not None and "individual-" in frame.url:
            break
        page.wait_for_timeout(250)
    assert frame is not None, "the pane's iframe has no page"
    return pane, frame


def poll_in(page, frame, script: str, ok, timeout: float, what: str):
    """Evaluate ``script`` in ``frame`` until ``ok(value)``; Playwright's events run meanwhile."""
    value = None
    for _ in range(int(timeout * 2)):
        try:
            value = frame.evaluate(script)
        except Exception:  # the page is still loading (navigation in progress)
            value = None
        if value is not None and ok(value):
            return value
        page.wait_for_timeout(500)
    raise AssertionError(f"{what}: last value {value!r} after {timeout}s")


def test_task_stream_pane_shows_tasks_while_the_notebook_computes(fac, lab, alice, clusters):
    hs, k = alice
    made_in_code, _ = clusters
    page = lab
    failed: list[str] = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    # a computation that runs for about a minute on her 2 workers
    k.run(
        "import time\n"
        "def step(i):\n"
        "    time.sleep(0.25)\n"
        "    return i\n"
        "futures = client.map(step, range(480), pure=False)\n"
    )
    panel = open_panel(page)
    plot_button(panel, made_in_code, "Task stream").click()
    pane, frame = pane_frame(page, made_in_code, "task-stream")
    url = frame.url
    assert url == fac.url + (
        f"user/{USER}/afhub/dask/clusters/{made_in_code}/individual-task-stream"
    )  # alice's own server, the plot's page
    assert pane.locator(".afhub-dashboard-message").is_hidden()
    drawn = poll_in(page, frame, RECTANGLES, lambda n: n > 0, 60, "task rectangles in the pane")
    running = k.json(
        "import json\nprint(json.dumps(sum(not f.done() for f in futures)))"
    )  # the rectangles came while the notebook's computation ran
    assert running > 0, "the computation finished before the pane showed tasks"
    assert drawn > 0
    more = poll_in(page, frame, RECTANGLES, lambda n: n > drawn, 30, "more task rectangles")
    assert more > drawn  # the plot follows the computation live (its WebSocket works)
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Task stream")
    assert tab.count() == 1
    assert not [f for f in failed if "/afhub/" in f], failed

    # the same button again: the open pane comes forward, no second one
    frame.evaluate("() => { window.afhubMark = 1; }")
    plot_button(panel, made_in_code, "Task stream").click()
    assert page.locator(".afhub-dashboard-pane[data-plot='task-stream']").count() == 1
    # the sidebar re-renders on its polls (the cluster's summary changes); the pane's page is
    # untouched: not reloaded, still drawing
    page.wait_for_timeout(12_000)
    assert frame.evaluate("() => window.afhubMark") == 1
    k.run("client.gather(futures)", timeout=300)


def test_progress_and_worker_memory_panes_of_both_clusters(fac, lab, alice, clusters):
    page = lab
    panel = open_panel(page)
    made_in_code, stock = clusters
    for name, plot, title in [
        (made_in_code, "progress", "Progress"),
        (made_in_code, "workers-memory", "Worker memory"),
        (stock, "workers-memory", "Worker memory"),  # a stock Gateway() cluster too
    ]:
        plot_button(panel, name, title).click()
        pane, frame = pane_frame(page, name, plot)
        assert f"/afhub/dask/clusters/{name}/individual-" in frame.url
        poll_in(page, frame, ROOTS, lambda n: n > 0, 60, f"{title} of {name} drawn")


def test_closing_a_pane_removes_it_and_its_page(lab, clusters):
    page = lab
    made_in_code, _ = clusters
    pane = page.locator(
        f'.afhub-dashboard-pane[data-cluster="{made_in_code}"][data-plot="progress"]'
    )
    assert pane.count() == 1
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Progress")
    tab.locator(".lm-TabBar-tabCloseIcon").click()
    wait_for(lambda: pane.count() == 0, 10, what="the progress pane closed")
    assert tab.count() == 0
    assert not any("individual-progress" in f.url for f in page.frames)  # its page is gone


def test_only_the_pane_pages_may_be_framed_and_only_by_the_same_origin(alice, clusters):
    hs, _ = alice
    made_in_code, _ = clusters
    base = f"user/{USER}/afhub/dask/clusters/{made_in_code}/"
    for page in ("individual-task-stream", "individual-progress", "individual-workers-memory"):
        r = hs.get(base + page)
        assert r.status_code == 200 and "Bokeh" in r.text, page
        assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"], page
        assert "'none'" not in r.headers["Content-Security-Policy"], page
    r = hs.get(base + "status")  # the rest of the dashboard: the hub's rule, no frames
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_bob_cannot_open_alices_panes(fac, alice, clusters):
    made_in_code, _ = clusters
    hs = fac.login_with_server("bob")
    alice_hs, _ = alice
    page_html = alice_hs.get(
        f"user/{USER}/afhub/dask/clusters/{made_in_code}/individual-task-stream"
    )
    assert page_html.status_code == 200 and "Bokeh" in page_html.text  # alice's page exists
    assets = re.findall(r'<script[^>]*src="([^"]+)"', page_html.text)
    assert assets
    for path in ("individual-task-stream", "individual-workers-memory", assets[0]):
        url = f"user/{USER}/afhub/dask/clusters/{made_in_code}/{path.lstrip('./')}"
        r = hs.get(url)  # bob's browser at alice's URL: the hub refuses him
        assert r.status_code == 403, (path, r.status_code)
        assert "Bokeh" not in r.text
        # nobody's browser: a login page, never the plot
        r = requests.get(fac.url + url, timeout=30)
        assert "Bokeh" not in r.text and r.url != fac.url + url
    # bob's own server asked for alice's cluster: the gateway tells it nothing
    for path in ("individual-task-stream", "individual-progress"):
        r = hs.server_api("GET", f"afhub/dask/clusters/{made_in_code}/{path}")
        assert r.status_code == 404, (path, r.status_code)
        assert "Bokeh" not in r.text
    # (the plots' WebSocket is refused to bob like the status page's: test_dask_integration)


def test_a_pane_says_so_when_its_cluster_stopped(lab, alice, clusters):
    page = lab
    hs, k = alice
    made_in_code, stock = clusters
    pane = page.locator(
        f'.afhub-dashboard-pane[data-cluster="{stock}"][data-plot="workers-memory"]'
    )
    pane.locator("iframe").wait_for(timeout=30_000)  # shown (split panes), so it checks
    k.run(f"from dask_gateway import Gateway\nGateway().stop_cluster({stock!r})")
    message = pane.locator(".afhub-dashboard-message")
    wait_for(
        lambda: "has stopped" in (message.text_content() or ""),
        60,
        what="the stopped cluster's pane saying so",
    )
    assert pane.locator("iframe").count() == 0
    assert message.is_visible()
    # the other cluster's panes are unaffected
    other = page.locator(f'.afhub-dashboard-pane[data-cluster="{made_in_code}"] iframe')
    assert other.count() >= 1


def test_panes_come_back_after_a_reload(lab, clusters):
    """JupyterLab restores the panes with its layout: the running cluster's plot draws again,
    the stopped cluster's pane says it stopped."""
    page = lab
    made_in_code, stock = clusters
    page.wait_for_timeout(3_000)  # Lab saves its layout shortly after a change
    page.reload()
    page.locator("#jp-main-dock-panel").wait_for(timeout=90_000)
    live = page.locator(
        f'.afhub-dashboard-pane[data-cluster="{made_in_code}"][data-plot="task-stream"]'
    )
    live.locator("iframe").wait_for(timeout=60_000)
    _, frame = pane_frame(page, made_in_code, "task-stream")
    poll_in(page, frame, ROOTS, lambda n: n > 0, 60, "the restored task stream drawn")
    stopped = page.locator(f'.afhub-dashboard-pane[data-cluster="{stock}"]')
    wait_for(
        lambda: "has stopped" in (stopped.text_content() or ""),
        60,
        what="the restored pane of the stopped cluster saying so",
    )
    assert stopped.locator("iframe").count() == 0
