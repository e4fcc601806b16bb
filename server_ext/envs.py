"""Pure model of discovered environments and the kernelspecs built from them.

What lives here: the `EnvFacts` record a scan produces for one environment prefix, and the
keyword-only builders that turn a list of facts into named kernelspecs (stable names, collision
suffixes, nb_conda_kernels-style aliases, display names, launch argv/env) and REST models.

What must not live here: any file-system access, subprocess or clock. The scanner
(`env_scan.py`) gathers facts; the kernel spec manager (`kernel_discovery.py`) caches them.
Everything here is deterministic in its inputs, so the same environments always get the same names
whatever order they were discovered in.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from dataclasses import dataclass, field

#: Where an environment was found; lower rank wins a name collision.
SOURCE_RANK = {"root": 0, "home": 1, "conda": 2, "image": 3}

_INVALID = re.compile(r"[^a-z0-9._-]+")

#: Activation wrapper: `sh -c SCRIPT PREFIX ARGV...` sources the env's conda activate.d scripts,
#: then execs the kernel (same pid, so interrupts and shutdown reach the kernel). No braces, so
#: jupyter_client's `{name}` argv templating leaves it alone.
ACTIVATE_SCRIPT = (
    'for f in "$0"/etc/conda/activate.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; exec "$@"'
)


@dataclass(frozen=True)
class ShippedSpec:
    """A `share/jupyter/kernels/<dirname>/kernel.json` found in an environment."""

    dirname: str
    resource_dir: str
    spec: dict


@dataclass
class EnvFacts:
    """Everything the scanner learned about one environment prefix (no derived values)."""

    prefix: str
    realpath: str
    kind: str  # conda | pixi | venv
    name: str
    source: str  # root | home | conda | image
    location: str = ""  # the directory it was found under, for display and docs
    python: str | None = None  # absolute path of <prefix>/bin/python if present
    has_ipykernel: bool | None = None  # None: not looked for (the env ships its kernelspecs)
    ipykernel_resources: str | None = None
    shipped: list[ShippedSpec] = field(default_factory=list)
    activate_scripts: bool = False
    bin_names: frozenset[str] = frozenset()  # relative argv[0]s of shipped specs found in bin/
    problems: list[str] = field(default_factory=list)


@dataclass
class KernelEntry:
    """One kernelspec offered to Jupyter, built from an environment."""

    name: str
    env_id: str
    spec: dict
    resource_dir: str
    built: bool  # True when afhub built the spec (env has ipykernel, ships no spec)
    aliases: list[str] = field(default_factory=list)


def slugify(text: str) -> str:
    """Lower-case kernel-name-safe slug: `My Env (2)` -> `my-env-2`."""
    slug = _INVALID.sub("-", text.lower()).strip("-.")
    return slug or "env"


def env_id(realpath: str) -> str:
    """Stable id of an environment: a short hash of its resolved prefix."""
    return hashlib.sha1(realpath.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def install_argv(template: list[str], *, python: str, prefix: str) -> list[str]:
    """The configured ipykernel install command for one environment."""
    return [a.replace("{python}", python).replace("{prefix}", prefix) for a in template]


DEFAULT_INSTALL = ["{python}", "-m", "pip", "install", "ipykernel"]


def runnable_reason(
    facts: EnvFacts, kernels: list[KernelEntry], install: list[str] = DEFAULT_INSTALL
) -> str | None:
    """None when the environment has a kernel, otherwise why not (user-facing)."""
    if kernels:
        return None
    if facts.python is None:
        if facts.problems:
            return "; ".join(facts.problems)
        return "no kernelspec in share/jupyter/kernels and no bin/python"
    cmd = shlex.join(install_argv(install, python=facts.python, prefix=facts.prefix))
    reason = f"no ipykernel: run `{cmd}`"
    if facts.problems:
        reason += " (" + "; ".join(facts.problems) + ")"
    return reason


def launch_env(*, kind: str, prefix: str, name: str) -> dict[str, str]:
    """Environment variables that make a kernel run "inside" the environment."""
    env = {"PATH": posixpath.join(prefix, "bin") + ":${PATH}"}
    if kind == "venv":
        env["VIRTUAL_ENV"] = prefix
    else:
        env["CONDA_PREFIX"] = prefix
        env["CONDA_DEFAULT_ENV"] = name
    return env


def launch_argv(
    *, argv: list[str], prefix: str, bin_names: frozenset[str], activate: bool
) -> list[str]:
    """Absolute argv for the environment, optionally wrapped to source activation scripts.

    A relative `argv[0]` that the env's `bin/` holds becomes absolute: jupyter_client otherwise
    replaces `python` with the *server's* interpreter. `{prefix}` means this environment.
    """
    out = [a.replace("{prefix}", prefix) for a in argv]
    if out and "/" not in out[0] and out[0] in bin_names:
        out[0] = posixpath.join(prefix, "bin", out[0])
    if activate:
        out = ["/bin/sh", "-c", ACTIVATE_SCRIPT, prefix, *out]
    return out


def python_kernel_dict(*, python: str, display_name: str) -> dict:
    """The kernel.json dict afhub builds for an env with ipykernel but no shipped spec."""
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "metadata": {"debugger": True},
    }


def _display(base: str, facts: EnvFacts, disambiguate: bool) -> str:
    where = facts.name
    if disambiguate:
        where = f"{facts.name}, {facts.location or posixpath.dirname(facts.prefix)}"
    if not disambiguate and facts.name.lower() in base.lower():
        return base
    return f"{base} [{where}]"


def _nb_conda_aliases(facts: EnvFacts, specname: str, language: str) -> list[str]:
    """Names nb_conda_kernels gives the same kernel, so notebooks made there still open."""
    if facts.kind == "venv":
        return []
    env = "root" if facts.name == "base" else f"env-{facts.name}"
    out = [f"conda-{env}-{specname}"]
    short = {"python": "py", "r": "r"}.get(language.lower())
    if short:
        out.append(f"conda-{env}-{short}")
    return [a.lower() for a in out]


def _specs_for(facts: EnvFacts) -> list[tuple[str, dict, str, bool]]:
    """(specname, kernel dict, resource_dir, built) offered by one environment."""
    out = [(s.dirname, s.spec, s.resource_dir, False) for s in facts.shipped]
    if not out and facts.has_ipykernel and facts.python:
        kd = python_kernel_dict(python=facts.python, display_name="Python 3 (ipykernel)")
        out.append(("python3", kd, facts.ipykernel_resources or "", True))
    return out


def build_kernels(
    envs: list[EnvFacts], *, activate: bool = True
) -> tuple[dict[str, KernelEntry], dict[str, str]]:
    """Name every kernel of every environment; returns (kernels by name, alias -> name).

    Names: `env-<env>-<spec>`. When several environments want one name, the one with the lowest
    (source rank, resolved prefix) keeps it and the others get `env-<env>-<hash6>-<spec>`, where
    hash6 comes from their resolved prefix; the hashed form is always accepted as an alias too.
    """
    ordered = sorted(envs, key=lambda f: (SOURCE_RANK.get(f.source, 9), f.realpath))
    wanted: dict[str, int] = {}
    plans = []
    for facts in ordered:
        env_slug = slugify(facts.name)
        for specname, kd, rdir, built in _specs_for(facts):
            spec_slug = slugify(specname)
            base = f"env-{env_slug}-{spec_slug}"
            wanted[base] = wanted.get(base, 0) + 1
            plans.append((facts, specname, kd, rdir, built, base, env_slug, spec_slug))

    kernels: dict[str, KernelEntry] = {}
    aliases: dict[str, str] = {}
    for facts, specname, kd, rdir, built, base, env_slug, spec_slug in plans:
        eid = env_id(facts.realpath)
        hashed = f"env-{env_slug}-{eid[:6]}-{spec_slug}"
        name = base if base not in kernels else hashed
        if name in kernels:  # two spec dirs of one env slugging alike: keep the first
            continue
        spec = dict(kd)
        spec["argv"] = launch_argv(
            argv=list(kd.get("argv", [])),
            prefix=facts.prefix,
            bin_names=facts.bin_names,
            activate=activate and facts.activate_scripts,
        )
        env = launch_env(kind=facts.kind, prefix=facts.prefix, name=facts.name)
        env.update(kd.get("env") or {})
        spec["env"] = env
        spec["display_name"] = _display(
            str(kd.get("display_name") or specname), facts, wanted[base] > 1
        )
        meta = dict(kd.get("metadata") or {})
        meta["afhub"] = {"env_id": eid, "prefix": facts.prefix, "kind": facts.kind}
        spec["metadata"] = meta
        entry = KernelEntry(name=name, env_id=eid, spec=spec, resource_dir=rdir, built=built)
        kernels[name] = entry
        for alias in [hashed, *_nb_conda_aliases(facts, specname, str(kd.get("language", "")))]:
            if alias != name and alias not in aliases:
                aliases[alias] = name
                entry.aliases.append(alias)
    for alias in [a for a in aliases if a in kernels]:  # a real name always beats an alias
        del aliases[alias]
    for entry in kernels.values():
        entry.aliases = [a for a in entry.aliases if aliases.get(a) == entry.name]
    return kernels, aliases


def env_model(
    facts: EnvFacts,
    kernels: list[KernelEntry],
    install: dict | None = None,
    *,
    install_command: list[str] = DEFAULT_INSTALL,
) -> dict:
    """REST model of one environment (`GET afhub/api/environments`). An environment that could
    be made runnable carries `install_action`: the request that does it and the command it runs
    (for people who prefer a terminal)."""
    reason = runnable_reason(facts, kernels, install_command)
    eid = env_id(facts.realpath)
    action = None
    if reason is not None and facts.python is not None:
        argv = install_argv(install_command, python=facts.python, prefix=facts.prefix)
        action = {
            "label": "Install ipykernel",
            "method": "POST",
            "path": f"afhub/api/environments/{eid}/kernel",
            "command": shlex.join(argv),
        }
    return {
        "id": eid,
        "name": facts.name,
        "prefix": facts.prefix,
        "kind": facts.kind,
        "source": facts.source,
        "location": facts.location,
        "python": facts.python,
        "has_ipykernel": facts.has_ipykernel,
        "runnable": reason is None,
        "reason": reason,
        "can_install_ipykernel": action is not None,
        "install_action": action,
        "problems": list(facts.problems),
        "kernels": [
            {
                "name": k.name,
                "display_name": k.spec.get("display_name", k.name),
                "language": k.spec.get("language", ""),
                "built": k.built,
                "aliases": list(k.aliases),
            }
            for k in kernels
        ],
        "install": install,
    }
