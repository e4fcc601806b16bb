"""Keys inside profile entries: which are defined, and what to say about the others.

Pure. Operators paste ``profileList`` s written for KubeSpawner and for 2i2c's
jupyterhub-fancy-profiles into afhub's ``profiles``; KubeSpawner ignores keys it does not use, so
afhub accepts every key either project defines (the values schema lists them) and reports a key
nobody defines as a **warning** with a did-you-mean hint, not an error. One exception: a near
miss of an access rule (``alowed_groups``) is an **error**, because ignoring it would open the
profile to everyone. Keys outside profile entries stay errors (the values schema).

The known keys come from the values schema (``$defs.profile``, ``profileOption``, ``choice``
and ``profileOption.unlisted_choice``), so the reference docs and these checks cannot drift.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from afhub.hub_config.schema import file_schema

ACCESS_KEYS = ("allowed_groups", "allowed_registries")


@lru_cache(maxsize=1)
def known_keys() -> dict[str, frozenset[str]]:
    """``{"profile"|"option"|"choice"|"unlisted_choice": keys}`` from the values schema."""
    defs = file_schema()["$defs"]
    option = defs["profileOption"]
    return {
        "profile": frozenset(defs["profile"]["properties"]),
        "option": frozenset(option["properties"]),
        "choice": frozenset(defs["choice"]["properties"]),
        "unlisted_choice": frozenset(option["properties"]["unlisted_choice"]["properties"]),
    }


def _entries(profiles: Any, root: str = "profiles") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(kind, key path, mapping)`` for every profile entry, option, choice, unlisted choice."""
    if not isinstance(profiles, list):
        return
    for i, p in enumerate(profiles):
        if not isinstance(p, Mapping):
            continue
        where = f"{root}[{i}]"
        yield "profile", where, p
        options = p.get("profile_options")
        if not isinstance(options, Mapping):
            continue
        for name, opt in options.items():
            if not isinstance(opt, Mapping):
                continue
            owhere = f"{where}.profile_options.{name}"
            yield "option", owhere, opt
            if isinstance(opt.get("unlisted_choice"), Mapping):
                yield "unlisted_choice", f"{owhere}.unlisted_choice", opt["unlisted_choice"]
            choices = opt.get("choices")
            if isinstance(choices, Mapping):
                for slug, c in choices.items():
                    if isinstance(c, Mapping):
                        yield "choice", f"{owhere}.choices.{slug}", c


def unknown_keys(
    profiles: Any, root: str = "profiles"
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(warnings, errors)``, each a list of ``(key path, message)``; paths start at ``root``
    (``profiles`` in the values file, ``singleuser.profileList`` in chart values)."""
    warnings, errors = [], []
    known = known_keys()
    for kind, where, entry in _entries(profiles, root):
        for key in entry:
            if not isinstance(key, str) or key in known[kind]:
                continue
            match = difflib.get_close_matches(key, sorted(known[kind]), n=1, cutoff=0.75)
            if match and match[0] in ACCESS_KEYS:
                errors.append(
                    (
                        f"{where}.{key}",
                        f"unknown key {key!r} (did you mean {match[0]!r}? ignoring a misspelt "
                        "access rule would open this to everyone)",
                    )
                )
                continue
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            warnings.append(
                (
                    f"{where}.{key}",
                    f"unknown key {key!r} is ignored{hint}; neither KubeSpawner, "
                    "jupyterhub-fancy-profiles nor afhub define it",
                )
            )
    return warnings, errors


def overrides(profiles: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(key path of the entry, kubespawner_override)`` for every entry that has one."""
    for _kind, where, entry in _entries(profiles):
        override = entry.get("kubespawner_override")
        if isinstance(override, Mapping) and override:
            yield where, override


def regex_warnings(profiles: Any) -> list[tuple[str, str]]:
    """A pasted ``validation_regex`` anchored only at the start means something else here.

    KubeSpawner checks free text with ``re.match`` (start of the value only); afhub's
    ``profiles`` match the whole value. ``^jupyter/`` accepted ``jupyter/x:1`` there and refuses
    it here.
    """
    out = []
    for kind, where, entry in _entries(profiles):
        regex = entry.get("validation_regex") if kind == "unlisted_choice" else None
        if isinstance(regex, str) and regex.startswith("^") and not regex.endswith("$"):
            out.append(
                (
                    f"{where}.validation_regex",
                    f"{regex!r} must match the whole value here (KubeSpawner matched only its "
                    f"start); write {regex + '.*'!r} to allow anything after it",
                )
            )
    return out
