"""The AGC ttbar fileset: the 200-event CMS open-data NanoAOD sample, replicated into files.

The second sample notebook (``spawner/samples/agc-ttbar.ipynb``) and ``bench/analysis.py`` need
more events than the shipped file has (``images/analysis/data/`` ``SOURCE_NAME``, see SOURCE.md
there). :func:`write_fileset` copies its events over and over (``event`` numbers made unique
per copy) into files of ``per_file`` events, the AGC's objects only (every ``Jet_*``,
``Electron_*``, ``Muon_*`` branch except indices into collections left out, ``MET``, the event
ids), and writes :data:`MANIFEST` last: a directory with a manifest is complete.

What lives here: the layout (pure: :func:`plan`, :func:`manifest`, :func:`kept_branch`) and the
writer. What must not: where the storage is or who owns it (``cli.py`` ``afhub data fileset``
decides, ``xrootd.py`` lays out the namespace). The writer needs uproot, awkward and numpy, which
the analysis environment has and the hub's may not: ``afhub data fileset`` runs this file *as a
script* with that environment's Python (so nothing of ``afhub.hub_config`` is imported there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time

SOURCE_NAME = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
TREE = "Events"
DIRECTORY = "agc-ttbar"  # under data.sample_path on the origin
MANIFEST = "fileset.json"
DEFAULT_EVENTS = 1_000_000
DEFAULT_PER_FILE = 100_000
COLLECTIONS = ("Jet", "Electron", "Muon")
FLAT = ("run", "luminosityBlock", "event", "genWeight", "MET_pt", "MET_phi", "MET_sumEt")
# an index branch stays only when it points into a collection that is copied
_INDEX = re.compile(r"_([a-zA-Z]+?)Idx\d*$")
EVENT_OFFSET = 10**9  # added to ``event`` once per copy (the source's are below 2.3e8)
WRITE_CHUNK = 20_000  # events per basket written


def kept_branch(name: str) -> bool:
    """Whether the fileset copies branch ``name`` of the source tree."""
    if name in FLAT:
        return True
    collection = name.split("_", 1)[0]
    if collection not in COLLECTIONS or "_" not in name:
        return False
    m = _INDEX.search(name)
    return m is None or m.group(1).capitalize() in COLLECTIONS


def file_name(per_file: int, index: int) -> str:
    """A file's name says everything its content depends on (events per file, position): a
    file once written is never rewritten under its name, so the cache never mixes versions."""
    return f"ttbar-{per_file}-{index:03d}.root"


def plan(events: int, per_file: int, source_events: int) -> list[tuple[str, int]]:
    """``[(file name, events)]``: files of ``per_file`` events (rounded up to whole copies of
    the source), as many as hold ``events`` (rounded up to whole files)."""
    if events <= 0 or per_file <= 0 or source_events <= 0:
        raise ValueError("events, per_file and the source's events must be positive")
    per_file = -(-per_file // source_events) * source_events
    return [(file_name(per_file, i), per_file) for i in range(-(-events // per_file))]


def manifest(*, files: list[tuple[str, int]], source_sha256: str) -> dict:
    return {
        "dataset": "ttbar",
        "tree": TREE,
        "source": SOURCE_NAME,
        "source_sha256": source_sha256,
        "events": sum(n for _, n in files),
        "files": [{"name": name, "events": n} for name, n in files],
    }


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def complete(out_dir: str, wanted: dict) -> bool:
    """Whether ``out_dir`` already holds the fileset ``wanted`` (a :func:`manifest`)."""
    have = read_manifest(out_dir)
    return (
        have is not None
        and {k: have.get(k) for k in wanted} == wanted
        and all(os.path.isfile(os.path.join(out_dir, f["name"])) for f in wanted["files"])
    )


def _source_arrays(source: str):
    import awkward as ak
    import uproot

    tree = uproot.open(source)[TREE]
    names = [n for n in tree.keys() if kept_branch(n)]
    flat = tree.arrays(names, library="ak", how=dict)
    out = {name: flat[name] for name in FLAT}
    for collection in COLLECTIONS:
        prefix = collection + "_"
        # one jagged array of records per collection (its fields share the counts, nJet)
        out[collection] = ak.zip(
            {n[len(prefix) :]: a for n, a in flat.items() if n.startswith(prefix)}
        )
    return out, tree.num_entries


def _copies(base: dict, first_copy: int, n: int) -> dict:
    """``n`` copies of the source's events, numbered from copy ``first_copy``."""
    import awkward as ak
    import numpy as np

    out = {}
    for key, array in base.items():
        out[key] = ak.concatenate([array] * n)
    length = len(base["event"])
    offsets = np.repeat(np.arange(first_copy, first_copy + n, dtype=np.uint64), length)
    out["event"] = ak.values_astype(out["event"], np.uint64) + offsets * np.uint64(EVENT_OFFSET)
    return out


