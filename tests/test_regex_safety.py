"""Operators' ``validation_regex``: catastrophic backtracking is refused at ``afhub check`` and
never run on user input at start; user input is length-capped before any match."""

from __future__ import annotations

import subprocess
import sys

import pytest
from afhub.hub_config import values
from afhub.spawner.profiles import MAX_TEXT, Catalogue, OptionsError
from afhub.spawner.regex_safety import backtracking_problem

NESTED = "a repetition inside a repetition"
EMPTY = "can match the empty text"
ALTERNATIVES = "alternatives that can start alike"
ADJACENT = "three or more repetitions"


@pytest.mark.parametrize(
    "pattern, problem",
    [
        # dangerous
        (r"(a+)+$", NESTED),
        (r"^(a+)+$", NESTED),
        (r"(\d+)*x", NESTED),
        (r"(\w+\s?)*$", NESTED),
        (r"(x+x+)+y", NESTED),
        (r"(.*a){12}", NESTED),
        (r"(a?)*b", EMPTY),
        (r"(a|ab)*c", ALTERNATIVES),
        (r"^(a|a)+$", ALTERNATIVES),
        (r"\w*\w*\w*x", ADJACENT),
        (r".*a.*b.*c", ADJACENT),
        # fine, including the usual image-reference patterns
        (r"^.+:.+$", None),
        (r"^[a-z0-9._/-]+(:[\w.-]+)?$", None),
        (r"([a-z0-9]+\.)*[a-z]+", None),
        (r"^([a-zA-Z0-9_-]+/)*[a-zA-Z0-9_-]+:[a-z0-9.]+$", None),
        (r"^(docker\.io/)?[a-z]+$", None),
        (r"(foo|bar)+", None),
        (r".*foo.*", None),
        (r"^[a-z]{3,8}$", None),
        (r"(ab|cd){2,5}", None),
        (r"(?:a|b)*", None),
        (r"[", None),  # does not compile: reported as such elsewhere
    ],
)
def test_backtracking_rule(pattern, problem):
    got = backtracking_problem(pattern)
    assert (got is None) if problem is None else (problem in got), got


def test_the_rule_is_about_real_stalls():
    """Control: the first dangerous pattern really stalls re on 30 characters (killed after
    5 s in a child process), which is why it must never run in the hub."""
    code = "import re; re.fullmatch(r'(a+)+$', 'a' * 30 + '!')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=5)


def _profiles(regex: str) -> list[dict]:
    return [
        {
            "display_name": "Custom",
            "profile_options": {
                "image": {
                    "display_name": "Image",
                    "choices": {"std": {"display_name": "Standard"}},
                    "unlisted_choice": {"enabled": True, "validation_regex": regex},
                }
            },
        }
    ]


def test_afhub_check_names_the_unsafe_pattern():
    found = values.validate({"profiles": _profiles(r"(a+)+$")})
    assert [p.path for p in found] == [
        "profiles[0].profile_options.image.unlisted_choice.validation_regex"
    ]
    assert NESTED in found[0].message and "rewrite" in found[0].message


def test_start_refuses_instead_of_running_an_unsafe_pattern():
    """A pattern that reached the hub without afhub check (e.g. c.KubeSpawner.profile_list)."""
    cat = Catalogue([], _profiles(r"(a+)+$"))
    with pytest.raises(OptionsError, match="cannot be checked safely"):
        cat.resolve([], {"profile": "custom", "image--unlisted-choice": "a" * 40 + "!"})


def test_input_is_capped_before_matching():
    cat = Catalogue([], _profiles(r"^.+:.+$"))
    with pytest.raises(OptionsError, match=f"longer than {MAX_TEXT} characters"):
        cat.resolve([], {"profile": "custom", "image--unlisted-choice": "a:" * MAX_TEXT})
    r = cat.resolve([], {"profile": "custom", "image--unlisted-choice": "my/img:1"})
    assert r.options["image--unlisted-choice"] == "my/img:1"
