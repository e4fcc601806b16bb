"""Regenerate docs/img/dask-task-stream-pane.png: a cluster's task stream as a JupyterLab pane.

Run from the repository root after `make setup server-env`:
`.venv/bin/python docs/screenshot_dask_panes.py`. Uses the real facility (afhub up, the
embedded default), alice's real server and kernel (a two-worker cluster made with
`new_cluster()`, running a computation), the sidebar's Task stream button and Debian's
headless Chromium.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from facility import CHROMIUM, CHROMIUM_ARGS, Facility, example_values  # noqa: E402
from kernel_ws import Kernel  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

WORK = """
import time
from afhub.server_ext.dask import new_cluster
cluster = new_cluster(workers=2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=180)
def step(i):
    time.sleep(0.2)
    return i
futures = client.map(step, range(600), pure=False)
"""


def main() -> None:
    out = REPO / "docs" / "img" / "dask-task-stream-pane.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fac = Facility(example_values("local"), Path(tmp)).start()
        try:
            hs = fac.login_with_server("alice")
            hs.server_api("GET", "afhub/api/session")  # the server's OAuth cookie
            Kernel(hs).run(WORK, timeout=300)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1400, "height": 800})
                context.add_cookies(
                    [
                        {"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": c.path}
                        for c in hs.session.cookies
                    ]
                )
                page = context.new_page()
                page.goto(fac.url + "user/alice/lab")
                page.locator(".jp-LauncherCard").first.wait_for(timeout=90_000)
                try:  # JupyterLab's "get notified about news?" toast
                    page.get_by_role("button", name="No", exact=True).first.click(timeout=5000)
                except Exception:
                    pass
                page.locator('.lm-TabBar-tab[data-id="afhub-sidebar"]').click()
                page.locator('[data-section="dask"]').get_by_role(
                    "button", name=re.compile("^Open Task stream of cluster")
                ).first.click(timeout=60_000)
                pane = page.locator(".afhub-dashboard-pane iframe")
                pane.wait_for(timeout=60_000)
                frame = pane.element_handle().content_frame()
                frame.locator("canvas").first.wait_for(state="attached", timeout=60_000)
                page.wait_for_timeout(8000)  # some seconds of tasks on the plot
                page.screenshot(path=str(out))
                browser.close()
        finally:
            fac.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
