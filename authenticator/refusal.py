"""What a person sees when the provider signed them in but this hub does not let them in.

What lives here: :func:`refusal`, a pure builder of the 403 page's message (text for logs and
REST clients, HTML for the page): who signed in, which groups grant access, and whom to ask
(``auth.contact``, ``auth.help_url``); and :func:`refused_names`, which lets the login handler
learn the name the hub refused (JupyterHub only returns None). What must not: deciding who is
allowed (oauthenticator's ``check_allowed``) or any I/O.
"""

from __future__ import annotations

import contextvars
import html
from collections.abc import Iterable

#: Names refused during the current login request (set by the callback handler, appended to by
#: the authenticator's ``check_allowed``); a context variable, so concurrent logins never mix.
refused_names: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "afhub_refused_names", default=None
)


def _contact_html(contact: str) -> str:
    c = contact.strip()
    if c.startswith(("https://", "http://")):
        return f'<a href="{html.escape(c)}">{html.escape(c)}</a>'
    if "@" in c and " " not in c and "/" not in c:
        return f'<a href="mailto:{html.escape(c)}">{html.escape(c)}</a>'
    return html.escape(c)


def refusal(
    *,
    username: str | None,
    groups: Iterable[str],
    help_url: str = "",
    contact: str = "",
) -> tuple[str, str]:
    """``(text, html)`` telling a refused person why and what to do.

    ``groups``: the groups whose members may log in (``allowed_groups`` and ``admin_groups``);
    empty when access is by a list of names only.
    """
    groups = sorted(set(groups))
    who = f"You signed in as {username}" if username else "You signed in"
    who_html = f"You signed in as <strong>{html.escape(username)}</strong>" if username else who
    if groups:
        names = ", ".join(groups)
        what = f"but this hub is open only to members of {'the group' if len(groups) == 1 else 'these groups'}: {names}."
        items = "".join(f"<li><code>{html.escape(g)}</code></li>" for g in groups)
        what_html = (
            f"but this hub is open only to members of "
            f'{"the group" if len(groups) == 1 else "these groups"}:</p><ul id="afhub-granting-groups">{items}</ul>'
        )
        ask = "To get access, ask to be added to one of them"
    else:
        what = "but your account is not on this hub's list of users."
        what_html = what + "</p>"
        ask = "To get access, ask to be added"
    steps, steps_html = [], []
    if contact:
        steps.append(f"contact {contact.strip()}")
        steps_html.append(f"contact {_contact_html(contact)}")
    if help_url:
        steps.append(f"see {help_url}")
        steps_html.append(f'see <a href="{html.escape(help_url)}">how to get access</a>')
    if steps:
        tail, tail_html = ": " + " or ".join(steps) + ".", ": " + " or ".join(steps_html) + "."
    else:
        tail = tail_html = " by the facility's administrators."
    text = f"{who}, {what} {ask}{tail}"
    page = (
        f'<div id="afhub-refusal"><p>{who_html}, {what_html}'
        f"<p>{html.escape(ask)}{tail_html}</p>"
        "<p>If you belong to one of these groups under another account, sign out at your "
        "provider and sign in with that account.</p></div>"
        if groups
        else f'<div id="afhub-refusal"><p>{who_html}, {what_html}<p>{html.escape(ask)}{tail_html}</p></div>'
    )
    return text, page
