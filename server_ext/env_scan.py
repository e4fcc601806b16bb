"""File-system scan for environments, memoised by directory and file mtimes.

What lives here: `EnvScanner`, which turns configured sources (roots, conda envs dirs,
`environments.txt`, `.condarc`, image prefixes) into `envs.EnvFacts`, and re-reads a directory or
environment only when one of the paths it depends on changed (mtime, size, inode) since the last
scan. Broken things (dangling links, unreadable directories, bad kernel.json) become logged
`skipped` reasons or per-environment `problems`, never exceptions.

What must not live here: subprocesses (the listing path never starts one), naming or kernelspec
building (`envs.py`), Jupyter APIs (`kernel_discovery.py`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .envs import EnvFacts, ShippedSpec

pjoin = os.path.join


@dataclass(frozen=True)
class Source:
    """One place to look. mode: `children` (subdirs are envs or projects), `prefix` (an env),
    `list` (a text file of prefixes, like ~/.conda/environments.txt), `condarc` (YAML with
    `envs_dirs`)."""

    path: str
    mode: str
    source: str  # root | conda | image (ranks name collisions, see envs.SOURCE_RANK)
    name: str | None = None  # fixed env name for `prefix` sources (e.g. "base")


def _stat_key(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class EnvScanner:
    """Memoised scan. `scan(sources)` -> (facts, skipped); `changed` tells whether any memo
    entry was recomputed during the last scan (so callers can reuse what they built)."""

    def __init__(self, log: logging.Logger | None = None, exclude: Iterable[str] = ()):
        self.log = log or logging.getLogger(__name__)
        self.exclude = {os.path.realpath(p) for p in exclude}
        self._memo: dict[tuple, tuple[list[str], list, object]] = {}
        self.changed = True
        self.stats = {"hits": 0, "misses": 0}

    # -- memo ---------------------------------------------------------------------------
    def _memo_get(
        self,
        key: tuple,
        deps: Callable[[], list[str]],
        compute: Callable[[], tuple[object, list[str]]],
    ):
        """Return compute()'s value unless every dependency path stats the same as last time.
        compute returns (value, extra_deps) so a result can depend on files it discovered."""
        hit = self._memo.get(key)
        if hit is not None:
            paths, keys, value = hit
            if keys == [_stat_key(p) for p in paths]:
                self.stats["hits"] += 1
                return value
        self.stats["misses"] += 1
        self.changed = True
        value, extra = compute()
        paths = list(dict.fromkeys([*deps(), *extra]))
        self._memo[key] = (paths, [_stat_key(p) for p in paths], value)
        return value

    # -- sources ------------------------------------------------------------------------
    def scan(self, sources: list[Source]) -> tuple[list[EnvFacts], list[tuple[str, str]]]:
        self.changed = False
        found: dict[str, EnvFacts] = {}
        skipped: list[tuple[str, str]] = []
        seen_keys = set()
        for src in sources:
            path = os.path.expanduser(src.path)
            key = ("expand", path, src.mode)
            seen_keys.add(key)
            candidates, skips = self._memo_get(
                key, lambda p=path: [p], lambda p=path, s=src: self._expand(p, s)
            )
            skipped.extend(skips)
            for prefix, kind, name, location in candidates:
                fkey = ("env", prefix, kind, name)
                seen_keys.add(fkey)
                facts, reason = self._memo_get(
                    fkey,
                    lambda p=prefix, k=kind: _env_deps(p, k),
                    lambda p=prefix, k=kind, n=name, s=src, loc=location: self._facts(
                        p, k, n, s.source, loc
                    ),
                )
                if facts is None:
                    if reason:
                        skipped.append((prefix, reason))
                    continue
                if facts.realpath in self.exclude or facts.realpath in found:
                    continue
                found[facts.realpath] = facts
        for key in [k for k in self._memo if k not in seen_keys]:
            del self._memo[key]  # forget removed roots/envs
            self.changed = True
        return list(found.values()), skipped

    def _warn(self, path: str, reason: str) -> tuple[str, str]:
        self.log.warning("afhub kernels: skipping %s: %s", path, reason)
        return (path, reason)

    def _expand(self, path: str, src: Source):
        """Candidate env prefixes of one source: ([(prefix, kind, name, location)], skipped)."""
        skips: list[tuple[str, str]] = []
        out: list[tuple[str, str, str, str]] = []
        extra: list[str] = []
        if src.mode == "prefix":
            kind = _env_kind(path)
            if kind:
                out.append((path, kind, src.name or os.path.basename(path), os.path.dirname(path)))
            return (out, skips), extra
        if src.mode in ("list", "condarc"):
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                return (out, skips), extra
            except OSError as e:
                skips.append(self._warn(path, f"unreadable: {e.strerror}"))
                return (out, skips), extra
            if src.mode == "list":
                for line in text.splitlines():
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    kind = _env_kind(line)
                    if kind is None:
                        skips.append(self._warn(line, f"listed in {path} but not an environment"))
                        continue
                    extra.append(line)
                    out.append((line, kind, os.path.basename(line), os.path.dirname(line)))
                return (out, skips), extra
            for envs_dir in _condarc_envs_dirs(text):
                envs_dir = os.path.expanduser(envs_dir)
                extra.append(envs_dir)
                for cand in self._children(envs_dir, skips):
                    kind = _env_kind(cand)
                    if kind:
                        out.append((cand, kind, os.path.basename(cand), envs_dir))
            return (out, skips), extra
        # children: env dirs, pixi projects (.pixi/envs/*), projects with a .venv
        projects = [path]
        for child in self._children(path, skips):
            kind = _env_kind(child)
            if kind:  # its own memo entry watches it from here on
                out.append((child, kind, os.path.basename(child), path))
            else:  # maybe a project, or an env being created: watch it
                extra.append(child)
                projects.append(child)
        for proj in projects:
            pixi = pjoin(proj, ".pixi", "envs")
            extra.append(pixi)
            for cand in self._children(pixi, skips):
                if _env_kind(cand):
                    env = os.path.basename(cand)
                    name = os.path.basename(proj) + ("" if env == "default" else f"-{env}")
                    out.append((cand, "pixi", name, proj))
            venv = pjoin(proj, ".venv")
            if proj != path and os.path.isfile(pjoin(venv, "pyvenv.cfg")):
                out.append((venv, "venv", os.path.basename(proj), proj))
        return (out, skips), extra

    def _children(self, path: str, skips: list) -> list[str]:
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            skips.append(self._warn(path, "not a directory"))
            return []
        except OSError as e:
            skips.append(self._warn(path, f"unreadable directory: {e.strerror}"))
            return []
        out = []
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    out.append(entry.path)
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    skips.append(self._warn(entry.path, "dangling symlink"))
            except OSError as e:
                skips.append(self._warn(entry.path, f"cannot stat: {e.strerror}"))
        return out

    # -- one environment -----------------------------------------------------------------
    def _facts(self, prefix: str, kind: str, name: str, source: str, location: str):
        """((EnvFacts | None, skip reason | None), extra dependency paths)."""
        try:
            realpath = os.path.realpath(prefix, strict=True)
        except OSError as e:
            return (None, self._warn(prefix, f"cannot resolve: {e.strerror}")[1]), []
        if not os.access(prefix, os.R_OK | os.X_OK):
            return (None, self._warn(prefix, "environment directory not readable")[1]), []
        facts = EnvFacts(
            prefix=prefix, realpath=realpath, kind=kind, name=name, source=source, location=location
        )
        extra: list[str] = []
        python = pjoin(prefix, "bin", "python")
        if os.path.exists(python):
            facts.python = python
        elif os.path.islink(python):
            facts.problems.append("bin/python is a dangling symlink")
        site_dirs = _site_packages(prefix, kind)
        extra.extend(site_dirs)
        for site in site_dirs:
            found, pth_deps = _find_ipykernel(site)
            extra.extend(pth_deps)
            if found:
                facts.has_ipykernel = True
                res = pjoin(found, "resources")
                facts.ipykernel_resources = res if os.path.isdir(res) else None
                break
        kdir = pjoin(prefix, "share", "jupyter", "kernels")
        bins = set()
        for spec_dir in _listdir(kdir):
            path = pjoin(kdir, spec_dir, "kernel.json")
            extra.append(path)
            spec, problem = _read_kernel_json(path)
            if problem:
                facts.problems.append(f"share/jupyter/kernels/{spec_dir}/kernel.json: {problem}")
                self._warn(path, problem)
                continue
            facts.shipped.append(ShippedSpec(spec_dir, pjoin(kdir, spec_dir), spec))
            argv0 = spec["argv"][0]
            if "/" not in argv0 and os.path.exists(pjoin(prefix, "bin", argv0)):
                bins.add(argv0)
        facts.bin_names = frozenset(bins)
        act = pjoin(prefix, "etc", "conda", "activate.d")
        facts.activate_scripts = any(n.endswith(".sh") for n in _listdir(act))
        extra.append(act)
        return (facts, None), extra


def _env_deps(prefix: str, kind: str) -> list[str]:
    """Paths whose stat tells that an environment's facts may have changed. Files found during
    the scan (site-packages, .pth files, kernel.json files, activate.d) are added to these."""
    deps = [prefix, pjoin(prefix, "bin"), pjoin(prefix, "lib")]
    deps.append(pjoin(prefix, "share", "jupyter", "kernels"))
    if kind == "venv":
        deps.append(pjoin(prefix, "pyvenv.cfg"))
    return deps


def _env_kind(path: str) -> str | None:
    if os.path.isdir(pjoin(path, "conda-meta")):
        return "conda"
    if os.path.isfile(pjoin(path, "pyvenv.cfg")):
        return "venv"
    return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _site_packages(prefix: str, kind: str) -> list[str]:
    """site-packages dirs of the env, plus the base's when a venv includes system packages."""
    out = [
        pjoin(prefix, "lib", d, "site-packages")
        for d in _listdir(pjoin(prefix, "lib"))
        if d.startswith("python")
    ]
    if kind == "venv":
        cfg = _read_pyvenv_cfg(pjoin(prefix, "pyvenv.cfg"))
        if cfg.get("include-system-site-packages", "").lower() == "true" and cfg.get("home"):
            base = os.path.dirname(cfg["home"].rstrip("/"))
            version = ".".join(cfg.get("version", cfg.get("version_info", "")).split(".")[:2])
            if version:
                out.append(pjoin(base, "lib", f"python{version}", "site-packages"))
    return [d for d in out if os.path.isdir(d)]


