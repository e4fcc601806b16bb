"""Refusals in headless Chromium, on the embedded default (real hub, proxy and demo IdP).

- the demo provider's sign-in page loads nothing from outside this machine, is styled by its
  own stylesheet and labels its field for what it is;
- a name that is not a demo user is told so on that page (no hub error page);
- a demo user outside ``auth.allowed_groups`` gets a page naming the groups that grant access
  and whom to ask (``auth.contact``), under a short heading.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def open_sign_in(browser, facility):
    page = browser.new_context().new_page()
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url))
    page.goto(facility.url + "hub/oauth_login")
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"))
    return page, requests_seen


def test_demo_sign_in_page_is_local_styled_and_labelled(facility, browser):
    page, seen = open_sign_in(browser, facility)
    try:
        hosts = {urlparse(u).hostname for u in seen if u.startswith("http")}
        assert hosts <= {"127.0.0.1", "localhost"}, seen
        assert any(u.endswith("/afhub-dev-idp.css") for u in seen)
        field = page.get_by_label("Demo user name")
        assert field.get_attribute("name") == "sub"
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "system-ui" in font  # the stylesheet applied
        assert page.get_by_role("button", name="alice").is_visible()
    finally:
        page.context.close()


def test_unknown_demo_name_is_told_plainly(facility, browser):
    page, _ = open_sign_in(browser, facility)
    try:
        page.get_by_label("Demo user name").fill("mallory")
        page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert")
        assert "There is no demo user named “mallory”." in alert.inner_text()
        assert "alice, bob, carol, eve" in alert.inner_text()
        assert "/oauth2/authorize" in page.url  # still at the provider, nothing reached the hub
        assert page.get_by_label("Demo user name").get_attribute("aria-invalid") == "true"
    finally:
        page.context.close()


def test_user_outside_allowed_groups_is_told_which_groups_and_whom_to_ask(facility, browser):
    page, _ = open_sign_in(browser, facility)
    try:
        page.get_by_role("button", name="eve").click()
        page.wait_for_url(re.compile(r".*/hub/oauth_callback.*"))
        assert page.locator("h1").inner_text() == "403 : Not a member of this hub"
        groups = page.locator("#afhub-granting-groups li").all_inner_texts()
        assert groups == ["afhub-admins", "physicists"]
        text = page.locator("#afhub-refusal").inner_text()
        assert text.count("You signed in as eve") == 1
        assert "carol, the demo's administrator" in text
    finally:
        page.context.close()
