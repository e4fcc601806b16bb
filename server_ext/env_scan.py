"""File-system scan for environments, memoised by directory and file mtimes.

What lives here: `EnvScanner`, which turns configured sources (roots, conda envs dirs,
`environments.txt`, `.condarc`, image prefixes) into `envs.EnvFacts`, and re-reads a directory or
environment only when one of the paths it depends on changed (mtime, size, inode) since the last
scan. Broken things (dangling links, unreadable directories, bad kernel.json) become logged
`skipped` reasons or per-environment `problems`, never exceptions.

Trust (`untrusted`): another account must not be able to put an environment, or a name for one,
where the scan looks. Each scanned directory (a root, a conda envs dir, an environment prefix,
a project directory whose name names an environment) must, after symlinks, be owned by root or
the server's own account and be writable by nobody else: group or other write only with the
sticky bit (or group write when the group is the account's private group). A symlink inside a
scanned directory is followed only when root or the account owns it. Anything else is skipped
with its reason.

What must not live here: subprocesses (the listing path never starts one), naming or kernelspec
building (`envs.py`), Jupyter APIs (`kernel_discovery.py`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
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
    source: str  # root | home | conda | image (ranks name collisions, see envs.SOURCE_RANK)
    name: str | None = None  # fixed env name for `prefix` sources (e.g. "base")


def _stat_key(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    # owner and mode too: a chmod or chown changes whether the directory is trusted
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_uid, st.st_gid, st.st_mode)


def private_group(uid: int) -> int | None:
    """The gid of ``uid``'s user private group (its primary group, named as the account, listing
    no other member), else None."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(uid)
        gr = grp.getgrgid(pw.pw_gid)
    except KeyError:
        return None
    if gr.gr_name != pw.pw_name or set(gr.gr_mem) - {pw.pw_name}:
        return None
    return pw.pw_gid


def untrusted(st: os.stat_result, *, uid: int, private_gid: int | None = None) -> str | None:
    """Why a directory with status ``st`` may not give environments to account ``uid`` (None:
    it may): owned by another account, or writable by others without the sticky bit."""
    if st.st_uid not in (0, uid):
        return f"owned by another account (uid {st.st_uid}); only root's and your own are scanned"
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX:
        return None  # others may add entries (then theirs: refused) but not move yours
    if mode & stat.S_IWOTH:
        return f"writable by everyone (mode {oct(mode)}) without the sticky bit"
    if mode & stat.S_IWGRP and st.st_gid != private_gid:
        return f"writable by group {st.st_gid} (mode {oct(mode)}) without the sticky bit"
    return None


