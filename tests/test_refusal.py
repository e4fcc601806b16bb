"""Refusals that say what to do: the 403 text/page builder and the demo sign-in's name check."""

from __future__ import annotations

import pytest
from afhub.authenticator.dev_idp import refusal_for
from afhub.authenticator.refusal import refusal


@pytest.mark.parametrize(
    "kw, text",
    [
        (
            {
                "username": "eve",
                "groups": ["physicists", "afhub-admins"],
                "contact": "af@example.org",
            },
            "You signed in as eve, but this hub is open only to members of these groups: "
            "afhub-admins, physicists. To get access, ask to be added to one of them: "
            "contact af@example.org.",
        ),
        (
            {"username": "eve", "groups": ["cms"], "help_url": "https://af.example.org/join"},
            "You signed in as eve, but this hub is open only to members of the group: cms. "
            "To get access, ask to be added to one of them: see https://af.example.org/join.",
        ),
        (
            {"username": None, "groups": []},
            "You signed in, but your account is not on this hub's list of users. "
            "To get access, ask to be added by the facility's administrators.",
        ),
    ],
)
def test_refusal_text(kw, text):
    assert refusal(**kw)[0] == text


@pytest.mark.parametrize(
    "contact, link",
    [
        ("af@example.org", '<a href="mailto:af@example.org">af@example.org</a>'),
        ("https://af.example.org/help", '<a href="https://af.example.org/help">'),
        ("Room 12 <b>", "contact Room 12 &lt;b&gt;"),  # a sentence, escaped, no link
    ],
)
def test_refusal_page_links_the_contact_and_escapes(contact, link):
    page = refusal(username="<x>", groups=["g<1>"], contact=contact)[1]
    assert link in page
    assert "<strong>&lt;x&gt;</strong>" in page and "<code>g&lt;1&gt;</code>" in page


@pytest.mark.parametrize(
    "sub, known, outcome",
    [
        ("alice", True, None),
        ("mallory", False, "unknown"),
        ("  ", False, "empty"),
        ("", False, "empty"),
    ],
)
def test_demo_sign_in_names(sub, known, outcome):
    assert refusal_for(sub, known) == outcome