def _read_pyvenv_cfg(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _find_ipykernel(site: str) -> tuple[str | None, list[str]]:
    """Directory of the ipykernel package importable from `site` (directly or through a plain
    path line in a .pth file), and the .pth files read."""
    direct = pjoin(site, "ipykernel")
    if os.path.isfile(pjoin(direct, "__init__.py")):
        return direct, []
    pths = [pjoin(site, n) for n in _listdir(site) if n.endswith(".pth")]
    for pth in pths:
        try:
            with open(pth, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            cand = pjoin(line if os.path.isabs(line) else pjoin(site, line), "ipykernel")
            if os.path.isfile(pjoin(cand, "__init__.py")):
                return cand, pths
    return None, pths


def _read_kernel_json(path: str) -> tuple[dict | None, str | None]:
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        return None, "missing (dangling link or no kernel.json)"
    except PermissionError:
        return None, "not readable"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"invalid JSON ({e})"
    if not isinstance(spec, dict):
        return None, "not a JSON object"
    argv = spec.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        return None, "`argv` must be a non-empty list of strings"
    if not isinstance(spec.get("display_name", ""), str):
        return None, "`display_name` must be a string"
    if not isinstance(spec.get("env", {}), dict):
        return None, "`env` must be an object"
    return spec, None


def _condarc_envs_dirs(text: str) -> list[str]:
    """`envs_dirs` of a .condarc/.mambarc (YAML); [] if unparsable or absent."""
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:
        return []
    dirs = data.get("envs_dirs") if isinstance(data, dict) else None
    return [d for d in dirs if isinstance(d, str)] if isinstance(dirs, list) else []