class EnvScanner:
    """Memoised scan. `scan(sources)` -> (facts, skipped); `changed` tells whether any memo
    entry was recomputed during the last scan (so callers can reuse what they built).

    A repeated scan first stats every path the previous result depends on, in one flat pass;
    when nothing changed it returns that result as it is (no per-environment work at all).
    Otherwise each source and each environment is re-validated against its own memo entry."""

    def __init__(self, log: logging.Logger | None = None, exclude: Iterable[str] = ()):
        self.log = log or logging.getLogger(__name__)
        self.exclude = {os.path.realpath(p) for p in exclude}
        self.uid = os.geteuid()  # whose environments these are (see `untrusted`)
        self.private_gid = private_group(self.uid)
        self._memo: dict[tuple, tuple[list[str], list, object]] = {}
        self._last: tuple | None = None  # (expanded sources, paths, stat keys, result)
        self.changed = True
        self.stats = {"hits": 0, "misses": 0, "unchanged": 0}

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
        expanded = [(os.path.expanduser(s.path), s.mode, s.source, s.name) for s in sources]
        last = self._last
        if last is not None and last[0] == expanded and list(map(_stat_key, last[1])) == last[2]:
            self.changed = False
            self.stats["unchanged"] += 1
            return last[3]
        result = self._scan(sources)
        paths: list[str] = []
        keys: list = []
        for p, k, _ in self._memo.values():
            paths.extend(p)
            keys.extend(k)
        self._last = (expanded, paths, keys, result)
        return result

    def _scan(self, sources: list[Source]) -> tuple[list[EnvFacts], list[tuple[str, str]]]:
        self.changed = False
        found: dict[str, EnvFacts] = {}
        skipped: list[tuple[str, str]] = []
        seen_keys = set()
        for src in sources:
            path = os.path.expanduser(src.path)
            key = ("expand", path, src.mode, src.source)
            seen_keys.add(key)
            candidates, skips = self._memo_get(
                key, lambda p=path: [p], lambda p=path, s=src: self._expand(p, s)
            )
            skipped.extend(skips)
            for prefix, kind, name, location, real in candidates:
                fkey = ("env", prefix, real, kind, name, src.source)
                seen_keys.add(fkey)
                facts, reason = self._memo_get(
                    fkey,
                    lambda p=prefix, k=kind: _env_deps(p, k),
                    lambda p=prefix, k=kind, n=name, s=src, loc=location, r=real: self._facts(
                        p, k, n, s.source, loc, r
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

    def _distrust(self, path: str) -> str | None:
        """:func:`untrusted` for the directory at ``path`` (after symlinks); a missing one is
        not refused (nothing is found in it)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return untrusted(st, uid=self.uid, private_gid=self.private_gid)

    def _foreign_link(self, path: str) -> str | None:
        """Why the symlink at ``path`` is not followed (None: it is root's or ours)."""
        try:
            owner = os.lstat(path).st_uid
        except OSError:
            return None
        if owner in (0, self.uid):
            return None
        return f"a symlink owned by another account (uid {owner}); not followed"

    def _expand(self, path: str, src: Source):
        """Candidate env prefixes of one source: ([(prefix, kind, name, location, realpath or
        None)], skipped). The realpath is filled in when it follows from the parent's without
        a symlink in between (saves resolving every prefix again)."""
        skips: list[tuple[str, str]] = []
        out: list[tuple[str, str, str, str, str | None]] = []
        extra: list[str] = []
        if src.mode == "prefix":
            kind, _ = _env_kind(path)
            if kind:
                name = src.name or os.path.basename(path)
                out.append((path, kind, name, os.path.dirname(path), None))
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
                    kind, _ = _env_kind(line)
                    if kind is None:
                        skips.append(self._warn(line, f"listed in {path} but not an environment"))
                        continue
                    extra.append(line)
                    out.append((line, kind, os.path.basename(line), os.path.dirname(line), None))
                return (out, skips), extra
            for envs_dir in _condarc_envs_dirs(text):
                envs_dir = os.path.expanduser(envs_dir)
                extra.append(envs_dir)
                why = self._distrust(envs_dir)
                if why:
                    skips.append(self._warn(envs_dir, why))
                    continue
                for cand, link in self._children(envs_dir, skips):
                    why = link and self._foreign_link(cand)
                    if why:
                        skips.append(self._warn(cand, why))
                        continue
                    kind, problem = _env_kind(cand)
                    if kind:
                        out.append((cand, kind, os.path.basename(cand), envs_dir, None))
                    elif problem:
                        skips.append(self._warn(cand, problem))
            return (out, skips), extra
        # children: env dirs, pixi projects (.pixi/envs/*), projects with a .venv
        why = self._distrust(path)
        if why:
            skips.append(self._warn(path, why))
            return (out, skips), extra
        real_root = os.path.realpath(path)
        projects: list[tuple[str, str | None]] = [(path, real_root)]
        for child, link in self._children(path, skips):
            name = os.path.basename(child)
            real = None if link else pjoin(real_root, name)
            why = link and self._foreign_link(child)
            if why:
                skips.append(self._warn(child, why))
                continue
            kind, problem = _env_kind(child)
            if kind:  # its own memo entry watches it from here on
                out.append((child, kind, name, path, real))
                continue
            extra.append(child)  # maybe a project, or an env being created: watch it
            if problem:
                skips.append(self._warn(child, problem))
                continue
            if os.path.lexists(pjoin(child, "bin", "python")):
                skips.append(
                    self._warn(
                        child,
                        "has bin/python but neither pyvenv.cfg nor conda-meta/, so it is not "
                        "a venv or conda environment (recreate it with `python3 -m venv`)",
                    )
                )
                continue
            why = self._distrust(child)  # its name names the environments in it
            if why:
                skips.append(self._warn(child, why))
                continue
            projects.append((child, real))
        for proj, _real in projects:
            pixi = pjoin(proj, ".pixi", "envs")
            extra.append(pixi)
            for cand, _link in self._children(pixi, skips):
                env = os.path.basename(cand)
                kind, problem = _env_kind(cand)
                if kind is None:
                    why = problem or f"no conda-meta/ (run `pixi install` in {proj})"
                    skips.append(self._warn(cand, f"not a pixi environment: {why}"))
                    continue
                name = os.path.basename(proj) + ("" if env == "default" else f"-{env}")
                out.append((cand, "pixi", name, proj, None))
            if proj == path and src.source != "home":
                continue  # a root's own .venv is not one of its environments
            venv = pjoin(proj, ".venv")
            kind, problem = _env_kind(venv)
            if kind == "venv":
                name = os.path.basename(proj) if proj != path else "venv"
                out.append((venv, "venv", name, proj, None))
            elif os.path.isdir(venv):
                why = problem or "no pyvenv.cfg (recreate it with `python3 -m venv .venv`)"
                skips.append(self._warn(venv, f"not a virtual environment: {why}"))
        return (out, skips), extra

    def _children(self, path: str, skips: list) -> list[tuple[str, bool]]:
        """(path, is_symlink) of the non-hidden subdirectories of `path`."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
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
                    out.append((entry.path, entry.is_symlink()))
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    skips.append(self._warn(entry.path, "dangling symlink"))
            except OSError as e:
                skips.append(self._warn(entry.path, f"cannot stat: {e.strerror}"))
        return out

    # -- one environment -----------------------------------------------------------------
    def _facts(
        self, prefix: str, kind: str, name: str, source: str, location: str, realpath: str | None
    ):
        """((EnvFacts | None, skip reason | None), extra dependency paths)."""
        if realpath is None:
            try:
                realpath = os.path.realpath(prefix, strict=True)
            except OSError as e:
                return (None, self._warn(prefix, f"cannot resolve: {e.strerror}")[1]), []
        why = self._distrust(prefix)
        if why:
            return (None, self._warn(prefix, why)[1]), []
        facts = EnvFacts(
            prefix=prefix, realpath=realpath, kind=kind, name=name, source=source, location=location
        )
        extra: list[str] = []
        python = prefix + "/bin/python"
        try:
            os.stat(python)
        except PermissionError:
            return (None, self._warn(prefix, "environment directory not readable")[1]), []
        except OSError:
            if os.path.islink(python):
                facts.problems.append("bin/python is a dangling symlink")
        else:
            facts.python = python
        bins = set()
        relative = False
        kdir = prefix + "/share/jupyter/kernels"
        for spec_dir in _listdir(kdir):
            spec_path = f"{kdir}/{spec_dir}"
            path = spec_path + "/kernel.json"
            extra.append(path)
            spec, problem = _read_kernel_json(path)
            if problem:
                facts.problems.append(f"share/jupyter/kernels/{spec_dir}/kernel.json: {problem}")
                self._warn(path, problem)
                continue
            facts.shipped.append(ShippedSpec(spec_dir, spec_path, spec))
            argv0 = spec["argv"][0]
            if "/" not in argv0:
                relative = True
                if os.path.exists(f"{prefix}/bin/{argv0}"):
                    bins.add(argv0)
        facts.bin_names = frozenset(bins)
        if kind != "venv":  # every conda install or removal changes conda-meta/
            extra.append(prefix + "/conda-meta")
        elif relative or not facts.shipped:  # bin/ changes when the venv is recreated
            extra.append(prefix + "/bin")
        if not facts.shipped:  # only then does ipykernel decide whether it is runnable
            facts.has_ipykernel = False
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
        if kind != "venv":
            act = prefix + "/etc/conda/activate.d"
            facts.activate_scripts = any(n.endswith(".sh") for n in _listdir(act))
        return (facts, None), extra


def _env_deps(prefix: str, kind: str) -> list[str]:
    """Paths whose stat tells that an environment's facts may have changed: its kernels
    directory. `_facts` adds what it read (kernel.json files; conda-meta/, which every conda
    install or removal changes; a venv's bin/ when a spec names a program relative to it;
    site-packages and .pth files when ipykernel decides), and the prefix itself (its owner and
    mode decide whether it is trusted). Deliberately few: a warm listing stats only these."""
    return [prefix, prefix + "/share/jupyter/kernels"]


def _env_kind(path: str) -> tuple[str | None, str | None]:
    """("conda" | "venv" | None, why the directory cannot be looked into, if it cannot)."""
    for marker, kind, want_dir in (("conda-meta", "conda", True), ("pyvenv.cfg", "venv", False)):
        try:
            st = os.stat(pjoin(path, marker))
        except PermissionError:
            return None, "not readable (permission denied)"
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) == want_dir:
            return kind, None
    return None, None


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
    for key in ("language", "kernel_protocol_version"):
        if not isinstance(spec.get(key, ""), str):
            return None, f"`{key}` must be a string"
    if not isinstance(spec.get("metadata", {}), dict):
        return None, "`metadata` must be an object"
    mode = spec.get("interrupt_mode", "signal")
    if not (isinstance(mode, str) and mode.lower() in ("signal", "message")):
        return None, "`interrupt_mode` must be 'signal' or 'message'"
    spec["interrupt_mode"] = mode.lower()
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
