"""Turning spawn-form data and ``/hub/spawn?...`` query arguments into ``user_options``.

Side-effect-free parsing only: nothing here validates against profiles (that is
``profiles.resolve``, run at start for every way of starting). Field names follow KubeSpawner's
form: ``profile`` and ``profile-option-<profile>--<option>`` (plus ``--unlisted-choice`` for
free text), so KubeSpawner-style links keep working. Query arguments may also use the short
``<option>=`` / ``opt-<option>=`` forms, e.g. ``/hub/spawn?profile=gpu&gpu=a100``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .profiles import UNLISTED_SUFFIX

FORM_PREFIX = "profile-option-"
UNLISTED_SENTINEL = "--unlisted-choice"  # value of the "Other..." entry in afhub's choice list
# ... and the values meaning the same from KubeSpawner's own form and jupyterhub-fancy-profiles
SENTINELS = (UNLISTED_SENTINEL, "unlisted-choice")


def field_name(profile: str, key: str) -> str:
    """Form field for ``user_options[key]`` of ``profile``: ``profile-option-gpu--type``."""
    return f"{FORM_PREFIX}{profile}--{key}"


def _first(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return v[0] if v else ""
    return v


def _text(v: Any) -> str:
    v = _first(v)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else str(v)


def options_from_form(formdata: Mapping[str, Any]) -> dict[str, str]:
    """Form fields -> ``user_options`` for the chosen profile only.

    Fields of other profiles are ignored (the page holds every profile's fields); an empty
    free-text field is ignored, and so is free text when its choice list did not select the
    "Other..." entry. Unknown fields are kept so validation can reject them by name.
    """
    profile = _text(formdata.get("profile", "")).strip()
    out: dict[str, str] = {}
    if profile:
        out["profile"] = profile
    prefix = f"{FORM_PREFIX}{profile}--"
    fields: dict[str, str] = {}
    for key, raw in formdata.items():
        if key in ("profile", "_xsrf"):
            continue
        if key.startswith(FORM_PREFIX):
            if profile and key.startswith(prefix):
                fields[key[len(prefix) :]] = _text(raw)
            continue  # another profile's field
        out[key] = _text(raw)  # not a spawn-form field: validation names and rejects it
    for key, value in fields.items():
        if key.endswith(UNLISTED_SUFFIX):
            base = key[: -len(UNLISTED_SUFFIX)]
            if value and fields.get(base, UNLISTED_SENTINEL) in SENTINELS:
                out[key] = value
        elif value and value not in SENTINELS:
            out[key] = value
    return out


def query_to_prefill(query: Mapping[str, Any]) -> dict[str, str]:
    """``/hub/spawn`` query arguments -> ``user_options`` to preselect on the form.

    Accepts form field names, short names and the ``opt-`` prefix JupyterHub uses. JupyterHub's
    own ``next`` and ``display_name`` are dropped.
    """
    flat: dict[str, str] = {}
    for key, raw in query.items():
        if key in ("next", "display_name", "_xsrf"):
            continue
        flat[key.removeprefix("opt-")] = _text(raw)
    profile = flat.get("profile", "")
    if any(k.startswith(FORM_PREFIX) for k in flat):
        return options_from_form(flat)
    out = {k: v for k, v in flat.items() if v}
    if profile:
        out["profile"] = profile
    return out
