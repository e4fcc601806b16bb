"""Regenerate docs/img/spawn-page.png: the embedded default's spawn page as alice sees it.

Run from the repository root after `make setup`: `.venv/bin/python docs/screenshot.py`.
Uses the real facility (afhub up) and Debian's headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from facility import CHROMIUM, CHROMIUM_ARGS, Facility, example_values  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def spawn_page_as(browser, fac, user: str, height: int):
    """A new page of ``browser`` logged in at the demo provider as ``user``, on the spawn page."""
    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.goto(fac.url + "hub/oauth_login")
    page.fill("input[name=sub]", user)
    page.keyboard.press("Enter")
    page.wait_for_url("**/hub/spawn**")
    return page


def main() -> None:
    out = REPO / "docs" / "img" / "spawn-page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fac = Facility(example_values("local"), Path(tmp)).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = spawn_page_as(browser, fac, "alice", 760)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            fac.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