def write_fileset(
    source: str,
    out_dir: str,
    *,
    events: int = DEFAULT_EVENTS,
    per_file: int = DEFAULT_PER_FILE,
    log=print,
) -> dict:
    """Write the fileset into ``out_dir`` (unless it is there already); returns its manifest.

    Each file is written under a temporary name and renamed when complete; the manifest goes
    last, so a reader that finds it finds every file whole.
    """
    import uproot

    base, source_events = _source_arrays(source)
    files = plan(events, per_file, source_events)
    wanted = manifest(files=files, source_sha256=sha256(source))
    if complete(out_dir, wanted):
        log(f"{out_dir}: the fileset is there already ({wanted['events']} events)")
        return wanted
    os.makedirs(out_dir, exist_ok=True)
    stale = os.path.join(out_dir, MANIFEST)
    if os.path.exists(stale):
        os.unlink(stale)
    chunk_copies = max(1, WRITE_CHUNK // source_events)
    started = time.monotonic()
    for index, (name, n_events) in enumerate(files):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):  # complete (renamed into place last) and never rewritten
            continue
        tmp = os.path.join(out_dir, f".{name}.part")
        copies = n_events // source_events
        copy, left = index * copies, copies
        try:
            with uproot.recreate(tmp, compression=uproot.ZLIB(1)) as f:
                # a TTree (``f[name] = arrays`` writes an RNTuple): NanoAOD's names, nJet and
                # Jet_pt, are uproot's defaults for a jagged array of records
                tree = f.mktree(TREE, {key: array.type for key, array in base.items()})
                while left > 0:
                    n = min(left, chunk_copies)
                    tree.extend(_copies(base, copy, n))
                    copy += n
                    left -= n
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        log(f"{path}: {n_events} events ({time.monotonic() - started:.0f} s)")
    tmp = os.path.join(out_dir, f".{MANIFEST}.part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(wanted, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))
    return wanted


def source_file(python: str) -> str | None:
    """The shipped source: ``images/analysis/data`` of a checkout, else the copy ``make
    server-env`` (or an image build) put in scikit-hep-testdata's data directory of the
    environment ``python`` belongs to."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(here, "images", "analysis", "data", SOURCE_NAME)
    if os.path.isfile(candidate):
        return candidate
    import subprocess

    probe = subprocess.run(
        [python, "-c", "import os, skhep_testdata.data as d; print(os.path.dirname(d.__file__))"],
        capture_output=True,
        text=True,
    )
    candidate = os.path.join(probe.stdout.strip(), SOURCE_NAME)
    return candidate if probe.returncode == 0 and os.path.isfile(candidate) else None


def place_on_origin(
    values_path: str | None,
    data_dir: str,
    *,
    events: int = DEFAULT_EVENTS,
    per_file: int = DEFAULT_PER_FILE,
    python: str | None = None,
) -> str:
    """``afhub data fileset``: write the fileset into the embedded origin's namespace, at
    ``{data.sample_path}/agc-ttbar/``; returns that path in the namespace.

    Runs this file with the analysis environment's Python (``python``, default the server
    environment), as the storage's account when root (the files are the origin's, like the
    rest of its namespace). The origin serves new files at once: ``afhub up`` may be running.
    """
    import subprocess

    from afhub.spawner.local import server_environment

    from . import values as values_mod
    from .data import data_settings
    from .runner import default_values_path
    from .xrootd import default_root, service_account

    values = values_mod.load(values_mod.load_file(values_path or default_values_path()))
    data = data_settings(values)
    if not data or not data.get("embedded"):
        raise RuntimeError(
            "data.embedded: this values file runs no embedded storage; on your facility's "
            f"storage, write the fileset with `python {os.path.abspath(__file__)} --source "
            f"{SOURCE_NAME} --out DIR` and copy DIR there (xrdcp -r)"
        )
    export = os.path.join(data.get("embedded_root") or default_root(data_dir), "export")
    if not os.path.isdir(export):
        raise RuntimeError(f"{export} does not exist: run `afhub up` once first (it lays it out)")
    python = python or os.path.join(server_environment(), "bin", "python")
    source = source_file(python)
    if source is None:
        raise RuntimeError(
            f"{SOURCE_NAME} was not found (images/analysis/data of a checkout, or "
            f"scikit-hep-testdata's data directory of {python}; `make server-env` puts it there)"
        )
    rel = data["sample_path"].strip("/") + "/" + DIRECTORY
    # -I: the script's directory (afhub's hub_config, which has a secrets.py) not on sys.path
    cmd = [python, "-I", os.path.abspath(__file__), "--source", source, "--out"]
    cmd += [os.path.join(export, rel), "--events", str(events), "--per-file", str(per_file)]
    account = {}
    if os.geteuid() == 0:
        uid, gid = service_account()
        account = {"user": uid, "group": gid, "extra_groups": []}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.path.dirname(export)}
    subprocess.run(cmd, check=True, env=env, cwd="/", stdin=subprocess.DEVNULL, **account)
    return "/" + rel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help=f"the {SOURCE_NAME} file")
    p.add_argument("--out", required=True, help="directory the files and the manifest go to")
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    p.add_argument("--per-file", type=int, default=DEFAULT_PER_FILE)
    args = p.parse_args(argv)
    write_fileset(
        args.source,
        args.out,
        events=args.events,
        per_file=args.per_file,
        log=lambda m: print(m, flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
