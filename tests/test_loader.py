"""The values-file YAML loader (hub_config/loader.py): what it reads like PyYAML's safe loader,
and what it refuses that PyYAML accepts. The broken-file corpus is in test_values.py."""

from __future__ import annotations

import pytest
import yaml
from afhub.hub_config import cli, loader
from afhub.hub_config.loader import MAX_BYTES, MAX_DEPTH, MAX_NODES, LoadError, load_yaml
from afhub.hub_config.values import Problem

SAME_AS_PYYAML = [
    "hub: {port: 8000, ip: 127.0.0.1}\n",
    "a: [1, 2.5, true, null, ~, 'x', \"y\", 0x1F, 1e3, .inf]\n",
    "when: 2026-01-02\n",
    "text: |\n  line one\n  line\ttwo\n",
    "base: &b {cpu: 2, memory: 4G}\nprofile:\n  <<: *b\n  cpu: 4\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
    "list: &l [1, 2]\nagain: *l\n",
    "windows: line\r\nendings: ok\r\n",
    "'on': quoted\n\"1\": also\n",
    "",
    "# only a comment\n",
]


@pytest.mark.parametrize("text", SAME_AS_PYYAML)
def test_reads_like_pyyaml_safe_load(text):
    assert load_yaml(text) == yaml.safe_load(text)


def test_aliases_are_copies():
    data = load_yaml("a: &a {x: [1]}\nb: *a\n")
    data["b"]["x"].append(2)
    assert data["a"] == {"x": [1]}


def problems(text: str) -> list[str]:
    with pytest.raises(LoadError) as info:
        load_yaml(text, "v.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "hub:\n  port: 1\n  port: 2\n",
            "hub.port: duplicate key: first at line 2, again at line 3",
        ),
        ("a: {b: 1, b: 2}\n", "a.b: duplicate key: first at line 1, again at line 1"),
        (
            "hub:\n  yes: 1\n",
            "hub.yes: keys must be text, but YAML reads 'yes' (line 2) as the boolean true",
        ),
        ("3.5: x\n", "3.5: keys must be text, but YAML reads '3.5' (line 1) as the number 3.5"),
        ('a: "x\\0y"\n', "a: the value contains the control character U+0000 (NUL)"),
        ('"k\\x07": 1\n', "k\x07: the key contains the control character U+0007 (BEL)"),
        ('a: "\\r"\n', "a: the value contains the control character U+000D (CARRIAGE RETURN)"),
        (
            "a: x\x1by\n",
            "a: the value contains the control character U+001B (ESC) at line 1, column 5",
        ),
        ("a: x # \x00\n", "v.yaml: control character U+0000 (NUL) at line 1, column 8"),
        (
            "a: !!python/name:os.system x\n",
            "a: unsupported YAML tag !!python/name:os.system (line 1)",
        ),
        ("a: !custom x\n", "a: unsupported YAML tag !custom (line 1)"),
        ("a: !!omap [x: 1]\n", "a: unsupported YAML tag !!omap (line 1)"),
        ("a: &a {b: *a}\n", "a.b: alias *a (line 1) refers to a value containing it"),
        ("a: [1\n", "a[1]: YAML syntax error at line 2, column 1"),
        ("a: 1\n---\nb: 2\n", "v.yaml: a second YAML document starts at line 2"),
    ],
)
def test_refuses(text, expected):
    got = problems(text)
    assert any(line.startswith(expected) for line in got), got


def test_every_problem_in_one_pass():
    got = problems('a: 1\na: 2\nb:\n  on: x\n  c: "\\0"\n')
    assert [g.split(":")[0] for g in got] == ["a", "b.on", "b.c"]


def test_partial_data_is_what_the_operator_meant():
    """Refused files still yield the rest of the document, for the other checks."""
    with pytest.raises(LoadError) as info:
        load_yaml("a: 1\na: 2\nchoices:\n  1: one\n  2: two\n")
    assert info.value.data == {"a": 1, "choices": {"1": "one", "2": "two"}}


def test_nesting_limit_counts_aliases():
    inner = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert load_yaml(f"a: {inner}\n")  # just under the limit
    (got,) = problems(f"a: &x {inner}\nb: [[*x]]\n")
    assert got.startswith("b[0][0]: nested more than 50 levels deep")


def test_alias_expansion_limit():
    ten = ", ".join(["*a"] * 10)
    ok = f"a: &a [{', '.join(['x'] * 100)}]\nb: &b [{ten}]\nc: [{ten.replace('a', 'b')}]\n"
    assert len(load_yaml(ok)["c"]) == 10  # 10,000 values: fine
    bomb = ok.replace("c: [", "c: &c [") + f"d: [{ten.replace('a', 'c')}]\n"
    (got,) = problems(bomb)
    assert f"the document expands to more than {MAX_NODES} values" in got


def test_size_limit():
    (got,) = problems("a: " + "x" * MAX_BYTES + "\n")
    assert got.startswith("v.yaml: ") and "at most 1048576 (1 MiB)" in got


def test_bidi_controls_are_refused_but_other_unicode_is_fine():
    assert load_yaml("name: Ünïcödé — 中文 ✓\n") == {"name": "Ünïcödé — 中文 ✓"}
    (got,) = problems('name: "a\\u2067b"\n')
    assert got.startswith("name: the value contains the control character U+2067")


def test_render_of_an_alias_heavy_valid_file_is_bounded(tmp_path, capsys):
    """Free-form keys (kubespawner_override) get the same limits: a file just under them
    renders, and finishes (it used to hang)."""
    f = tmp_path / "v.yaml"
    f.write_text(
        "images:\n  - {name: base, image: r.example.org/base:1, archs: [x86_64]}\n"
        "profiles:\n  - display_name: CPU\n    image: base\n    kubespawner_override:\n"
        "      extra_annotations:\n"
        "        a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "        c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    )
    assert cli.main(["render", str(f), "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("'x'") == 10 + 100 + 1000


def test_problem_paths_use_the_values_format():
    with pytest.raises(LoadError) as info:
        load_yaml("p:\n- x: 1\n  x: 2\n")
    assert info.value.problems == [
        Problem(
            "p[0].x",
            "duplicate key: first at line 2, again at line 3 "
            "(remove one; YAML would silently keep only the last)",
        )
    ]
    assert loader.bad_char("\t") is False and loader.bad_char("\n") is False


def test_problems_under_a_refused_key_keep_its_name():
    got = problems('hub:\n  ip: 1\nhub:\n  ip: "a\\0"\na:\n  yes: "\\0"\n')
    assert [g.split(":")[0] for g in got] == ["hub", "hub.ip", "a.yes", "a.yes"]
