"""Regenerate docs/img/sidebar.png (and sidebar-dark.png): the JupyterLab sidebar as alice sees it.

Run from the repository root after `make setup`: `.venv/bin/python docs/screenshot_sidebar.py`.
Uses the real facility (afhub up, the embedded default), a real user server with the prebuilt
extension (AFHUB_SERVER_ENV: the server environment `make server-env` built), two demo
environments under ~/envs, a one-worker Dask cluster and Debian's headless Chromium.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from facility import CHROMIUM, CHROMIUM_ARGS, Facility, example_values  # noqa: E402
from kernels_helpers import make_user_venv  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from screenshot import spawn_page_as  # noqa: E402  (docs/screenshot.py, beside this file)


def shoot(page, out: Path) -> None:
    panel = page.locator("#afhub-sidebar")
    panel.locator("[data-countdown]").wait_for(timeout=60_000)
    panel.locator("[data-env-name]").first.wait_for(timeout=60_000)
    try:  # JupyterLab's "get notified about news?" toast covers the launcher
        page.get_by_role("button", name="No", exact=True).first.click(timeout=5000)
    except Exception:
        pass
    page.wait_for_timeout(1500)  # let the countdown and status bar settle
    page.screenshot(path=str(out))
    print(f"wrote {out}")


def main() -> None:
    img = REPO / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fac = Facility(example_values("local"), Path(tmp)).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = spawn_page_as(browser, fac, "alice", 1000)
                page.get_by_role("button", name="Start").click()
                page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)
                page.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)
                envs = fac.home("alice") / "envs"
                envs.mkdir(exist_ok=True)
                os.chown(envs, fac.uid("alice"), -1)
                make_user_venv(envs / "higgs-analysis", uid=fac.uid("alice"), ipykernel=True)
                make_user_venv(envs / "plain-venv", uid=fac.uid("alice"), ipykernel=False)
                page.locator('.lm-TabBar-tab[data-id="afhub-sidebar"]').click()
                dask = page.locator('[data-section="dask"]')
                dask.get_by_role("button", name="Create Dask cluster").click(timeout=60_000)
                dask.locator(".afhub-cluster-running").wait_for(timeout=240_000)
                shoot(page, img / "sidebar.png")
                page.goto(page.url.split("/lab")[0] + "/lab?reset")
                page.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)
                page.keyboard.press("Control+Shift+C")
                page.keyboard.type("Use Theme: JupyterLab Dark")
                page.keyboard.press("Enter")
                page.locator('body[data-jp-theme-light="false"]').wait_for(
                    state="attached", timeout=30_000
                )
                page.locator('.lm-TabBar-tab[data-id="afhub-sidebar"]').click()
                shoot(page, img / "sidebar-dark.png")
                page.locator('[data-section="dask"]').get_by_role(
                    "button", name=re.compile("^Shut down cluster")
                ).first.click()
                browser.close()
        finally:
            fac.stop()


if __name__ == "__main__":
    main()
