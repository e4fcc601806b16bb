"""Layers: afhub's modules import one way (docs/developers.md, "Layers").

Every ``import`` and ``from ... import`` of every production module is read with ``ast`` (also
the ones inside functions: a late import is still a dependency) and checked against two rules:

- **no cycle between modules**: the import graph of afhub's modules has no strongly connected
  component bigger than one module;
- **no wrong-way import**: each module belongs to one layer (:data:`LAYERS`, lowest first) and
  imports only modules of its own layer or of a lower one; the user side (``server_ext``) is
  not below the hub side, it imports only the shared modules.

An exception is never implied: each one is in :data:`EXCEPTIONS` with its reason, and an
exception that no longer happens fails too (remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub_config", "spawner", "authenticator", "server_ext")

# lowest first; a module's layer is the first whose patterns match its name (``pkg.module`` or
# ``pkg.sub.module``, without ``afhub.``); ``pkg.*`` matches every module of a package
LAYERS = (
    # names both sides use: standard library (and dask-gateway-free) only
    ("shared", ("server_ext.contract", "server_ext.dask_options", "server_ext.token")),
    # the user's server, its Dask workers and the notebook API: imports only the shared layer
    ("user side", ("server_ext.*",)),
    # the values model's foundation: problems, the plan, secrets, the schema file, log format
    (
        "foundation",
        (
            "hub_config.problems",
            "hub_config.plan",
            "hub_config.secrets",
            "hub_config.schema",
            "hub_config.logs",
            "hub_config.addresses",  # how other hosts reach this one (pure; problems only)
        ),
    ),
    # hub-side components: profiles, spawners, the authenticator and token broker
    ("components", ("spawner.*", "authenticator.*")),
    # values sections: values -> Plan, one owner per top-level key (sections.py lists them)
    (
        "sections",
        (
            "hub_config.hub_section",
            "hub_config.kernels_section",
            "hub_config.dask_section",
            "hub_config.data",
            "hub_config.demo",  # the demo provider's settings, read by the auth section
            "spawner.spawn_section",
            "authenticator.auth_section",
        ),
    ),
    # the configuration: registry, validation, apply, render, charts, docs
    ("configuration", ("hub_config.*",)),
    # processes: the afhub command, afhub up, the Dask Gateway process
    (
        "processes",
        (
            "hub_config.__main__",
            "hub_config.cli",
            "hub_config.runner",
            "hub_config.fileset",
            "hub_config.gateway.*",
        ),
    ),
)
# the user side may import nothing hub-side, not even a lower hub layer
USER_SIDE = ("shared", "user side")

# (importer, imported): reason. Each is a known debt, not a rule.
EXCEPTIONS = {
    ("hub_config.demo", "hub_config.values"): (
        "dev_settings fills auth.dev's schema defaults with values.defaults (the composed "
        "schema), like data_settings"
    ),
    ("hub_config.data", "hub_config.values"): (
        "data_settings fills the data section's schema defaults with values.defaults (the "
        "composed schema) instead of relying on values.load having filled them; issue 21 owns "
        "hub_config/data.py"
    ),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def production_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(p.startswith(".") or p in ("node_modules", "tests") for p in path.parts):
                continue
            out[module_name(path)] = path
    return out


MODULES = production_modules()


def _resolve(name: str) -> str | None:
    """The afhub module ``name`` (``afhub.x.y.z`` or ``x.y.z``) is, or lies in; None: not afhub."""
    if name.startswith("afhub."):
        name = name[len("afhub.") :]
    elif name.split(".")[0] not in PACKAGES:
        return None
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path) -> dict[str, int]:
    """``{imported afhub module: first line}`` of ``path``, function-local imports included."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from . import values` imports a module
                add(_resolve(f"{module}.{alias.name}") if module else None, node.lineno)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer_of(name: str) -> int:
    """The index in :data:`LAYERS` of module ``name``: the most specific pattern wins (a name
    over ``pkg.sub.*`` over ``pkg.*``)."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for i, (_, patterns) in enumerate(LAYERS):
        for p in patterns:
            if p == name:
                rank = 10_000
            elif p.endswith(".*") and (name.startswith(p[:-1]) or name == p[:-2]):
                rank = len(p)
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, i)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best[1]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def wrong_way() -> list[tuple[str, str, str]]:
    out = []
    for name, targets in sorted(GRAPH.items()):
        mine = layer_of(name)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            user_side = LAYERS[mine][0] in USER_SIDE
            if user_side and LAYERS[theirs][0] not in USER_SIDE:
                why = "the user side imports nothing hub-side"
            elif LAYERS[mine][0] == "shared" and LAYERS[theirs][0] != "shared":
                why = "a shared module imports only shared modules"
            elif theirs > mine:
                why = f"{LAYERS[mine][0]} may not import {LAYERS[theirs][0]}"
            else:
                continue
            out.append((name, target, f"{MODULES[name].relative_to(ROOT)}:{line}: {why}"))
    return out


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_cycle_between_modules():
    found = cycles(
        {
            a: {b: line for b, line in bs.items() if (a, b) not in EXCEPTIONS}
            for a, bs in GRAPH.items()
        }
    )
    assert found == [], "import cycles (break them; see docs/developers.md, Layers)"


def test_no_wrong_way_import():
    found = [where for a, b, where in wrong_way() if (a, b) not in EXCEPTIONS]
    assert found == []


def test_every_exception_still_happens_and_says_why():
    for (a, b), reason in EXCEPTIONS.items():
        assert b in GRAPH.get(a, {}), f"{a} no longer imports {b}: remove the exception"
        assert len(reason) > 20


@pytest.mark.parametrize(
    "name, layer",
    [
        ("server_ext.contract", "shared"),
        ("server_ext.dask", "user side"),
        ("hub_config.problems", "foundation"),
        ("spawner.profiles", "components"),
        ("spawner.batch.lifecycle", "components"),
        ("spawner.batch", "components"),
        ("spawner.spawn_section", "sections"),
        ("hub_config.apply", "configuration"),
        ("hub_config.gateway.process", "processes"),
    ],
)
def test_layer_table(name, layer):
    assert LAYERS[layer_of(name)][0] == layer


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    src = tmp_path / "hub_config" / "x.py"
    src.parent.mkdir()
    src.write_text(
        "from . import values\n"
        "def f():\n"
        "    from afhub.spawner.profiles import Catalogue\n"
        "    import afhub.server_ext.contract\n"
    )
    got = imports_of("hub_config.x", src)
    assert set(got) == {"hub_config.values", "spawner.profiles", "server_ext.contract"}


def test_a_cycle_is_found():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


# ------------------------------------------------------------------ the map in docs/developers.md

GUIDE = ROOT / "docs" / "developers.md"


def mapped_files(text: str) -> set[str]:
    """Files named in the first column of the component map: ``dir/a.py``, and bare ``b.py``
    after it in the same cell, which is in the same directory."""
    section = text.split("## Component map", 1)[1].split("\n## ", 1)[0]
    out = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for item in line.split("|")[1].split("`")[1::2]:
            if "/" in item:
                folder = item.rpartition("/")[0]
                out.add(item)
            elif folder:
                out.add(f"{folder}/{item}")
    return out


def test_the_component_map_names_every_production_module():
    listed = mapped_files(GUIDE.read_text())
    missing = sorted(
        str(path.relative_to(ROOT)) for path in MODULES.values()
        if str(path.relative_to(ROOT)) not in listed
    )  # fmt: skip
    assert missing == [], "add these to the component map in docs/developers.md"
    gone = sorted(f for f in listed if f.endswith(".py") and not (ROOT / f).exists())
    gone = [f for f in gone if not f.startswith("labextension/")]
    assert gone == [], "the component map names modules that do not exist"


def test_mapped_files_reads_bare_names_in_the_same_folder():
    row = "| `spawner/local.py`, `accounts.py` | x |\n| `hub_config/gateway/` | y |\n"
    assert mapped_files("## Component map\n" + row) == {
        "spawner/local.py",
        "spawner/accounts.py",
        "hub_config/gateway/",
    }
